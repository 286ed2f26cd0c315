"""How far a model's confidence can be believed: temperature scaling, the expected calibration
error, the Brier score (the reliability diagram is
:func:`sigclass.evaluation.plots.plot_reliability`).

Temperature scaling (Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017) divides a
network's logits by one number fitted on the validation part by minimizing the log-loss; the
predicted classes do not change, only how confident the probabilities are. With fewer than
:data:`MIN_ITEMS` validation items, or when the validation part leaves the fit unbounded (every
item right, so the log-loss keeps falling as the temperature goes to 0, or a fit that runs to a
bound of :data:`BOUNDS`), the temperature stays 1 and the reason is recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_ITEMS = 20  # fewer validation items than this: no temperature is fitted
BOUNDS = (0.05, 20.0)  # a fitted temperature on a bound means the fit is not to be trusted
BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return exp / exp.sum(axis=1, keepdims=True)


def log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_proba = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_proba[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The temperature that minimizes the log-loss of ``logits / T`` for the class indices ``y``.

    Returns:
        ``(temperature, summary)``; the summary holds the validation log-loss before and after,
        the number of items, and ``reason`` when the temperature was left at 1.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    summary: dict[str, Any] = {"n": int(len(y)), "method": "temperature scaling"}
    if len(y) < MIN_ITEMS:
        return 1.0, {**summary, "reason": f"fewer than {MIN_ITEMS} validation items"}
    before = log_loss(logits, y)
    if (logits.argmax(axis=1) == y).all():  # the log-loss then falls all the way to T = 0
        return 1.0, {**summary, "log_loss": before,
                     "reason": "every validation item is right, so the log-loss has no minimum"}
    found = minimize_scalar(lambda log_t: log_loss(logits / np.exp(log_t), y),
                            bounds=tuple(np.log(BOUNDS)), method="bounded")
    temperature = float(np.exp(found.x))
    if not BOUNDS[0] * 1.01 < temperature < BOUNDS[1] / 1.01:
        return 1.0, {**summary, "log_loss": before,
                     "reason": f"the fit ran to the bound {temperature:.3g}: the validation part "
                               "cannot tell how confident the network should be"}
    return temperature, {**summary, "log_loss_before": before,
                         "log_loss": log_loss(logits / temperature, y)}


def uncalibrated(proba: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities of ``logits`` from those of ``logits / temperature`` (softmax is
    invariant to a constant per row, so ``T * log p`` are logits)."""
    if temperature == 1.0:
        return proba
    return softmax(temperature * np.log(np.clip(proba, 1e-300, None)))


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Top-label ECE: the mean gap between confidence and accuracy over ``bins`` equal-width
    confidence bins, weighted by their share of items."""
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def brier_score(proba: np.ndarray, y: np.ndarray) -> float:
    """The mean squared distance between the probabilities and the one-hot true class (0 is
    perfect, 2 the worst)."""
    proba = np.asarray(proba, dtype=np.float64)
    target = np.zeros_like(proba)
    target[np.arange(len(proba)), np.asarray(y)] = 1.0
    return float(((proba - target) ** 2).sum(axis=1).mean())


def calibration_metrics(proba: np.ndarray, y: np.ndarray, temperature: float | None = None) -> dict[str, Any]:
    """ECE and Brier score of ``proba``; with a network's ``temperature``, also of the
    probabilities before temperature scaling (``*_uncalibrated``)."""
    metrics: dict[str, Any] = {"ece": expected_calibration_error(proba, y), "brier": brier_score(proba, y),
                               "bins": BINS}
    if temperature is not None:
        raw = uncalibrated(proba, temperature)
        metrics.update(temperature=float(temperature), ece_uncalibrated=expected_calibration_error(raw, y),
                       brier_uncalibrated=brier_score(raw, y))
    return metrics
