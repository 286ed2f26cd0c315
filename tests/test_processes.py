"""Stopping a sigclass command stops every process it started, whatever signal stops it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from servers import default_signal_handling, free_port
from sigclass.cli import children

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_WAIT_POLICY": "PASSIVE"}


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _still_running(processes: list[psutil.Process], within_s: float) -> list[str]:
    """The command lines of ``processes`` still running after ``within_s`` seconds."""
    _, alive = psutil.wait_procs(processes, timeout=within_s)
    found = []
    for process in alive:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(process.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return found


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_stopping_sigclass_ui_stops_the_mlflow_server_and_its_workers(tmp_path, stop):
    port = free_port()
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    process = subprocess.Popen([sys.executable, "-m", "sigclass", "ui", "--port", str(port),
                                "--tracking-uri", uri], env=ENV, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=default_signal_handling)
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.status == 200
                break
            except OSError:
                time.sleep(0.5)
        assert process.poll() is None, process.communicate()[0][-3000:]
        started = _descendants(process.pid)
        commands = [" ".join(p.cmdline()) for p in started]
        assert len(started) >= 2, commands  # mlflow server, and uvicorn under it
        assert any("mlflow server" in c for c in commands), commands
        process.send_signal(stop)
        output = process.communicate(timeout=60)[0]
        assert process.returncode == 0, output[-3000:]
        assert _still_running(started, within_s=5) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        _kill(started)


def test_a_child_stops_when_the_command_is_killed_outright(tmp_path):
    """SIGKILL runs no code in the command: the kernel sends its children SIGTERM (Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    code = textwrap.dedent("""
        import sys, time
        from sigclass.cli import children
        child = children.start([sys.executable, "-c", "import time; time.sleep(300)"])
        print(child.pid, flush=True)
        time.sleep(300)
    """)
    command = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE,
                               text=True)
    child = None
    try:
        child = psutil.Process(int(command.stdout.readline()))
        command.kill()
        command.wait(timeout=30)
        assert _still_running([child], within_s=10) == []
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
        if child is not None:
            _kill([child])


def test_stop_all_stops_what_the_children_started_too(tmp_path):
    """A child's own children are in its process group: they stop with it."""
    marker = tmp_path / "pids"
    script = (f"import subprocess, sys, time; "
              f"g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
              f"open({str(marker)!r}, 'w').write(str(g.pid)); time.sleep(300)")
    child = children.start([sys.executable, "-c", script])
    grandchild = None
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        grandchild = psutil.Process(int(marker.read_text()))
        assert os.getpgid(grandchild.pid) == child.pid != os.getpgid(0)
        children.stop_all(grace_s=5)
        assert child.returncode is not None
        assert _still_running([grandchild], within_s=5) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if grandchild is not None:
            _kill([grandchild])


def test_sigterm_stops_a_command_as_ctrl_c_does():
    """Inside :func:`children.guarded`, SIGTERM raises ``Stopped``, a KeyboardInterrupt, and the
    previous handler comes back afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as stopped, children.guarded():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs before this returns
    assert isinstance(stopped.value, children.Stopped)
    assert children.stop_signal(stopped.value) == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_signal_stays_ignored():
    """``nohup sigclass train ...``: SIGHUP was ignored before the command, and stays so."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with children.guarded():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.2)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_forked_worker_still_dies_of_sigterm():
    """A multiprocessing worker forked by a command inherits its handlers; ``Pool.terminate``
    stops workers with SIGTERM and waits for them, so there SIGTERM must still end the process."""
    import multiprocessing

    with children.guarded():
        worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
        worker.start()
        try:
            time.sleep(0.5)
            worker.terminate()
            worker.join(20)
            assert worker.exitcode == -signal.SIGTERM
        finally:
            if worker.is_alive():
                worker.kill()
                worker.join()
