"""Detector speed on the CPU: PyTorch against ONNX Runtime, in the predictor and in the service.

Usage::

    .venv/bin/python bench/bench_detection_speed.py            # about 12 minutes on 2 cores
    .venv/bin/python bench/bench_detection_speed.py --repeats 1 --rounds 1 --requests 8

Protocol: the default detector (Faster R-CNN + FPN on EfficientNet-Lite0) is built with its
ImageNet backbone and a fresh, untrained head, at the default shorter side (512 px) and at
256 px, and saved as a model folder (speed does not depend on training: the network does the
same work; an untrained head keeps up to 100 boxes per image, as many as a trained one at a
low score threshold). The ONNX graph is exported once (``DetectionPredictor.use_backend
("onnx")``, timed). Each engine then detects BCCD photos (640x480) one at a time (batch 1),
the two engines interleaved image by image, after a warm-up, so that both see the same load of
the shared machine; images/s is the median over images and the ratio is taken within the run.
The service is measured the same way: one ``sigclass serve --backend torch`` and one
``--backend onnx`` process (default size), ``POST /predict`` of one photo at concurrency 1,
alternating between the two; p50 and p90 latency end to end. The whole measurement runs
``--repeats`` times (the shared machine's load changes over minutes); each repeat is recorded
with the load average before and after it, and ``summary`` gives the range of each ratio.

Writes ``bench/results/detection_speed.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "detection_speed.json"
BCCD = Path(os.environ.get("SIGCLASS_BCCD", ROOT.parent / "shared" / "datasets" / "BCCD"))
CLASSES = ["Platelets", "RBC", "WBC"]


def untrained_detector(folder: Path, image_size: int) -> Path:
    """The default detector, ImageNet backbone and fresh head, saved at ``folder``."""
    from sigclass.detector import DetectionPredictor
    from sigclass.models.detection import build_detector

    network = build_detector(len(CLASSES), image_size=image_size)
    config = dict(network.data_config)
    DetectionPredictor(network, CLASSES, config, info={"note": "untrained head"}).save(folder)
    return folder


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"median_ms": round(statistics.median(ordered) * 1e3, 1),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e3, 1),
            "images_per_s": round(1 / statistics.median(ordered), 2)}


def engine_speed(folder: Path, photos: list[Path], rounds: int) -> dict:
    """Batch-1 detection, PyTorch and ONNX Runtime interleaved image by image."""
    import sigclass
    from sigclass.data.detection_torch import read_rgb

    engines = {"torch": sigclass.load(folder, device="cpu")}
    start = time.perf_counter()
    engines["onnx"] = sigclass.load(folder, device="cpu").use_backend("onnx")
    export_s = time.perf_counter() - start
    images = [read_rgb(p).float().div(255) for p in photos]
    for engine in engines.values():  # warm-up
        engine.detect(images[:2], batch_size=1)
    seconds = {name: [] for name in engines}
    boxes = {name: 0 for name in engines}
    for r in range(rounds):
        for i, image in enumerate(images):
            order = list(engines) if (r + i) % 2 == 0 else list(engines)[::-1]
            for name in order:
                begin = time.perf_counter()
                found = engines[name].detect([image], batch_size=1)
                seconds[name].append(time.perf_counter() - begin)
                boxes[name] += len(found[0]["boxes"])
    result = {name: {**_summary(seconds[name]), "boxes_per_image": round(boxes[name] / len(seconds[name]), 1)}
              for name in engines}
    result["onnx_over_torch_speed"] = round(result["onnx"]["images_per_s"] / result["torch"]["images_per_s"], 3)
    result["onnx_export_and_check_s"] = round(export_s, 1)
    result["n_images_timed"] = len(seconds["torch"])
    return result


def service_latency(folder: Path, photos: list[Path], requests: int) -> dict:
    """p50 of POST /predict at concurrency 1, a torch and an onnx server alternating."""
    import contextlib

    import httpx

    sys.path.insert(0, str(ROOT / "tests"))
    from servers import running_server

    payloads = [(p.name, p.read_bytes()) for p in photos]
    with contextlib.ExitStack() as stack:
        bases = {name: stack.enter_context(running_server(folder, "--device", "cpu", "--backend", name))[0]
                 for name in ("torch", "onnx")}
        backends = {name: httpx.get(base + "/metadata", timeout=30).json()["serving"]["backend"]
                    for name, base in bases.items()}
        seconds = {name: [] for name in bases}
        with httpx.Client(timeout=120) as client:
            for i in range(requests + 2):
                order = list(bases) if i % 2 == 0 else list(bases)[::-1]
                for name in order:
                    begin = time.perf_counter()
                    response = client.post(bases[name] + "/predict",
                                           files={"file": payloads[i % len(payloads)]})
                    response.raise_for_status()
                    if i >= 2:  # the first two are warm-up
                        seconds[name].append(time.perf_counter() - begin)
    result = {name: {"backend_reported": backends[name], **_summary(values)}
              for name, values in seconds.items()}
    result["onnx_over_torch_p50"] = round(result["onnx"]["median_ms"] / result["torch"]["median_ms"], 3)
    result["requests_each"] = requests
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="passes over the photos per size")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--requests", type=int, default=16, help="service requests per engine")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--repeats", type=int, default=2, help="whole measurements, in turn")
    args = parser.parse_args()

    import onnxruntime
    import torch

    photos = sorted((BCCD / "JPEGImages").glob("*.jpg"))[:args.photos]
    started = time.perf_counter()
    result = {
        "what": "Detector speed on the CPU, batch 1: PyTorch vs ONNX Runtime (predictor and service)",
        "model": "Faster R-CNN + FPN on EfficientNet-Lite0: ImageNet backbone, untrained head "
                 "(speed does not depend on training)",
        "images": f"{len(photos)} BCCD photos (640x480), each resized by the detector itself",
        "protocol": "engines interleaved image by image after a warm-up; medians; ratios within "
                    "each repeat",
        "machine": {"cpus": os.cpu_count(), "shared": True,
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "repeats": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folders = {size: untrained_detector(Path(tmp) / f"det-{size}", size) for size in args.sizes}
        for repeat in range(args.repeats):
            # a fresh cache each time: the export is timed too
            os.environ["SIGCLASS_CACHE_DIR"] = str(Path(tmp) / f"cache-{repeat}")
            entry = {"load_average_before": list(os.getloadavg()), "engine": {}}
            for size, folder in folders.items():
                entry["engine"][f"{size}px"] = engine_speed(folder, photos, args.rounds)
                print(size, json.dumps(entry["engine"][f"{size}px"]), flush=True)
            if args.requests:
                entry["service_concurrency_1"] = {
                    "size": f"{args.sizes[0]}px",
                    **service_latency(folders[args.sizes[0]], photos, args.requests)}
                print(json.dumps(entry["service_concurrency_1"]), flush=True)
            entry["load_average_after"] = list(os.getloadavg())
            result["repeats"].append(entry)
    ratios = {f"{size}px_onnx_over_torch_speed": [r["engine"][f"{size}px"]["onnx_over_torch_speed"]
                                                   for r in result["repeats"]] for size in args.sizes}
    if args.requests:
        ratios["service_onnx_over_torch_p50"] = [r["service_concurrency_1"]["onnx_over_torch_p50"]
                                                 for r in result["repeats"]]
    result["summary"] = {name: {"min": min(values), "max": max(values)} for name, values in ratios.items()}
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
