"""Which torchvision detector trains best on a CPU budget: Faster R-CNN + FPN, RetinaNet and FCOS
on the same EfficientNet-Lite0 ImageNet backbone, BCCD with its own split, each with the same
training budget and image size, one after the other.

Writes bench/results/detection_archs.json: per architecture the test mAP@[.5:.95], mAP@0.5,
the epochs run in the budget and the seconds. BCCD is read with ``--on-bad-file skip`` (two
boxes of zero area).

Usage: python bench/bench_detection_archs.py [--max-minutes 5] [--image-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BCCD = Path(os.environ.get("SIGCLASS_BCCD", ROOT.parent / "shared" / "datasets" / "BCCD"))
ARCHS = ("fasterrcnn", "retinanet", "fcos")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-minutes", type=float, default=5.0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    args = parser.parse_args()

    import torch

    from sigclass.config import RunConfig
    from sigclass.workflows.detect import train_detection

    rows = {}
    for arch in args.archs:
        cfg = RunConfig().updated({
            "on_bad_file": "skip", "tracking.enabled": False, "image_size": args.image_size,
            "train.max_minutes": args.max_minutes, "model_args": {"arch": arch}})
        started = time.perf_counter()
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            run = train_detection(BCCD, Path(tmp) / "run", cfg, progress=True)
        training = run.predictor.info["training"]
        rows[arch] = {"map": run.metrics["map"], "map_50": run.metrics["map_50"],
                      "map_75": run.metrics["map_75"], "epochs_run": training["epochs_run"],
                      "best_epoch": training["best_epoch"],
                      "seconds": round(time.perf_counter() - started, 1),
                      "load_average_at_start": round(load, 2)}
        print(arch, json.dumps(rows[arch]))
    result = {
        "dataset": "BCCD (Shenggan/BCCD_Dataset), its own ImageSets/Main split, test part",
        "backbone": "EfficientNet-Lite0, ImageNet weights",
        "settings": {"image_size": args.image_size, "max_minutes": args.max_minutes,
                     "epochs": "auto (the schedule shrinks to the budget)", "on_bad_file": "skip"},
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores, shared)",
        "archs": rows,
        "best_map_50": max(rows, key=lambda a: rows[a]["map_50"]),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    out = ROOT / "bench" / "results" / "detection_archs.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
