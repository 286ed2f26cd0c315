"""Do the box maps of a detector point at their boxes? A pointing-game check on BCCD.

Trains the default detector (Faster R-CNN + FPN on EfficientNet-Lite0 ImageNet weights) briefly
on a subset of BCCD's own train part (``--n-train`` images, 256 px, ``--epochs`` epochs), then
explains every box it finds on BCCD test images (:mod:`sigclass.explain.boxes`) with each method
and backbone stage, and measures per box, on the map over the whole image (before it is
restricted to the box):

- ``mass_inside``: the share of the map inside the box;
- ``mass_elsewhere``: the share inside a box of the same size placed elsewhere in the image (not
  overlapping the box), averaged over ``--placements`` seeded random places: what the box would
  get if the map did not follow it;
- ``area_share``: the box's share of the image (what a uniform map puts inside it);
- ``pointing``: whether the map's maximum lies inside the box (the pointing game of Zhang et al.
  2016).

Writes bench/results/detection_cam.json. Usage:
python bench/bench_detection_cam.py [--n-train 60] [--epochs 2] [--n-test 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BCCD = Path(os.environ.get("SIGCLASS_BCCD", ROOT.parent / "shared" / "datasets" / "BCCD"))
VARIANTS = (("gradcam", 0), ("layercam", 0), ("gradcam", 1), ("layercam", 1))


def subset(root: Path, n_train: int, n_val: int) -> Path:
    """A VOC folder of the first ``n_train`` train and ``n_val`` val images of BCCD (copies)."""
    sets = BCCD / "ImageSets" / "Main"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for part, n in (("train", n_train), ("val", n_val)):
        names = (sets / f"{part}.txt").read_text().split()[:n]
        (root / "ImageSets" / "Main" / f"{part}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            shutil.copy(BCCD / "Annotations" / f"{name}.xml", root / "Annotations")
            shutil.copy(BCCD / "JPEGImages" / f"{name}.jpg", root / "JPEGImages")
    return root


def elsewhere(full: np.ndarray, box, rng, placements: int) -> float:
    """Mean share of ``full`` in ``placements`` same-sized boxes that do not overlap ``box``."""
    from sigclass.explain.boxes import mass_inside, pixel_box

    height, width = full.shape
    x0, y0, x1, y1 = pixel_box(box, full.shape)
    w, h = x1 - x0, y1 - y0
    shares = []
    for _ in range(200 * placements):
        if len(shares) == placements or w >= width or h >= height:
            break
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        if left < x1 and left + w > x0 and top < y1 and top + h > y0:
            continue  # overlaps the box
        shares.append(mass_inside(full, (left, top, left + w, top + h)))
    return float(np.mean(shares)) if shares else float("nan")


def measure(predictor, images, names, method: str, stage: int, placements: int) -> dict:
    rng = np.random.default_rng(0)
    rows = []
    started = time.perf_counter()
    found = predictor.explain_boxes(images, score_threshold=0.5, max_detections=50, method=method,
                                    stage=stage)
    seconds = time.perf_counter() - started
    for name, explained in zip(names, found, strict=True):
        for entry in explained:
            full = entry.full_map
            x0, y0, x1, y1 = entry.pixel_box()
            peak = np.unravel_index(int(np.argmax(full)), full.shape)
            rows.append({"image": name, "class": entry.label, "score": entry.score,
                         "mass_inside": entry.mass_inside,
                         "mass_elsewhere": elsewhere(full, entry.box, rng, placements),
                         "area_share": (x1 - x0) * (y1 - y0) / full.size,
                         "pointing": bool(y0 <= peak[0] < y1 and x0 <= peak[1] < x1),
                         "empty": bool(full.max() == 0)})
    n_boxes = len(rows)

    def summary(subset_rows):
        keys = ("mass_inside", "mass_elsewhere", "area_share")
        out = {k: round(float(np.nanmean([r[k] for r in subset_rows])), 4) for k in keys}
        out["pointing"] = round(float(np.mean([r["pointing"] for r in subset_rows])), 4)
        out["inside_over_elsewhere"] = round(out["mass_inside"] / max(out["mass_elsewhere"], 1e-9), 2)
        out["n_boxes"] = len(subset_rows)
        out["all_zero_maps"] = int(sum(r["empty"] for r in subset_rows))
        return out

    classes = sorted({r["class"] for r in rows})
    return {"method": method, "stage": stage, "n_boxes": n_boxes,
            "seconds_per_box": round(seconds / max(n_boxes, 1), 3),
            "all": summary(rows) if rows else None,
            "per_class": {c: summary([r for r in rows if r["class"] == c]) for c in classes}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=60)
    parser.add_argument("--n-val", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--n-test", type=int, default=12)
    parser.add_argument("--placements", type=int, default=8)
    args = parser.parse_args()

    import torch

    from sigclass.config import RunConfig
    from sigclass.workflows.detect import train_detection

    cfg = RunConfig().updated({"image_size": args.image_size, "on_bad_file": "skip",
                               "tracking.enabled": False, "train.epochs": args.epochs,
                               "train.batch_size": 4})
    test_names = (BCCD / "ImageSets" / "Main" / "test.txt").read_text().split()[:args.n_test]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(Path(tmp) / "bccd", args.n_train, args.n_val)
        run = train_detection(data, Path(tmp) / "run", cfg, progress=False)
        train_seconds = time.perf_counter() - started
        predictor = run.predictor
        predictor.device = "cpu"
        images = predictor._read_images([BCCD / "JPEGImages" / f"{n}.jpg" for n in test_names])
        results = [measure(predictor, images, test_names, method, stage, args.placements)
                   for method, stage in VARIANTS]
        history = json.loads((run.dir / "history.json").read_text())
    result = {
        "dataset": "BCCD (Shenggan/BCCD_Dataset): training on the first images of its train part, "
                   "maps on the first images of its test part",
        "model": "Faster R-CNN + FPN (torchvision), EfficientNet-Lite0 ImageNet backbone",
        "settings": {"n_train": args.n_train, "n_val": args.n_val, "epochs": args.epochs,
                     "image_size": args.image_size, "n_test_images": len(test_names),
                     "explained_boxes": "score >= 0.5, at most 50 per image",
                     "placements_per_box": args.placements},
        "what": "per box, the share of its whole-image gradient map inside the box "
                "(mass_inside), inside a same-sized box elsewhere not overlapping it "
                "(mass_elsewhere, mean of seeded random places), the box's share of the image "
                "(area_share: a uniform map) and whether the map's maximum is in the box (pointing)",
        "val_map_per_epoch": [round(h["val_map"], 4) for h in history],
        # the subset has no test part: the run's metrics are those of its validation part
        "val_map_50_of_the_kept_epoch": round(float(run.metrics["map_50"]), 4),
        "train_seconds": round(train_seconds, 1),
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores, shared)",
        "torch": torch.__version__, "python": platform.python_version(),
        "variants": results,
    }
    out = ROOT / "bench" / "results" / "detection_cam.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
