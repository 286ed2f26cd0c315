"""Classification metrics, computed with scikit-learn."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write, write_json
from ..exceptions import DataError, Problem
from .plots import plot_confusion_matrix


def classification_metrics(
    y_true, y_pred, classes: list[str], proba: np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro precision/recall/F1, per-class report, confusion matrix
    and, when probabilities are given and every class occurs, one-vs-rest ROC-AUC.

    Args:
        y_true, y_pred: Class names.
        classes: All class names, in the model's order.
        proba: ``(n, n_classes)`` probabilities in ``classes`` order.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        classification_report,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average="macro", zero_division=0
    )
    metrics: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "per_class": classification_report(
            y_true, y_pred, labels=classes, output_dict=True, zero_division=0
        ),
        "confusion_matrix": {
            "labels": list(classes),
            "matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        },
        "roc_auc_ovr": None,
    }
    present = set(y_true)
    if proba is not None and len(present) == len(classes) and len(classes) >= 2:
        if len(classes) == 2:
            positive = np.asarray(y_true == classes[1], dtype=int)
            metrics["roc_auc_ovr"] = float(roc_auc_score(positive, proba[:, 1]))
        else:
            metrics["roc_auc_ovr"] = float(
                roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
            )
    return metrics


def evaluate(
    predictor, dataset, indices=None, out: str | Path | None = None, batch_size: int = 64,
    progress: bool = False, *, return_proba: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], np.ndarray]:
    """Score ``predictor`` on a dataset (or its items at ``indices``) and write the results.

    Args:
        predictor: A :class:`~sigclass.Predictor`.
        dataset: An image or signal dataset with labels.
        indices: Positions to evaluate (e.g. the split's test part); all items when ``None``.
        out: Folder for ``metrics.json``, ``confusion_matrix.json``/``.png`` and
            ``predictions.csv``; nothing is written when ``None``.
        batch_size: Inference batch size.
        progress: Show a progress bar.
        return_proba: Also return the class probabilities, ``(n_items, n_classes)``.

    Returns:
        The metrics dict, with ``items_per_second`` (inference throughput); with
        ``return_proba``, the pair ``(metrics, proba)``.
    """
    subset = dataset if indices is None else dataset.subset(indices)
    unknown = sorted(set(subset.labels) - set(predictor.classes))
    if unknown:
        raise DataError(Problem("labels", f"classes {unknown} are not among the model's classes "
                                f"{predictor.classes}; evaluate on data with the same classes"))
    started = time.perf_counter()
    proba = predictor.predict_proba(subset.model_inputs(), batch_size=batch_size, progress=progress)
    elapsed = time.perf_counter() - started
    y_pred = np.asarray(predictor.classes, dtype=object)[proba.argmax(axis=1)]
    metrics = classification_metrics(subset.labels, y_pred, predictor.classes, proba)
    metrics["items_per_second"] = len(subset) / elapsed if elapsed > 0 else None
    if out is not None:
        out = Path(out)
        write_json(out / "metrics.json", metrics)
        write_json(out / "confusion_matrix.json", metrics["confusion_matrix"])
        plot_confusion_matrix(metrics["confusion_matrix"], out / "confusion_matrix.png")
        write_predictions(out / "predictions.csv", subset.ids, subset.labels, y_pred, proba, predictor.classes)
    return (metrics, proba) if return_proba else metrics


def write_predictions(path: Path, ids, y_true, y_pred, proba: np.ndarray, classes: list[str]) -> None:
    """One row per item: id, true and predicted class, probability of each class."""
    import pandas as pd

    frame = pd.DataFrame({"id": list(ids), "label": list(y_true), "predicted": list(y_pred)})
    for i, name in enumerate(classes):
        frame[f"p_{name}"] = proba[:, i]
    atomic_write(path, lambda p: frame.to_csv(p, index=False))
