"""Soak test of the scoring service under mixed good and hostile traffic (issue 14).

Usage::

    .venv/bin/python bench/bench_serve_soak.py                      # 10,000 requests
    .venv/bin/python bench/bench_serve_soak.py --model runs/my-run --requests 2000

Protocol: a headless EfficientNet-Lite0 (ImageNet weights, 64 px input, logistic head) is trained
on 8 fridgeObjects photos per class (or ``--model`` is served) and served by a real ``sigclass
serve`` process on 127.0.0.1 with its default limits. ``--requests`` requests are sent at
``--concurrency`` from an asyncio client in this process, drawn at random (seeded) from a mix
of good requests (photos, batches of photos, explanations, a 16-megapixel PNG) and hostile
ones (a 1x4000 PNG of 92 bytes, a PNG decompression bomb, GIF/PPM/EPS files, a JPEG whose
header declares 4800x4000 pixels, a truncated JPEG, an oversized body, a wrong content type,
an upload aborted half-way, a connection that never finishes its request head). Beside it a
prober sends ``GET /health`` every 0.5 s, and the server's resident memory is sampled every
0.2 s.

Writes ``bench/results/serve_soak.json``: answers by kind and status, the 5xx count (the goal:
0), /health answered throughout (failures, slowest answer), RSS at the start, peak and end.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import collections  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from bench_serve import free_port  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serve_soak.json"
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))


def train_model(out: Path) -> Path:
    import sigclass as sc

    data = out / "data"
    for folder in sorted(p for p in FRIDGE.iterdir() if p.is_dir()):
        (data / folder.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir())[:8]:
            shutil.copy(path, data / folder.name / path.name)
    sc.train(data, mode="headless", model="efficientnet_lite0", image_size=64, head="logreg",
             backend="torch", out=out / "run", progress=False, **{"tracking.enabled": False})
    return out / "run"


def start_server(model: Path, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "sigclass", "serve", str(model), "--port", str(port),
               "--log-level", "info"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("the server was not ready in 10 minutes")


# -- the inputs ----------------------------------------------------------------------------------

def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_bomb(side: int = 20_000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def patched_jpeg(photo: bytes) -> bytes:
    data = bytearray(photo)
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    data[sof + 5:sof + 9] = struct.pack(">HH", 4000, 4800)
    return bytes(data)


def inputs() -> dict[str, bytes]:
    photos = [sorted((FRIDGE / c).iterdir())[-1].read_bytes()
              for c in ("can", "carton", "milk_bottle", "water_bottle")]
    gradient = np.linspace(0, 255, 4000, dtype=np.uint8)
    big = Image.fromarray(np.stack([np.tile(gradient, (4000, 1))] * 3, -1))
    return {
        "photo0": photos[0], "photo1": photos[1], "photo2": photos[2], "photo3": photos[3],
        "big": encode(big, "PNG"),
        "wide": encode(Image.new("1", (4000, 1)), "PNG"),
        "bomb": png_bomb(),
        "gif": encode(Image.new("P", (64, 64)), "GIF"),
        "ppm": encode(Image.new("RGB", (64, 64)), "PPM"),
        "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "lying_jpeg": patched_jpeg(photos[0]),
        "truncated": photos[1][: len(photos[1]) // 2],
    }


# (kind, weight): what the mix draws from
MIX = (("photo", 40), ("batch", 8), ("explain", 4), ("big", 2), ("wide", 6), ("bomb", 3),
       ("gif", 4), ("ppm", 4), ("eps", 4), ("lying_jpeg", 5), ("truncated", 5), ("oversized", 3),
       ("wrong_type", 4), ("aborted", 4), ("slow_head", 1))
EXPECTED = {"photo": {200}, "batch": {200}, "explain": {200, 503}, "big": {200}, "wide": {422},
            "bomb": {422}, "gif": {422}, "ppm": {422}, "eps": {422}, "lying_jpeg": {422},
            "truncated": {422}, "oversized": {413}, "wrong_type": {415}, "aborted": {0},
            "slow_head": {408}}


async def raw_request(port: int, head: bytes, wait_answer: bool) -> int:
    """A raw HTTP exchange: send ``head`` (and nothing more), then read the answer or hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        if not wait_answer:
            await asyncio.sleep(0.05)
            return 0
        line = await asyncio.wait_for(reader.readline(), 60)
        return int(line.split()[1]) if line else -1
    finally:
        writer.close()


async def one(client: httpx.AsyncClient, kind: str, data: dict[str, bytes], rng: random.Random,
              port: int) -> int:
    photo = data[f"photo{rng.randrange(4)}"]
    if kind == "photo":
        response = await client.post("/predict", files={"file": ("p.jpg", photo, "image/jpeg")})
    elif kind == "batch":
        files = [("files", (f"p{i}.jpg", data[f"photo{i}"], "image/jpeg")) for i in range(4)]
        response = await client.post("/predict/batch", files=files)
    elif kind == "explain":
        response = await client.post("/predict", params={"explain": "true"},
                                     files={"file": ("p.jpg", photo, "image/jpeg")})
    elif kind == "oversized":  # refused from its Content-Length, before the body is read
        return await raw_request(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                 b"image/png\r\nContent-Length: 30000000\r\n\r\n" + bytes(1000), True)
    elif kind == "wrong_type":
        response = await client.post("/predict", json=[[1.0, 2.0]])
    elif kind == "aborted":
        return await raw_request(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                 b"image/png\r\nContent-Length: 100000\r\n\r\n" + bytes(3000), False)
    elif kind == "slow_head":
        return await raw_request(port, b"POST /predict HTTP/1.1\r\nHost: x\r\n", True)
    else:
        response = await client.post("/predict", files={"file": (f"{kind}.bin", data[kind],
                                                                 "application/octet-stream")})
    return response.status_code


async def run(base: str, process: subprocess.Popen, total: int, concurrency: int, seed: int) -> dict:
    data = inputs()
    port = int(base.rsplit(":", 1)[1])
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    plan = rng.choices(kinds, weights, k=total)
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    unexpected: collections.Counter = collections.Counter()
    memory = psutil.Process(process.pid)
    rss = {"start_mib": memory.memory_info().rss / 2**20}
    rss["peak_mib"] = rss["start_mib"]
    health = {"probes": 0, "failures": 0, "slowest_s": 0.0}
    done = asyncio.Event()
    queue: asyncio.Queue = asyncio.Queue()
    for kind in plan:
        queue.put_nowait(kind)

    async def worker(index: int) -> None:
        local = random.Random(seed * 1000 + index)
        limits = httpx.Limits(max_connections=2)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
            while not queue.empty():
                kind = queue.get_nowait()
                try:
                    status = await one(client, kind, data, local, port)
                except httpx.HTTPError as exc:
                    status = -1
                    unexpected[f"{kind}: {type(exc).__name__}"] += 1
                statuses[kind][status] += 1
                if status not in EXPECTED[kind]:
                    unexpected[f"{kind}: {status}"] += 1

    async def prober() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            while not done.is_set():
                started = time.perf_counter()
                try:
                    ok = (await client.get("/health")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                health["probes"] += 1
                health["failures"] += not ok
                health["slowest_s"] = max(health["slowest_s"], time.perf_counter() - started)
                await asyncio.sleep(0.5)

    async def sampler() -> None:
        while not done.is_set():
            rss["peak_mib"] = max(rss["peak_mib"], memory.memory_info().rss / 2**20)
            await asyncio.sleep(0.2)

    started = time.perf_counter()
    background = [asyncio.create_task(prober()), asyncio.create_task(sampler())]
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    seconds = time.perf_counter() - started
    done.set()
    await asyncio.gather(*background)
    await asyncio.sleep(1.0)
    rss["end_mib"] = memory.memory_info().rss / 2**20
    rss = {k: round(v, 1) for k, v in rss.items()}
    server_errors = sum(n for counter in statuses.values() for s, n in counter.items() if s >= 500
                        and s not in (503,))
    return {"requests": total, "concurrency": concurrency, "seconds": round(seconds, 1),
            "requests_per_s": round(total / seconds, 1),
            "status_5xx_other_than_503": server_errors,
            "status_503": sum(c.get(503, 0) for c in statuses.values()),
            "unexpected": dict(unexpected), "health": {**health, "slowest_s": round(health["slowest_s"], 3)},
            "rss": rss, "by_kind": {k: {str(s): n for s, n in sorted(c.items())}
                                    for k, c in sorted(statuses.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="serve this run/model folder instead of training one")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sigclass-soak-") as folder:
        model = args.model or train_model(Path(folder))
        log_path = Path(folder) / "server.log"
        with open(log_path, "w+") as log:
            process, base = start_server(model, log)
            try:
                result = asyncio.run(run(base, process, args.requests, args.concurrency, args.seed))
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            text = log_path.read_text()
        result["server_log"] = {"tracebacks": text.count("Traceback"),
                                "internal_errors": text.count(" 500 "),
                                "client_disconnects": text.count("client disconnected"),
                                "header_timeouts": text.count("no complete request head")}
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
