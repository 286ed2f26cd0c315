"""Prediction sets that hold the true class with a chosen probability: split conformal
prediction with adaptive prediction sets (APS; Romano, Sesia and Candès, *Classification with
Valid and Adaptive Coverage*, NeurIPS 2020), randomization off so that a model's sets are
deterministic.

The score of an item is the probability mass of the classes ranked above its true class (the
classes sorted by falling probability, ties by class order): APS's score ``mass above + U * p``
with its uniform draw ``U`` at 0. (At ``U = 1``, the mass at or above, a confidently right item
scores its own confidence, so a model that is right and sure most of the time gets a threshold
near 1 and sets of nearly every class: on fridgeObjects sets of 2.1 classes of 4 at 96 %
accuracy, against 1 at ``U = 0``.) On ``n`` held-out calibration items the threshold ``qhat`` is
the ``ceil((n + 1) * coverage) / n`` empirical quantile of their scores; an item's set is every
class whose score is at most ``qhat``, so it always holds the most probable class (score 0). The
guarantee holds for any fixed score: if calibration and test items are exchangeable, a set holds
the true class with probability at least ``coverage``. A model more often right than
``coverage`` gets ``qhat = 0`` and sets of one class: its coverage is then its accuracy.

With fewer than ``coverage / (1 - coverage)`` calibration items (9 for 0.9) the quantile level
is above 1: no threshold can promise the coverage, so ``qhat`` is ``None`` and every set is all
classes (which holds the true class always); the reason is recorded with the threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

METHOD = "aps"
TOLERANCE = 1e-9  # cumulative sums of the same probabilities may differ in the last bits


def aps_scores(proba: np.ndarray) -> np.ndarray:
    """The score of every class of every row: the probability mass of the classes ranked above
    it (0 for the most probable class)."""
    proba = np.asarray(proba, dtype=np.float64)
    order = np.argsort(-proba, axis=1, kind="stable")
    ranked = np.take_along_axis(proba, order, axis=1)
    above = np.cumsum(ranked, axis=1) - ranked
    above[:, 0] = 0.0  # exactly, whatever the rounding of the subtraction
    scores = np.empty_like(proba)
    np.put_along_axis(scores, order, above, axis=1)
    return scores


def fit_threshold(proba: np.ndarray, y: np.ndarray, coverage: float) -> dict[str, Any]:
    """The threshold ``qhat`` of the calibration items ``proba`` (rows) with class indices ``y``.

    Returns:
        ``{"method", "coverage", "qhat", "n"}``, and ``reason`` when ``qhat`` is ``None`` (every
        set is then all classes).
    """
    y = np.asarray(y, dtype=int)
    n = int(len(y))
    found: dict[str, Any] = {"method": METHOD, "coverage": float(coverage), "qhat": None, "n": n}
    rank = math.ceil((n + 1) * coverage - 1e-9)  # (n + 1) * coverage may be 9.000...01
    if rank > n:
        needed = math.ceil(coverage / (1 - coverage) - 1e-9)
        return {**found, "reason": f"{n} calibration items; coverage {coverage:g} needs at least "
                                   f"{needed}, so every prediction set is all classes"}
    scores = aps_scores(proba)[np.arange(n), y]
    found["qhat"] = float(np.sort(scores)[rank - 1])
    return found


def prediction_masks(proba: np.ndarray, qhat: float | None) -> np.ndarray:
    """A boolean ``(n_items, n_classes)`` membership of the prediction sets."""
    proba = np.asarray(proba, dtype=np.float64)
    if qhat is None:
        return np.ones(proba.shape, dtype=bool)
    return aps_scores(proba) <= qhat + TOLERANCE


def prediction_sets(proba: np.ndarray, classes: list[str], qhat: float | None) -> list[list[str]]:
    """Every row's prediction set: class names, most probable first."""
    masks = prediction_masks(proba, qhat)
    order = np.argsort(-np.asarray(proba, dtype=np.float64), axis=1, kind="stable")
    return [[classes[j] for j in row_order if mask[j]] for row_order, mask in zip(order, masks, strict=True)]


def coverage_metrics(proba: np.ndarray, y: np.ndarray, classes: list[str], threshold: dict[str, Any]) -> dict[str, Any]:
    """Empirical coverage and mean set size of the sets of ``proba`` for the class indices ``y``,
    overall and per true class, beside the threshold they were made with."""
    y = np.asarray(y, dtype=int)
    masks = prediction_masks(proba, threshold.get("qhat"))
    covered = masks[np.arange(len(y)), y]
    sizes = masks.sum(axis=1)
    per_class = {}
    for index, name in enumerate(classes):
        inside = y == index
        if inside.any():
            per_class[name] = {"coverage": float(covered[inside].mean()),
                               "mean_set_size": float(sizes[inside].mean()), "n": int(inside.sum())}
    return {"target_coverage": threshold["coverage"], "qhat": threshold.get("qhat"),
            "n_calibration": threshold.get("n"), "coverage": float(covered.mean()),
            "mean_set_size": float(sizes.mean()), "n": int(len(y)), "per_class": per_class}
