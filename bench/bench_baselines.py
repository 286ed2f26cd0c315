"""Baselines benchmark: the non-deep rows and MultiROCKET-Hydra beside the default models.

Usage::

    .venv/bin/python bench/bench_baselines.py                   # about 10 minutes on 2 CPU cores
    .venv/bin/python bench/bench_baselines.py --only signals    # the UCR/UEA part
    .venv/bin/python bench/bench_baselines.py --elpv-images 0   # all 2,624 ELPV cells

Signals: GunPoint, ItalyPowerDemand and BasicMotions on their own train/test split (no validation
part): MiniRocket, MultiROCKET-Hydra (ridge heads) and catch22 + random forest, each with its test
accuracy and seconds (featurizer fit + head search, and the whole run).

Images: fridgeObjects and ELPV (4 classes; a stratified subset of ``--elpv-images`` cells when
given) on one split per dataset (``sigclass compare``, 25 % test): headless EfficientNet-Lite0
(frozen features + logistic regression) beside HOG + LBP features with an RBF SVM.

Writes ``bench/results/baselines.json``. Published figures: ../shared/ANCHORS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "baselines.json"
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))
SIGNAL_DATASETS = ("GunPoint", "ItalyPowerDemand", "BasicMotions")
# name: (registry model, head)
SIGNAL_MODELS = {"minirocket": ("minirocket", "auto"), "multirocket_hydra": ("multirocket_hydra", "auto"),
                 "catch22_rf": ("catch22", "random_forest")}
PUBLISHED_SIGNALS = {  # test accuracy %, UCR default split
    "source": ("time-series-machine-learning/tsml-eval results/classification/Univariate/"
               "{MiniROCKET,MR,Catch22}_accuracy.csv, resample 0 (the default train/test split); "
               "MR is MultiROCKET alone; angus924/rocket via ../shared/ANCHORS.md; BasicMotions: "
               "Ruiz et al. 2021 multivariate bake-off"),
    "GunPoint": {"minirocket": 99.33, "multirocket": 100.0, "catch22": 96.67, "rocket": 100.0},
    "ItalyPowerDemand": {"minirocket": 96.31, "multirocket": 96.79, "catch22": 89.60, "rocket": 97.0},
    "BasicMotions": {"best": 100.0},
}
PUBLISHED_IMAGES = {
    "source": "Deitsch et al., Solar Energy 185 (2019), 75/25 split of all 2,624 ELPV cells",
    "elpv": {"hand-crafted features + SVM": 82.44, "end-to-end CNN": 88.42},
}


def signal_table(datasets: tuple[str, ...], out: Path) -> dict:
    import sigclass as sc
    from sigclass.data.signals import load_signals
    from sigclass.training.heads import resolve_head

    table: dict = {}
    for name in datasets:
        dataset = load_signals(f"aeon:{name}")
        table[name] = {"shape": list(dataset.X.shape[1:]), "n_test": len(dataset.fixed_test), "models": {}}
        for row, (model, head) in SIGNAL_MODELS.items():
            started = time.perf_counter()
            run = sc.train(dataset, mode="headless", model=model, head=head, val_size=0.0, seed=0,
                           out=out / name / row, progress=False)
            figures = {
                "model": model, "head": resolve_head(head, run.predictor.network.num_features),
                "accuracy": round(100 * run.metrics["accuracy"], 2),
                "balanced_accuracy": round(100 * run.metrics["balanced_accuracy"], 2),
                "train_seconds": round(run.train_seconds, 2),
                "total_seconds": round(time.perf_counter() - started, 2),
                "n_features": int(run.predictor.network.num_features),
            }
            table[name]["models"][row] = figures
            print(name, row, figures, flush=True)
    return table


def elpv_subset(n_images: int):
    """ELPV, or a stratified random subset of ``n_images`` cells (seed 0)."""
    from sklearn.model_selection import train_test_split

    import sigclass as sc

    dataset = sc.load_dataset("elpv")
    if not n_images or n_images >= len(dataset):
        return dataset
    keep, _ = train_test_split(np.arange(len(dataset)), train_size=n_images, random_state=0,
                               stratify=dataset.labels)
    return dataset.subset(np.sort(keep))


def image_table(elpv_images: int, out: Path) -> dict:
    from sigclass.config import RunConfig
    from sigclass.workflows.compare import Entry, compare

    entries = [Entry("headless_lite0", "headless", "efficientnet_lite0"),
               Entry("hog_lbp_svm", "headless", "hog_lbp", {"head": "rbf_svm"})]
    config = RunConfig(resize="squash", val_size=0.1, test_size=0.25, seed=0)
    sources = {"fridge": (str(FRIDGE), "fridgeObjects, 4 classes"),
               "elpv": (elpv_subset(elpv_images), f"ELPV, 4 classes ({elpv_images or 'all'} cells)")}
    table: dict = {}
    for name, (data, title) in sources.items():
        started = time.perf_counter()
        board = compare(data, out / name, entries=entries, config=config, title=title, progress=False)
        print(board.to_markdown(), flush=True)
        table[name] = {
            "title": title, "seconds": round(time.perf_counter() - started, 1),
            "rows": {row["name"]: {k: row.get(k) for k in ("model", "accuracy", "balanced_accuracy",
                                                            "f1_macro", "train_seconds", "items_per_second")}
                     for row in board.rows},
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("signals", "images"))
    parser.add_argument("--elpv-images", type=int, default=600,
                        help="stratified ELPV subset size; 0 for all cells")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    import sigclass

    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__, "sigclass": sigclass.__version__,
                          "cuda": torch.cuda.is_available()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sigclass-baselines-") as tmp:
        if args.only in (None, "signals"):
            results["signals"] = signal_table(SIGNAL_DATASETS, Path(tmp) / "signals")
        if args.only in (None, "images"):
            results["images"] = image_table(args.elpv_images, Path(tmp) / "images")
    results["signals_published"] = PUBLISHED_SIGNALS
    results["images_published"] = PUBLISHED_IMAGES
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
