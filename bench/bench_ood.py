"""Unknown inputs: how well the out-of-distribution scores tell far inputs from the test part.

Usage::

    .venv/bin/python bench/bench_ood.py                  # every model
    .venv/bin/python bench/bench_ood.py --only fridge    # fridge | elpv | basicmotions

Protocol. Each model is trained by ``sc.train`` with its defaults (OOD score ``knn``, k 5,
threshold at 95 % of the validation part) except where named:

- ``fridge``: headless efficientnet_lite0 on the 134 fridgeObjects photos, shown 300 ELPV
  solar cells, 60 Gaussian-noise images and 20 blank images (solid colours);
- ``elpv``: headless efficientnet_lite0 on a seeded sample of 500 ELPV cells (4 classes),
  shown the 134 fridge photos, the noise and the blank images;
- ``basicmotions``: the default network (``scratch``, fcn) and the default headless model
  (MiniRocket) on BasicMotions (6 channels, 100 steps), shown 6-channel cases made of other
  UCR series (GunPoint, ArrowHead, OSULeaf cases resampled to 100 steps), its own test cases
  with one channel flat-lined (set to its training mean) and with the accelerometer and
  gyroscope blocks swapped.

In-distribution items are each model's test part. Both scores are computed on the same pooled
features from the same training part: AUROC (1: every unknown input scores above every test
item) and FPR at 95 % TPR (share of unknown inputs under the score that keeps 95 % of the test
part; lower is better). ``passed_at_threshold`` is the share of each set under the threshold
the model saved (the default method's), ``test_pass_rate`` the test part's (target 0.95).
Writes ``bench/results/ood.json`` after every model.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

FRIDGE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fridgeObjects"
RESULTS = Path(__file__).resolve().parent / "results" / "ood.json"
MODELS = ("fridge", "elpv", "basicmotions")
SEED = 0


def _elpv_root() -> Path:
    import elpv_dataset

    return Path(elpv_dataset.__file__).parent / "data"


def _elpv_rows() -> list[tuple[str, float]]:
    rows = []
    for line in (_elpv_root() / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            rows.append((parts[0], float(parts[1])))
    return rows


def synthetic_images(folder: Path) -> dict[str, list[Path]]:
    """60 noise images (Gaussian, uniform and salt-and-pepper, colour and grey) and 20 blank
    ones (solid colours), as PNG files."""
    from PIL import Image

    rng = np.random.default_rng(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    noise, blank = [], []
    for i in range(60):
        kind = i % 3
        if kind == 0:
            array = np.clip(rng.normal(128, 60, (224, 224, 3)), 0, 255)
        elif kind == 1:
            array = rng.uniform(0, 255, (224, 224, 3))
        else:
            array = np.repeat((rng.random((224, 224, 1)) > 0.5) * 255.0, 3, axis=2)
        path = folder / f"noise_{i:02d}.png"
        Image.fromarray(array.astype(np.uint8)).save(path)
        noise.append(path)
    for i in range(20):
        colour = (0, 0, 0) if i == 0 else (255, 255, 255) if i == 1 else tuple(rng.integers(0, 256, 3))
        path = folder / f"blank_{i:02d}.png"
        Image.new("RGB", (224, 224), tuple(int(c) for c in colour)).save(path)
        blank.append(path)
    return {"noise": noise, "blank": blank}


def parts_of(run):
    """The training and test parts of a finished run, as datasets."""
    import sigclass as sc

    dataset = sc.load_dataset(run.config.data, root=run.config.root,
                              signal=run.predictor.data_config.get("reader"))
    parts = sc.Split.load(run.dir / "split.json").indices(dataset)
    return dataset.subset(parts["train"]), dataset.subset(parts["test"])


def compare(run, train, test, outside: dict[str, object]) -> dict:
    """AUROC and FPR at 95 % TPR of both scores for every set of unknown inputs."""
    from sigclass.evaluation import ood

    predictor = run.predictor
    started = time.perf_counter()
    reference = predictor.features(train.model_inputs())
    index = {c: i for i, c in enumerate(predictor.classes)}
    y = np.array([index[c] for c in train.labels])
    inside = predictor.features(test.model_inputs())
    features = {name: predictor.features(items) for name, items in outside.items()}
    methods = {}
    for method in ("knn", "mahalanobis"):
        k = min(ood.DEFAULT_K, len(reference) - 1) if method == "knn" else None
        tensors = ood.fit_reference(reference, y, method)
        test_scores = ood.scores(tensors, method, k, inside)
        methods[method] = {name: {
            "auroc": round(ood.auroc(test_scores, ood.scores(tensors, method, k, f)), 4),
            "fpr_at_95_tpr": round(ood.fpr_at_tpr(test_scores, ood.scores(tensors, method, k, f)), 4),
        } for name, f in features.items()}
    saved = predictor.ood
    at_threshold = {name: round(float(np.mean(~predictor.unknown(predictor.ood_scores(f)))), 4)
                    for name, f in features.items()}
    return {
        "model": predictor.model_name, "mode": predictor.mode, "classes": predictor.classes,
        "accuracy": round(run.metrics["accuracy"], 4), "n_train_reference": len(reference),
        "n_test": len(inside), "feature_width": int(reference.shape[1]),
        "outside_counts": {name: len(f) for name, f in features.items()},
        "methods": methods,
        "saved": {"method": saved["method"], "k": saved.get("k"), "threshold": round(saved["threshold"], 5),
                  "n_calibration": saved["n"], "calibrated_on": saved["calibrated_on"],
                  "test_pass_rate": round(run.metrics["ood"]["test_pass_rate"], 4),
                  "passed_at_threshold": at_threshold},
        "score_seconds": round(time.perf_counter() - started, 1),
    }


def bench_fridge(out: Path, synthetic) -> dict:
    import sigclass as sc

    run = sc.train(str(FRIDGE), mode="headless", model="efficientnet_lite0", out=out / "fridge",
                   progress=False, seed=SEED, **{"tracking.enabled": False, "cam_examples": 0})
    rows = _elpv_rows()
    picked = np.random.default_rng(SEED).choice(len(rows), 300, replace=False)
    elpv = [_elpv_root() / rows[i][0] for i in sorted(picked)]
    train, test = parts_of(run)
    return compare(run, train, test, {"elpv_cells": elpv, **synthetic})


def bench_elpv(out: Path, synthetic) -> dict:
    import sigclass as sc

    rows = _elpv_rows()
    picked = np.random.default_rng(SEED).choice(len(rows), 500, replace=False)
    names = {0.0: "functional", 1 / 3: "defect_33", 2 / 3: "defect_67", 1.0: "defective"}
    manifest = out / "elpv500.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for i in sorted(picked):
            label = min(names.items(), key=lambda kv: abs(kv[0] - rows[i][1]))[1]
            writer.writerow([rows[i][0], label])
    run = sc.train(str(manifest), root=str(_elpv_root()), mode="headless", model="efficientnet_lite0",
                   out=out / "elpv", progress=False, seed=SEED,
                   **{"tracking.enabled": False, "cam_examples": 0, "audit": False})
    fridge = sorted(p for p in FRIDGE.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    train, test = parts_of(run)
    return compare(run, train, test, {"fridge_photos": fridge, **synthetic})


def signal_outsiders(test_x: np.ndarray, train_x: np.ndarray) -> dict[str, np.ndarray]:
    """Cases of other UCR sets stacked to 6 channels, and BasicMotions test cases with a
    flat-lined channel or the two sensor blocks swapped."""
    from aeon.datasets import load_arrow_head, load_gunpoint, load_osuleaf
    from scipy.signal import resample

    rng = np.random.default_rng(SEED)
    series = []
    for loader in (load_gunpoint, load_arrow_head, load_osuleaf):
        x, _ = loader(split="test")
        series.append(resample(x[:, 0, :], test_x.shape[2], axis=1))
    pool = np.concatenate(series)
    pool = (pool - pool.mean(axis=1, keepdims=True)) / (pool.std(axis=1, keepdims=True) + 1e-9)
    scale = train_x.std(axis=(0, 2))[None, :, None]
    other = pool[rng.integers(0, len(pool), (60, test_x.shape[1]))] * scale
    flat = test_x.copy()
    channel = rng.integers(0, test_x.shape[1], len(flat))
    for i, c in enumerate(channel):
        flat[i, c, :] = train_x[:, c, :].mean()
    swapped = test_x[:, [3, 4, 5, 0, 1, 2], :]
    return {"other_ucr_sets": other, "flat_channel": flat, "swapped_channels": swapped}


def bench_basicmotions(out: Path) -> list[dict]:
    import sigclass as sc

    found = []
    for mode in ("scratch", "headless"):
        run = sc.train("aeon:BasicMotions", mode=mode, out=out / f"bm_{mode}", progress=False,
                       seed=SEED, **{"tracking.enabled": False, "cam_examples": 0})
        train, test = parts_of(run)
        outside = signal_outsiders(np.asarray(test.model_inputs(), dtype=np.float64),
                                   np.asarray(train.model_inputs(), dtype=np.float64))
        found.append(compare(run, train, test, {k: list(v) for k, v in outside.items()}))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=MODELS, nargs="+", default=list(MODELS))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update({"protocol": __doc__.split("Protocol. ", 1)[1].split("Writes")[0].strip(),
                    "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                "torch": torch.__version__}})
    results.setdefault("models", {})
    with tempfile.TemporaryDirectory(prefix="bench-ood-") as tmp:
        out = Path(tmp)
        synthetic = synthetic_images(out / "synthetic")
        for name in args.only:
            started = time.perf_counter()
            if name == "fridge":
                found = [bench_fridge(out, synthetic)]
            elif name == "elpv":
                found = [bench_elpv(out, synthetic)]
            else:
                found = bench_basicmotions(out)
            for entry in found:
                entry["seconds"] = round(time.perf_counter() - started, 1)
                key = f"{name}:{entry['mode']}"
                results["models"][key] = entry
                print(key, json.dumps(entry["methods"]), entry["saved"]["test_pass_rate"], flush=True)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
