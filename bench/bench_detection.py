"""Object detection on BCCD with the dataset's own split (train 205 / val 87 / test 72 images).

Trains the default detector (Faster R-CNN + FPN on EfficientNet-Lite0 ImageNet weights) with
the default settings (automatic image size, epochs and time budget) unless flags say otherwise,
and writes bench/results/detection.json (or ``--out``): COCO mAP@[.5:.95], mAP@0.5 and per class
AP on the test part, with the settings, the image size chosen and why, the epochs run, the
device and the time. BCCD holds two boxes of zero area (images 338 and 343), so the run reads it
with ``--on-bad-file skip``.

Usage: python bench/bench_detection.py [--max-minutes 25] [--image-size 256] [--epochs 6]
       [--arch fcos] [--out F]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-minutes", type=float, default=None, help="default: automatic")
    parser.add_argument("--image-size", type=int, default=None, help="default: automatic")
    parser.add_argument("--epochs", type=int, default=None, help="default: automatic")
    parser.add_argument("--batch-size", type=int, default=None, help="default: automatic (4)")
    parser.add_argument("--arch", default=None, help="default: the default head (fasterrcnn)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "detection.json")
    args = parser.parse_args()
    given = {key: value for key, value in (
        ("image_size", args.image_size), ("train.epochs", args.epochs),
        ("train.max_minutes", args.max_minutes), ("train.batch_size", args.batch_size),
        ("model_args", {"arch": args.arch} if args.arch else None))
        if value is not None}

    import torch

    from sigclass.config import RunConfig
    from sigclass.workflows.detect import train_detection

    cfg = RunConfig().updated({"on_bad_file": "skip", "tracking.enabled": False, **given})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = train_detection(BCCD, Path(tmp) / "run", cfg, progress=True)
        history = json.loads((run.dir / "history.json").read_text())
    metrics = run.metrics
    training = run.predictor.info["training"]
    result = {
        "dataset": "BCCD (Shenggan/BCCD_Dataset), its own ImageSets/Main split",
        "model": f"{run.predictor.info['arch']} (torchvision), EfficientNet-Lite0 ImageNet backbone",
        "settings": {"given": given or "defaults (no flags)", "on_bad_file": "skip"},
        "image_size": run.predictor.data_config["input_size"][-1],
        "image_size_reason": training.get("image_size_reason", "given"),
        "epochs_planned": training["epochs_planned"],
        "max_minutes": training["max_minutes"],
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores, shared)",
        "torch_threads": torch.get_num_threads(),
        "epochs_run": len(history),
        "best_epoch": training["best_epoch"],
        "val_map_per_epoch": [round(h["val_map"], 4) for h in history],
        "test": {k: metrics[k] for k in ("part", "n_images", "n_boxes", "map", "map_50", "map_75",
                                          "mar_100")},
        "per_class": metrics["per_class"],
        "seconds": round(time.perf_counter() - started, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    out = args.out
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["test"], indent=2))


if __name__ == "__main__":
    main()
