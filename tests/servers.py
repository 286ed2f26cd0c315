"""Helpers for tests that run the scoring service: tiny real models and a real uvicorn process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def default_signal_handling() -> None:
    """``preexec_fn`` of a child the test stops with a signal: the stop signals as a terminal
    would deliver them. A suite started under ``nohup`` or in the background passes SIGHUP (and
    SIGINT) on ignored, and sigclass keeps an ignored signal ignored, as it should."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def free_port() -> int:
    """A port free now. Servers started by the tests bind port 0 instead (no race); this is for
    checking that a port stays free, or for a program that cannot report the port it bound."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def small_fridge(fridge: Path, root: Path, per_class: int = 8) -> Path:
    """The first ``per_class`` photos of each fridgeObjects class, copied under ``root``."""
    for folder in sorted(p for p in fridge.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir())[:per_class]:
            shutil.copy(path, root / folder.name / path.name)
    return root


def train_image_model(fridge: Path, out: Path) -> Path:
    """Headless EfficientNet-Lite0 (ImageNet weights, 64 px) + logistic head on 32 photos."""
    import sigclass as sc

    data = small_fridge(fridge, out / "data")
    sc.train(data, mode="headless", model="efficientnet_lite0", image_size=64, head="logreg",
             backend="torch", out=out / "image-run", progress=False, **{"tracking.enabled": False})
    return out / "image-run"


def train_signal_model(out: Path, track: bool = False) -> Path:
    """A small 1D CNN trained briefly on BasicMotions (6 channels, 100 time points); with
    ``track`` recorded in the MLflow store of ``MLFLOW_TRACKING_URI``."""
    import sigclass as sc

    sc.train("aeon:BasicMotions", mode="scratch", model="fcn", out=out / "signal-run",
             progress=False, **{"train.epochs": 3, "tracking.enabled": track})
    return out / "signal-run"


def listening_port(pid: int) -> int | None:
    """The TCP port that process ``pid`` (or one of its children) listens on, once it does."""
    import psutil

    try:
        parent = psutil.Process(pid)
        for process in (parent, *parent.children(recursive=True)):
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    return connection.laddr.port
    except psutil.Error:  # it exited meanwhile; the caller sees that
        pass
    return None


@contextlib.contextmanager
def running_server(model: Path | str, *flags: str, startup_s: float = 240.0, env=None,
                   python: str | Path | None = None):
    """``sigclass serve MODEL`` on 127.0.0.1 (run by ``python``, default this interpreter);
    yields ``(base_url, process)``.

    The server binds port 0 and the test reads the port the system gave it from the process's
    listening socket: no port is picked, released and bound later, so no other process can take
    it in between.
    """
    command = [str(python or sys.executable), "-m", "sigclass", "serve", str(model), "--port", "0",
               "--log-level", "warning", *flags]
    environment = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    log = tempfile.NamedTemporaryFile("w+", prefix="sigclass-serve-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                               text=True)
    base = None
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}):\n"
                                   f"{Path(log.name).read_text()[-4000:]}")
            if base is None and (port := listening_port(process.pid)) is not None:
                base = f"http://127.0.0.1:{port}"
            try:
                if base is not None and httpx.get(base + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready within {startup_s:.0f} s")
            time.sleep(0.3)
        process.log_path = log.name  # tests read what the server logged
        yield base, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        os.unlink(log.name)


@contextlib.contextmanager
def stopped(*processes: subprocess.Popen, grace_s: float = 20.0):
    """Yield, then stop each of ``processes`` still running, whatever the test did: SIGTERM
    (a sigclass command stops its own children on it; torchrun stops its workers), then SIGKILL
    after ``grace_s`` seconds."""
    try:
        yield processes
    finally:
        running = [process for process in processes if process.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            try:  # reading the pipes: a process blocked on a full one could not stop
                process.communicate(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels, about 100 KB compressed
    (900 million pixels once decoded), written row by row without allocating the image."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
