"""CAM localization on real data: does the map point at the white blood cell?

Usage::

    nice -n 10 .venv/bin/python bench/bench_cam_localization.py        # ~15 min on 2 CPU cores

Protocol (BCCD, Pascal VOC boxes, the dataset's own image split):

* Classification data: ``PATCH`` x ``PATCH`` patches cut from the images, ``wbc`` (a window that
  holds one whole WBC box, placed at random around it) or ``no_wbc`` (a window that touches no WBC
  box), written as an image folder with ``train/`` (the dataset's train + val images) and
  ``test/`` (its test images) in the cache folder. A model is trained on it with
  :func:`sigclass.train` (default headless: frozen EfficientNet-Lite2 + logistic regression).
* Localization sets, from the test images only: ``crop480``, a 480 x 480 window around each WBC
  (the WBC at a random place in it), and ``whole``, the whole 640 x 480 image (aspect 1.33).
  A WBC covers ~16 % of a crop and ~12 % of a whole image, so a random point rarely hits it.
* Scores of a map against the WBC boxes of the image: **pointing** (the map's maximum lies in a
  box dilated by 2 % of the image's width and height), **energy** (the share of the map's sum
  inside the boxes), and **ROAD** (pytorch-grad-cam's ``ROADCombined``: the drop of the class
  probability when the least relevant pixels are imputed, minus the drop when the most relevant
  ones are, averaged over percentiles; higher is more faithful), beside a random point (the
  dilated boxes' area share), the image centre and, for ROAD, a random map.
* Methods: ``cam`` (the head's weights on the last feature map) and ``layercam`` with 2-5 stages;
  for ``whole``, each resize mode (``center_crop``, ``squash``, ``letterbox``), at the model's input
  size and at the input size that keeps the training patches' pixel scale ("scale-matched").
* Accuracy of each resize mode on non-square test patches (``WIDE`` wide, ``PATCH`` high).

Writes ``bench/results/cam_localization.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BCCD = Path(os.environ.get("SIGCLASS_BCCD", ROOT.parent / "shared" / "datasets" / "BCCD"))
PATCH, WIDE, CROP = 320, 400, 480
DILATE = 0.02


# ------------------------------------------------------------------------------- scoring

def dilated(box, height: int, width: int, frac: float = DILATE):
    """``(x0, y0, x1, y1)`` grown by ``frac`` of the image's width / height, clipped to it."""
    dx, dy = frac * width, frac * height
    x0, y0, x1, y1 = box
    return max(0.0, x0 - dx), max(0.0, y0 - dy), min(float(width), x1 + dx), min(float(height), y1 + dy)


def box_mask(boxes, height: int, width: int, frac: float = 0.0) -> np.ndarray:
    """Boolean ``(H, W)`` union of the boxes (dilated by ``frac``); a pixel ``(y, x)`` is inside
    when its centre ``(y + 0.5, x + 0.5)`` is."""
    mask = np.zeros((height, width), dtype=bool)
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
    for box in boxes:
        x0, y0, x1, y1 = dilated(box, height, width, frac) if frac else box
        mask |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return mask


def score_map(cam: np.ndarray, boxes, frac: float = DILATE) -> dict:
    """Pointing hit, energy share, and the random-point and centre-point baselines of one map."""
    height, width = cam.shape
    grown = box_mask(boxes, height, width, frac)
    inside = box_mask(boxes, height, width)
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    total = float(cam.sum())
    return {
        "pointing": bool(total > 0 and grown[y, x]),
        "energy": float(cam[inside].sum() / total) if total > 0 else 0.0,
        "random_point": float(grown.mean()),
        "centre_point": bool(grown[height // 2, width // 2]),
        "uniform_energy": float(inside.mean()),
    }


def summarize(scores: list[dict]) -> dict:
    keys = ("pointing", "energy", "random_point", "centre_point", "uniform_energy")
    out = {k: float(np.mean([s[k] for s in scores])) for k in keys}
    out["n"] = len(scores)
    out["pointing_vs_random"] = out["pointing"] / out["random_point"] if out["random_point"] else None
    return out


# ------------------------------------------------------------------------------- data

def read_boxes(xml_path: Path) -> list[tuple[int, int, int, int]]:
    root = ET.parse(xml_path).getroot()
    return [tuple(int(float(obj.find(f"bndbox/{k}").text)) for k in ("xmin", "ymin", "xmax", "ymax"))
            for obj in root.findall("object") if obj.findtext("name") == "WBC"]


def image_ids(part: str) -> list[str]:
    return (BCCD / "ImageSets" / "Main" / f"{part}.txt").read_text().split()


def window_around(box, size_w: int, size_h: int, width: int, height: int, rng):
    """A random ``size_w x size_h`` window inside the image holding the whole box, or None."""
    x0, y0, x1, y1 = box
    lo_x, hi_x = max(0, x1 - size_w), min(x0, width - size_w)
    lo_y, hi_y = max(0, y1 - size_h), min(y0, height - size_h)
    if lo_x > hi_x or lo_y > hi_y:
        return None
    left, top = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
    return left, top, left + size_w, top + size_h


def free_window(boxes, size_w: int, size_h: int, width: int, height: int, rng, taken=()):
    """A random window touching no box (and not overlapping ``taken`` by more than half), or None."""
    spots = [(x, y) for x in range(0, width - size_w + 1, 8) for y in range(0, height - size_h + 1, 8)
             if all(x + size_w <= b[0] or x >= b[2] or y + size_h <= b[1] or y >= b[3] for b in boxes)
             and all(abs(x - t[0]) > size_w / 2 or abs(y - t[1]) > size_h / 2 for t in taken)]
    if not spots:
        return None
    x, y = spots[int(rng.integers(len(spots)))]
    return x, y, x + size_w, y + size_h


def shift(boxes, window):
    left, top, right, bottom = window
    out = []
    for x0, y0, x1, y1 in boxes:
        cx0, cy0, cx1, cy1 = max(x0, left), max(y0, top), min(x1, right), min(y1, bottom)
        if cx1 > cx0 and cy1 > cy0:
            out.append((cx0 - left, cy0 - top, cx1 - left, cy1 - top))
    return out


def build_data(cache: Path, seed: int = 0) -> dict:
    """Write the patch folder and the localization sets once; returns the manifest."""
    from PIL import Image

    manifest_path = cache / "manifest.json"
    if manifest_path.exists():
        return json.loads(manifest_path.read_text())
    rng = np.random.default_rng(seed)
    manifest: dict = {"crop480": [], "whole": [], "wide": []}
    parts = {"train": image_ids("train") + image_ids("val"), "test": image_ids("test")}
    for part, ids in parts.items():
        for name in ids:
            boxes = read_boxes(BCCD / "Annotations" / f"{name}.xml")
            path = BCCD / "JPEGImages" / f"{name}.jpg"
            image = Image.open(path).convert("RGB")
            width, height = image.size
            for size_w, size_h, key in ((PATCH, PATCH, "patch"), (WIDE, PATCH, "wide")):
                if key == "wide" and part != "test":
                    continue
                folder = cache / ("wide" if key == "wide" else f"patches/{part}")
                for i, box in enumerate(boxes[:1]):
                    window = window_around(box, size_w, size_h, width, height, rng)
                    if window is not None:
                        _save(image.crop(window), folder / "wbc" / f"{name}_{i}.jpg")
                taken: list = []
                for j in range(2):
                    window = free_window(boxes, size_w, size_h, width, height, rng, taken)
                    if window is None:
                        break
                    taken.append(window)
                    _save(image.crop(window), folder / "no_wbc" / f"{name}_n{j}.jpg")
            if part != "test" or not boxes:
                continue
            manifest["whole"].append({"file": str(path), "boxes": boxes})
            window = window_around(boxes[0], CROP, CROP, width, height, rng)
            if window is not None:
                file = cache / "crop480" / f"{name}.jpg"
                _save(image.crop(window), file)
                manifest["crop480"].append({"file": str(file), "boxes": shift(boxes, window)})
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def build_wide(cache: Path, seed: int = 1) -> Path:
    """Non-square (``WIDE`` x ``PATCH``) patches, ``train/`` and ``test/`` as for the square ones:
    data far from square, for the resize-mode study. Written once."""
    from PIL import Image

    root = cache / "wide_patches"
    if (root / "done").exists():
        return root
    rng = np.random.default_rng(seed)
    for part, ids in (("train", image_ids("train") + image_ids("val")), ("test", image_ids("test"))):
        for name in ids:
            boxes = read_boxes(BCCD / "Annotations" / f"{name}.xml")
            image = Image.open(BCCD / "JPEGImages" / f"{name}.jpg").convert("RGB")
            width, height = image.size
            if boxes:
                window = window_around(boxes[0], WIDE, PATCH, width, height, rng)
                if window is not None:
                    _save(image.crop(window), root / part / "wbc" / f"{name}.jpg")
            taken: list = []
            for j in range(2):
                window = free_window(boxes, WIDE, PATCH, width, height, rng, taken)
                if window is None:
                    break
                taken.append(window)
                _save(image.crop(window), root / part / "no_wbc" / f"{name}_n{j}.jpg")
    (root / "done").write_text("")
    return root


def _save(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95)


# ------------------------------------------------------------------------------- models

def train_model(cache: Path, mode: str, data: str = "patches", resize: str | None = None):
    import sigclass as sc

    out = cache / (f"run-{mode}" if resize is None else f"run-{mode}-{data}-{resize}")
    if (out / "model").exists() or (out / "status.json").exists():
        try:
            return sc.load(out)
        except Exception:  # noqa: BLE001 - an interrupted run is trained again
            pass
    overrides = {"tracking.enabled": False, "cache_dir": str(cache / "features")}
    if resize is not None:
        overrides["resize"] = resize
    if mode == "finetune":
        overrides.update({"image_size": 160, "train.epochs": 4, "train.batch_size": 16})
    run = sc.train(cache / data, mode=mode, out=out, progress=False, seed=0, **overrides)
    return run.predictor


def variant(predictor, resize: str | None = None, size: int | None = None):
    """The same trained model with another resize mode or input size (the head reads pooled
    features, so any input size gives valid maps)."""
    from sigclass.predictor import Predictor

    config = dict(predictor.data_config)
    if resize is not None:
        config["resize"] = resize
        config["far_resize"] = None  # this mode for every image
        if resize == "center_crop":
            config["crop_pct"] = predictor.data_config.get("crop_pct", 1.0)
    if size is not None:
        config["input_size"] = [config["input_size"][0], size, size]
    return Predictor(predictor.network, predictor.classes, config, modality="image",
                     mode=predictor.mode, head=predictor.head, device="cpu")


def localization(predictor, items: list[dict], method: str, layers=None, batch_size: int = 8) -> dict:
    from sigclass.explain import explain

    start = time.perf_counter()
    kwargs = {"layers": layers} if method == "layercam" else {}
    explanations = explain(predictor, [it["file"] for it in items], target="wbc", method=method,
                           batch_size=batch_size, **kwargs)
    scores = [score_map(ex.map, it["boxes"]) for ex, it in zip(explanations, items, strict=True)]
    out = summarize(scores)
    out["predicted_wbc"] = float(np.mean([predictor.classes[ex.predicted] == "wbc" for ex in explanations]))
    out["seconds"] = time.perf_counter() - start
    return out, explanations


def accuracy(predictor, folder: Path) -> dict:
    files = sorted(folder.rglob("*.jpg"))
    truth = np.array([f.parent.name for f in files])
    predicted = np.asarray(predictor.predict(files))
    per = {c: float((predicted[truth == c] == c).mean()) for c in ("wbc", "no_wbc") if (truth == c).any()}
    return {"accuracy": float((predicted == truth).mean()), "balanced_accuracy": float(np.mean(list(per.values()))),
            "recall": per, "n": len(files)}


def road(predictor, items: list[dict], maps: dict[str, list[np.ndarray]], n: int, seed: int = 0) -> dict:
    """pytorch-grad-cam's ROADCombined on the first ``n`` items, for each named set of maps."""
    import torch
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from sigclass.data.image_preprocess import load_image

    class Probabilities(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = predictor.network

        def forward(self, x):
            with torch.inference_mode():
                return torch.as_tensor(predictor.probabilities_from_outputs(
                    self.network(x).float().numpy()), dtype=torch.float32)

    model = Probabilities().eval()
    images = [load_image(it["file"]) for it in items[:n]]
    x = predictor.preprocessor(images)
    size = tuple(x.shape[-2:])
    target = [ClassifierOutputTarget(predictor.classes.index("wbc"))] * len(images)
    metric = ROADCombined(percentiles=[20, 40, 60, 80])
    rng = np.random.default_rng(seed)
    out = {}
    for name, cams in maps.items():
        resized = np.stack([_to_input(cam, size) for cam in cams[:n]])
        resized += rng.uniform(0, 1e-6, resized.shape).astype(np.float32)  # break ties at 0
        scores = metric(x, resized, target, model)
        out[name] = {"road_combined": float(np.mean(scores)), "n": len(images)}
    return out


def _to_input(cam: np.ndarray, size) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    return F.interpolate(torch.as_tensor(cam, dtype=torch.float32)[None, None], size=size,
                         mode="bilinear", align_corners=False)[0, 0].numpy()


# ------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "bench_runs" / "cam_localization")
    parser.add_argument("--modes", default="headless", help="comma-separated: headless,finetune")
    parser.add_argument("--road-images", type=int, default=16)
    parser.add_argument("--stages", default="2,3,4,5", help="Layer-CAM stage counts to compare")
    parser.add_argument("--resize-study", action="store_true",
                        help="also train one headless model per resize mode on non-square patches")
    parser.add_argument("--skip-main", action="store_true", help="only the resize study")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cam_localization.json")
    args = parser.parse_args()
    manifest = build_data(args.cache)
    stage_counts = [int(s) for s in args.stages.split(",") if s]
    results: dict = {}
    for mode in ([] if args.skip_main else args.modes.split(",")):
        start = time.perf_counter()
        predictor = train_model(args.cache, mode)
        entry: dict = {"model": predictor.model_name, "data_config": predictor.data_config,
                       "train_seconds": time.perf_counter() - start,
                       "patch_test": accuracy(predictor, args.cache / "patches" / "test")}
        print(mode, "patch test", entry["patch_test"], flush=True)
        native = int(predictor.data_config["input_size"][1])
        matched = int(round(native * CROP / PATCH / 8)) * 8  # the training patches' pixel scale
        crops, maps = {}, {}
        for size in (native, matched):
            base = variant(predictor, "squash", size)
            for method, layers in [("cam", None)] + [("layercam", n) for n in stage_counts]:
                key = f"{method}{layers or ''}@{size}"
                crops[key], explanations = localization(base, manifest["crop480"], method, layers)
                maps[key] = [ex.map for ex in explanations]
                print(mode, "crop480", key, {k: round(v, 3) for k, v in crops[key].items()
                                             if isinstance(v, float)}, flush=True)
        entry["crop480"] = crops
        best = max(crops, key=lambda k: crops[k]["pointing"])
        entry["crop480_best"] = best
        whole, wide = {}, {}
        for resize in ("center_crop", "squash", "letterbox"):
            wide[resize] = accuracy(variant(predictor, resize), args.cache / "wide")
            for size in (native, int(round(native * 640 / PATCH / 8)) * 8):
                candidate = variant(predictor, resize, size)
                for method, layers in (("cam", None), ("layercam", 3)):
                    key = f"{resize}/{method}{layers or ''}@{size}"
                    whole[key], _ = localization(candidate, manifest["whole"], method, layers)
                    print(mode, "whole", key, {k: round(v, 3) for k, v in whole[key].items()
                                               if isinstance(v, float)}, flush=True)
            print(mode, "wide", resize, wide[resize], flush=True)
        entry["whole"], entry["wide_accuracy"] = whole, wide
        if args.road_images:
            items = manifest["crop480"]
            rng = np.random.default_rng(1)
            random_maps = [rng.random((CROP, CROP)).astype(np.float32) for _ in items[:args.road_images]]
            chosen = {"cam@native": maps[f"cam@{native}"], "best": maps[best], "random_map": random_maps}
            entry["road"] = road(variant(predictor, "squash"), items, chosen, args.road_images)
            entry["road"]["best_is"] = best
            print(mode, "road", entry["road"], flush=True)
        results[mode] = entry
        _write(args.out, manifest, results)
    if args.resize_study:
        results["resize_study"] = resize_study(args.cache, manifest)
        _write(args.out, manifest, results)
    print(f"written: {args.out}")


def resize_study(cache: Path, manifest: dict) -> dict:
    """One default headless model per resize mode, trained and tested on non-square patches
    (``WIDE`` x ``PATCH``, aspect 1.25), then explaining the whole 640 x 480 test images."""
    root = build_wide(cache)
    out = {"data": f"{WIDE}x{PATCH} patches, aspect {WIDE / PATCH:.2f}",
           "n_train": len(list((root / "train").rglob("*.jpg"))),
           "n_test": len(list((root / "test").rglob("*.jpg")))}
    for resize in ("center_crop", "squash", "letterbox"):
        start = time.perf_counter()
        predictor = train_model(cache, "headless", "wide_patches", resize)
        entry = {"train_seconds": time.perf_counter() - start,
                 "wide_test": accuracy(predictor, root / "test")}
        for method, layers in (("cam", None), ("layercam", 3)):
            key = f"whole/{method}{layers or ''}"
            entry[key], _ = localization(predictor, manifest["whole"], method, layers)
        out[resize] = entry
        print("resize study", resize, json.dumps(entry)[:400], flush=True)
    return out


def _write(path: Path, manifest: dict, results: dict) -> None:
    document = {
        "benchmark": "cam_localization",
        "data": "BCCD (VOC boxes), dataset split: train+val images -> training patches, test images -> "
                "test patches and localization sets",
        "protocol": {"patch": PATCH, "wide": [WIDE, PATCH], "crop": CROP, "dilate": DILATE,
                     "n_crop480": len(manifest["crop480"]), "n_whole": len(manifest["whole"]),
                     "pointing": "argmax of the map inside a WBC box dilated by 2 % of width/height",
                     "energy": "share of the map's sum inside the WBC boxes",
                     "road": "pytorch_grad_cam ROADCombined, percentiles 20/40/60/80, class wbc"},
        "goal": "pointing >= 0.6 and >= 3x random_point",
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count()},
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
