"""Headless heads and class weights on frozen features: which default serves skewed data.

On the demo's ELPV split (75/25, 10 % of the training part for validation, seed 0) and on
fridgeObjects, the frozen features of the default headless backbone (cached after the first run)
get each head (``logreg`` and ``rbf_svm`` by default; ``--heads`` adds ``linear_svm``) with no class weights, inverse-frequency
weights (``balanced``) and their square root (``sqrt``). Writes bench/results/headless_heads.json:
test accuracy, balanced accuracy and the head's cross-validated accuracy.

    python bench/bench_headless_heads.py [--datasets elpv fridge]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))
SOURCES = {"elpv": "elpv", "fridge": str(FRIDGE)}


def weights_for(kind: str, labels: np.ndarray):
    if kind == "none":
        return None
    if kind == "balanced":
        return "balanced"
    classes, counts = np.unique(labels, return_counts=True)
    inverse = len(labels) / (len(classes) * counts)
    return {c: float(np.sqrt(w)) for c, w in zip(classes, inverse, strict=True)}


def main() -> None:
    from sklearn.metrics import balanced_accuracy_score

    from sigclass.config import RunConfig
    from sigclass.modalities import modality_of
    from sigclass.training.heads import fit_head
    from sigclass.training.image_featurizer import Featurizer
    from sigclass.workflows.prepare import load_dataset, resolve_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--heads", nargs="+", default=["logreg", "rbf_svm"],
                        choices=["logreg", "linear_svm", "rbf_svm"])
    args = parser.parse_args()
    out = ROOT / "bench" / "results" / "headless_heads.json"
    rows = []
    for name in args.datasets:
        data = load_dataset(SOURCES[name])
        cfg = RunConfig(data=SOURCES[name], val_size=0.1, test_size=0.25, seed=0).validate()
        parts = resolve_split(None, cfg, data).indices(data)
        fit = np.concatenate([parts["train"], parts["val"]])
        featurizer = Featurizer(modality_of("image").default_model("headless")).fit()
        features = featurizer.transform(data.model_inputs())
        y = data.labels
        for head in args.heads:
            for kind in ("none", "sqrt", "balanced"):
                started = time.perf_counter()
                weights = weights_for(kind, y[fit])
                params = {} if weights is None else {"class_weight": weights}
                model, summary = fit_head(head, features[fit], y[fit], 5, 0, params)
                predicted = model.predict(features[parts["test"]])
                truth = y[parts["test"]]
                rows.append({"data": name, "head": head, "class_weights": kind,
                             "accuracy": float(np.mean(predicted == truth)),
                             "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
                             "cv_accuracy": summary["cv_accuracy"],
                             "seconds": time.perf_counter() - started})
                print(rows[-1], flush=True)
                out.write_text(json.dumps({"backbone": modality_of("image").default_model("headless"),
                                           "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
