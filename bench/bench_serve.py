"""Scoring-service load test on 127.0.0.1: latency and throughput of single-image requests.

Usage::

    .venv/bin/python bench/bench_serve.py                   # about 5 minutes on 2 cores
    .venv/bin/python bench/bench_serve.py --soak 10000      # the 10,000-request soak run as well
    .venv/bin/python bench/bench_serve.py --model runs/my-run --quick

Protocol: a headless EfficientNet-Lite0 (ImageNet weights, 224 px input, logistic head) is
trained on fridgeObjects once (or ``--model`` is served). For each backend (PyTorch, ONNX
Runtime) and micro-batching on (``--max-batch-size 16 --max-wait-ms 2``) or off
(``--max-batch-size 1``), a real ``sigclass serve`` process is started and single-photo
``POST /predict`` requests (multipart JPEG, fridgeObjects photos in turn) are sent at concurrency
1, 8 and 32 from an asyncio client (httpx) in this process, for at most ``--requests`` requests or
``--seconds`` seconds per level after a warm-up. The ONNX Runtime servers are also timed at
concurrency 1 from a blocking ``http.client`` connection with the request bodies built once, a
client that takes less of the shared CPU (``lean_client``). ``explain=true`` runs at concurrency 1 and 8.
The client shares the CPU with the server, as a sidecar would; figures are end to end (HTTP,
decoding, preprocessing, model, head, JSON). The soak run sends ``--soak`` requests at
concurrency 8 and samples the server's resident memory once a second.

Writes ``bench/results/serve.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serve.json"
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))


def train_model(out: Path) -> Path:
    import sigclass as sc

    sc.train(FRIDGE, mode="headless", model="efficientnet_lite0", head="logreg", backend="torch",
             out=out / "lite0", progress=False, **{"tracking.enabled": False})
    return out / "lite0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A ``sigclass serve`` process on 127.0.0.1."""

    def __init__(self, model: Path, backend: str, max_batch_size: int, max_wait_ms: float = 2.0,
                 precision: str = "fp32"):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "sigclass", "serve", str(model), "--port", str(self.port),
                   "--backend", backend, "--precision", precision,
                   "--max-batch-size", str(max_batch_size),
                   "--max-wait-ms", str(max_wait_ms), "--log-level", "warning"]
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while True:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited:\n{self.log.read()[-3000:]}")
            try:
                if httpx.get(self.base + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in 600 s")
            time.sleep(0.5)
        self.metadata = httpx.get(self.base + "/metadata", timeout=10).json()

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def load(base: str, photos: list[bytes], concurrency: int, requests: int, seconds: float,
               explain: bool = False, on_tick=None) -> dict:
    """Send up to ``requests`` requests (or for ``seconds``) from ``concurrency`` workers."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    stop_at = time.perf_counter() + seconds
    params = {"explain": "true"} if explain else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def worker():
            nonlocal sent
            while sent < requests and time.perf_counter() < stop_at:
                index = sent
                sent += 1
                files = {"file": ("photo.jpg", photos[index % len(photos)], "image/jpeg")}
                start = time.perf_counter()
                try:
                    response = await client.post("/predict", files=files, params=params)
                    ok = response.status_code == 200
                    key = str(response.status_code)
                except httpx.HTTPError as exc:
                    ok, key = False, type(exc).__name__
                latencies.append(time.perf_counter() - start)
                if not ok:
                    errors[key] = errors.get(key, 0) + 1

        async def ticker():
            while True:
                await asyncio.sleep(1.0)
                on_tick(len(latencies))

        tick = asyncio.create_task(ticker()) if on_tick else None
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        if tick:
            tick.cancel()
    return {
        "concurrency": concurrency, "requests": len(latencies), "errors": errors,
        "seconds": round(elapsed, 2), "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1e3 * statistics.median(latencies), 2),
        "p99_ms": round(1e3 * percentile(latencies, 99), 2),
    }


def multipart_bodies(photos: list[bytes]) -> list[tuple[str, bytes]]:
    """``(boundary, body)`` of a one-file multipart request per photo, built once for every server."""
    import uuid

    bodies = []
    for photo in photos:
        boundary = uuid.uuid4().hex
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"'
                f"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
        bodies.append((boundary, head + photo + f"\r\n--{boundary}--\r\n".encode()))
    return bodies


def lean_client_level(server: Server, bodies: list[tuple[str, bytes]], requests: int,
                      warmup: int = 50) -> dict:
    """Concurrency 1 from a blocking ``http.client`` connection (keep-alive, the multipart
    ``bodies`` built beforehand): the service's latency with a client that takes little of the
    shared CPU."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    latencies, errors = [], 0
    try:
        for index in range(warmup + requests):
            boundary, body = bodies[index % len(bodies)]
            start = time.perf_counter()
            connection.request("POST", "/predict", body=body,
                               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            response = connection.getresponse()
            response.read()
            errors += response.status != 200
            if index >= warmup:
                latencies.append(time.perf_counter() - start)
    finally:
        connection.close()
    return {"concurrency": 1, "client": "http.client", "requests": len(latencies), "errors": errors,
            "p50_ms": round(1e3 * statistics.median(latencies), 2),
            "p99_ms": round(1e3 * percentile(latencies, 99), 2)}


def run_level(server: Server, photos, concurrency: int, args, explain=False) -> dict:
    asyncio.run(load(server.base, photos, concurrency, 2 * concurrency + 5, 5.0, explain))  # warm-up
    before = httpx.get(server.base + "/metadata", timeout=10).json()["serving"]["batches"]
    result = asyncio.run(load(server.base, photos, concurrency, args.requests, args.seconds, explain))
    after = httpx.get(server.base + "/metadata", timeout=10).json()["serving"]["batches"]
    batches = after["batches"] - before["batches"]
    result["mean_batch_size"] = round((after["rows"] - before["rows"]) / batches, 2) if batches else 0
    return result


def soak(server: Server, photos, total: int) -> dict:
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()

    def tick(done: int) -> None:
        samples.append((round(time.perf_counter() - start, 1), round(server.rss_mib(), 1)))

    tick(0)
    result = asyncio.run(load(server.base, photos, 8, total, 3600.0, on_tick=tick))
    tick(result["requests"])
    rss = [m for _, m in samples]
    tenth = max(1, len(rss) // 10)
    result.update({
        "rss_mib_first_10pct": round(statistics.mean(rss[:tenth]), 1),
        "rss_mib_last_10pct": round(statistics.mean(rss[-tenth:]), 1),
        "rss_mib_max": max(rss), "rss_samples": samples[:: max(1, len(samples) // 60)],
    })
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="serve this run/model folder instead of training one")
    parser.add_argument("--requests", type=int, default=400, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=12.0, help="most seconds per level")
    parser.add_argument("--soak", type=int, default=2000, help="requests of the soak run (0: none)")
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 32 only, no explain")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sigclass-bench-serve-"))
    os.environ.setdefault("SIGCLASS_CACHE_DIR", str(work / "cache"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    model = args.model or train_model(work)
    photos = [p.read_bytes() for p in sorted(FRIDGE.rglob("*.jpg"))[::7]]
    bodies = multipart_bodies(photos)
    levels = (1, 32) if args.quick else (1, 8, 32)
    quantization = quantize(model)
    runs, explain_runs, lean_runs, soak_result, servers = [], [], [], None, {}
    for backend, precision in (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")):
        for batching, size in (("off", 1), ("on", 16)):
            server = Server(model, backend, size, precision=precision)
            servers[f"{backend}/{precision}/{batching}"] = server.metadata["serving"]
            try:
                for concurrency in levels:
                    result = {"backend": backend, "precision": precision, "batching": batching,
                              **run_level(server, photos, concurrency, args)}
                    print(json.dumps(result), flush=True)
                    runs.append(result)
                if backend == "onnx":
                    result = {"backend": backend, "precision": precision, "batching": batching,
                              **lean_client_level(server, bodies, args.requests)}
                    print(json.dumps(result), flush=True)
                    lean_runs.append(result)
                if batching == "on" and precision == "fp32" and not args.quick:
                    for concurrency in (1, 8):
                        result = {"backend": backend, "precision": precision, "batching": batching,
                                  "explain": True,
                                  **run_level(server, photos, concurrency, args, explain=True)}
                        print(json.dumps(result), flush=True)
                        explain_runs.append(result)
                if backend == "onnx" and precision == "fp32" and batching == "on" and args.soak:
                    soak_result = soak(server, photos, args.soak)
                    print(json.dumps({k: v for k, v in soak_result.items() if k != "rss_samples"}))
            finally:
                server.stop()
    write_results(runs, explain_runs, lean_runs, soak_result, servers, quantization, args)


def quantize(model: Path) -> dict:
    """``sigclass export MODEL --quantize int8`` with its defaults (calibrated on the run's own
    training items); its report, which ``--precision int8`` checks before it serves the graph."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "sigclass", "export", str(model), "--quantize", "int8",
                        "-o", str(Path(tmp) / "model.int8.onnx")], check=True, capture_output=True)
    report = json.loads((model / "quantization.json").read_text())
    return {k: report.get(k) for k in ("accuracy", "accuracy_drop_points", "speedup", "accepted")}


def _find(runs, backend, batching, concurrency, precision="fp32") -> dict | None:
    return next((r for r in runs if (r["backend"], r.get("precision", "fp32"), r["batching"],
                                     r["concurrency"]) == (backend, precision, batching, concurrency)),
                None)


def write_results(runs, explain_runs, lean_runs, soak_result, servers, quantization, args) -> None:
    import onnxruntime
    import torch

    goals = {"p50_goal_ms": 10}
    for precision in ("fp32", "int8"):
        c1 = _find(runs, "onnx", "on", 1, precision) or {}
        goals[f"p50_ms_concurrency_1_onnx_{precision}"] = c1.get("p50_ms")
    goals["p50_goal_met"] = any((goals[f"p50_ms_concurrency_1_onnx_{p}"] or 1e9) <= 10
                                for p in ("fp32", "int8"))
    for precision in ("fp32", "int8"):
        lean = next((r for r in lean_runs if (r["precision"], r["batching"]) == (precision, "on")), {})
        goals[f"p50_ms_concurrency_1_onnx_{precision}_lean_client"] = lean.get("p50_ms")
    goals["p50_goal_met_lean_client"] = any(
        (goals[f"p50_ms_concurrency_1_onnx_{p}_lean_client"] or 1e9) <= 10 for p in ("fp32", "int8"))
    for backend, precision in (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")):
        on = _find(runs, backend, "on", 32, precision)
        off = _find(runs, backend, "off", 32, precision)
        if on and off:
            ratio = round(on["throughput_rps"] / off["throughput_rps"], 2)
            name = backend if precision == "fp32" else f"{backend}_{precision}"
            goals[f"batching_speedup_concurrency_32_{name}"] = ratio
    goals["batching_goal"] = 1.5
    goals["batching_goal_met"] = goals.get("batching_speedup_concurrency_32_onnx", 0) >= 1.5
    document = {
        "benchmark": "scoring service load test (single image requests, 127.0.0.1)",
        "model": "headless efficientnet_lite0 (224 px) + logistic regression, fridgeObjects",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__},
        "settings": {"requests_per_level": args.requests, "seconds_per_level": args.seconds,
                     "max_batch_size_on": 16, "max_wait_ms": 2.0},
        "servers": servers, "quantization": quantization, "goals": goals, "runs": runs,
        "explain": explain_runs,
        "lean_client": lean_runs,
        "soak": soak_result,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    print(json.dumps(goals, indent=2))


if __name__ == "__main__":
    main()
