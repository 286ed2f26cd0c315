"""The frozen featurizer's options on ELPV and fridgeObjects: pooled stages and test-time views.

For each dataset, on the demo's split (75/25, 10 % of the training part for validation, seed 0;
the headless head learns from train + validation), the default headless backbone's features
(EfficientNet-Lite2, cached per view), pooled from the final map (``final``) or from the last
stages too (``stages``, the default), are averaged over each TTA group (``none``, ``hflip``,
``flips``, ``dihedral``) and given the default head (logistic regression, cross-validated C,
square-root class weights on skewed classes). ``auto`` is what ``sigclass train DATA --mode
headless`` does: the group chosen by :func:`sigclass.training.tta.choose_tta`. Small sets
(fridgeObjects) are also scored by 5-fold cross-validation over all items, which is less noisy
than their 33 test photos.

Writes bench/results/featurizer.json.

    python bench/bench_featurizer.py [--datasets elpv fridge]
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
OUT = ROOT / "bench" / "results" / "featurizer.json"


def score(features, labels, fit, test, cv_all: bool) -> dict:
    """Test accuracy of the default head; with ``cv_all``, 5-fold CV accuracy over all items."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    from sigclass.training.heads import fit_head
    from sigclass.training.schedule import head_class_weight

    def fitted(index):
        weights, _ = head_class_weight("auto", labels[index])
        return fit_head("auto", features[index], labels[index], 5, 0,
                        {"class_weight": weights} if weights is not None else {})

    started = time.perf_counter()
    model, summary = fitted(fit)
    predicted = model.predict(features[test])
    row = {"accuracy": float(np.mean(predicted == labels[test])),
           "balanced_accuracy": float(balanced_accuracy_score(labels[test], predicted)),
           "head_cv_accuracy": summary["cv_accuracy"], "head_seconds": time.perf_counter() - started}
    if cv_all:
        folds = StratifiedKFold(5, shuffle=True, random_state=0).split(features, labels)
        row["cv5_all_accuracy"] = float(np.mean([np.mean(fitted(a)[0].predict(features[b]) == labels[b])
                                                 for a, b in folds]))
    return row


def demo_split(source: str):
    """``(files, labels, fit, test)`` of the demo's split of ``source`` (75/25, 10 % of the
    training part for validation, seed 0; ``fit`` is train + validation)."""
    from sigclass.config import RunConfig
    from sigclass.workflows.prepare import load_dataset, resolve_split

    data = load_dataset(source)
    cfg = RunConfig(data=source, val_size=0.1, test_size=0.25, seed=0).validate()
    parts = resolve_split(None, cfg, data).indices(data)
    fit, test = np.concatenate([parts["train"], parts["val"]]), parts["test"]
    return [str(p) for p in data.model_inputs()], np.asarray(data.labels), fit, test


def main() -> None:
    from sigclass.data.views import TTA_GROUPS
    from sigclass.modalities import modality_of
    from sigclass.training.image_featurizer import Featurizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    args = parser.parse_args()
    model = modality_of("image").default_model("headless")
    results = json.loads(OUT.read_text()) if OUT.is_file() else {"backbone": model, "rows": []}
    results["rows"] = [r for r in results["rows"] if r["data"] not in args.datasets]
    for name in args.datasets:
        files, labels, fit, test = demo_split(SOURCES[name])
        small = len(files) < 1000
        for pooling in ("final", "stages"):
            featurizer = Featurizer(model, pooling=pooling).fit()
            views = TTA_GROUPS["dihedral"]
            per_view, view_seconds = [], []
            for view in views:  # one view at a time, timed (a second run reads the cache)
                started = time.perf_counter()
                per_view.append(featurizer.view_features(files, (view,))[0])
                view_seconds.append(time.perf_counter() - started)
            per_view = np.stack(per_view)
            started = time.perf_counter()
            auto = Featurizer(model, tta="auto", pooling=pooling).fit([files[i] for i in fit], labels[fit])
            choose_seconds = time.perf_counter() - started
            for group, group_views in TTA_GROUPS.items():
                features = per_view[[views.index(v) for v in group_views]].mean(axis=0)
                row = {"data": name, "pooling": pooling, "tta": group,
                       "n_features": int(features.shape[1]),
                       "featurize_seconds_per_view": float(np.median(view_seconds)),
                       "n_views": len(group_views), **score(features, labels, fit, test, small)}
                if group == auto.tta_:
                    row.update(auto_choice=True, auto_scores=auto.tta_scores_,
                               auto_choose_seconds=choose_seconds)
                results["rows"].append(row)
                print(row, flush=True)
                OUT.write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
