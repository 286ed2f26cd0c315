"""Frozen-feature variants on ELPV beyond the defaults: backbones, input size, crop, heads.

A screen of what else a frozen ImageNet network gives ELPV's four classes and ``elpv:binary``,
on the demo's split (75/25, 10 % of the training part for validation, seed 0; the head learns
from train + validation). Every variant uses stage pooling (the default) and the four flips of
each image (the group ``tta=auto`` chose on this split), averaged. The variants:

- the default preprocessing of EfficientNet-Lite2 (260 px, centre crop 0.89);
- the whole cell squashed to 260, 320 and 384 px (``crop_pct=1``: nothing cut off the edges);
- Lite0, Lite1 and Lite2, each whole-cell, alone and concatenated.

Each gets two heads with fixed settings, so the screen takes minutes rather than hours: logistic
regression (C = 0.01, the value the default head's cross-validation picks on this split) and an
RBF SVM (C = 10), both on standardized features with square-root class weights. The ``default``
rows are what ``sigclass train DATA --mode headless`` does: the default head with its
cross-validated C, and the views ``tta=auto`` chooses for that task.

Features are cached per view (:class:`~sigclass.training.image_featurizer.Featurizer`), so a
second run only fits heads. Writes bench/results/featurizer_variants.json.

    python bench/bench_featurizer_variants.py
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "featurizer_variants.json"
FLIPS = ("id", "h", "v", "hv")
# name -> [(backbone, image_size, crop_pct)]; None keeps the network's own
VARIANTS = {
    "lite2, default preprocessing": [("efficientnet_lite2", None, None)],
    "lite2, whole cell 260 px": [("efficientnet_lite2", None, 1.0)],
    "lite2, whole cell 320 px": [("efficientnet_lite2", 320, 1.0)],
    "lite2, whole cell 384 px": [("efficientnet_lite2", 384, 1.0)],
    "lite0, whole cell 224 px": [("efficientnet_lite0", None, 1.0)],
    "lite1, whole cell 240 px": [("efficientnet_lite1", None, 1.0)],
    "lite0 + lite2, whole cell": [("efficientnet_lite0", None, 1.0), ("efficientnet_lite2", None, 1.0)],
    "lite0 + lite1 + lite2, whole cell": [("efficientnet_lite0", None, 1.0),
                                          ("efficientnet_lite1", None, 1.0),
                                          ("efficientnet_lite2", None, 1.0)],
}
HEADS = {"logreg C=0.01": ("logreg", 0.01), "rbf_svm C=10": ("rbf_svm", 10.0)}


def screen(head: str, C: float, features, labels, fit, test) -> dict:
    """Test accuracy of a fixed-setting head (standardized features, square-root class weights)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    classes, counts = np.unique(labels[fit], return_counts=True)
    weights = dict(zip(classes, np.sqrt(counts.max() / counts), strict=True))
    clf = (LogisticRegression(C=C, max_iter=3000, class_weight=weights) if head == "logreg"
           else SVC(C=C, kernel="rbf", class_weight=weights))
    started = time.perf_counter()
    model = make_pipeline(StandardScaler(), clf).fit(features[fit], labels[fit])
    predicted = model.predict(features[test])
    return {"accuracy": float(np.mean(predicted == labels[test])),
            "balanced_accuracy": float(balanced_accuracy_score(labels[test], predicted)),
            "head_seconds": time.perf_counter() - started}


def main() -> None:
    from sigclass.data.views import TTA_GROUPS
    from sigclass.training.image_featurizer import Featurizer

    module_spec = importlib.util.spec_from_file_location("bench_featurizer", ROOT / "bench" / "bench_featurizer.py")
    bench_featurizer = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench_featurizer)  # its demo split, and its score(): the default head

    rows = []
    results = {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "rows": rows}
    cache: dict[tuple, np.ndarray] = {}
    for data_name in ("elpv", "elpv:binary"):
        files, labels, fit, test = bench_featurizer.demo_split(data_name)
        for name, specs in VARIANTS.items():
            for spec in specs:
                if spec not in cache:  # the same cells in both tasks: featurize once
                    featurizer = Featurizer(spec[0], image_size=spec[1], crop_pct=spec[2],
                                            pooling="stages").fit()
                    cache[spec] = featurizer.view_features(files, FLIPS).mean(axis=0)
            features = np.concatenate([cache[spec] for spec in specs], axis=1)
            for head_name, (head, C) in HEADS.items():
                row = {"data": data_name, "variant": name, "head": head_name,
                       "n_features": int(features.shape[1]),
                       **screen(head, C, features, labels, fit, test)}
                rows.append(row)
                print(row, flush=True)
                OUT.write_text(json.dumps(results, indent=2))
        auto = Featurizer("efficientnet_lite2", tta="auto", pooling="stages").fit(
            [files[i] for i in fit], labels[fit])
        per_view = auto.view_features(files, TTA_GROUPS[auto.tta_]).mean(axis=0)
        row = {"data": data_name, "variant": "default", "head": "default (logreg, cross-validated C)",
               "tta": auto.tta_, "tta_scores": auto.tta_scores_,
               **bench_featurizer.score(per_view, labels, fit, test, cv_all=False)}
        rows.append(row)
        print(row, flush=True)
        OUT.write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
