"""The out-of-distribution score of a trained predictor, fitted on its training items' pooled
features and thresholded on the validation part (see :mod:`sigclass.evaluation.ood`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..evaluation.ood import (
    MAX_REFERENCE,
    fit_reference,
    fit_threshold,
    leave_one_out_scores,
    scores,
)

logger = logging.getLogger(__name__)


def reference_sample(n: int, seed: int) -> np.ndarray:
    """The positions of the training items kept in the reference: all of them, or a seeded
    sample of :data:`MAX_REFERENCE`."""
    if n <= MAX_REFERENCE:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_REFERENCE, replace=False))


def fit_ood(cfg, predictor, reference: np.ndarray, labels, held_out: np.ndarray | None) -> dict[str, Any]:
    """Set ``predictor.ood`` from the pooled features of training items (``reference``, their
    class names ``labels``) and of held-out in-distribution items (``held_out``); returns the
    summary recorded in ``run.json``."""
    method = cfg.ood
    if method == "off":
        return {"method": "off"}
    reference = np.asarray(reference, dtype=np.float32)
    if len(reference) < 2:
        return _skip(predictor, f"{len(reference)} training item(s); the reference needs 2")
    index = {c: i for i, c in enumerate(predictor.classes)}
    y = np.array([index[c] for c in labels], dtype=int)
    k = int(min(cfg.ood_k, len(reference) - 1)) if method == "knn" else None
    tensors = fit_reference(reference, y, method)
    held = scores(tensors, method, k, held_out) if held_out is not None and len(held_out) else np.zeros(0)
    found = fit_threshold(held, leave_one_out_scores(tensors, method, k, reference))
    spec = {"method": method, "k": k, **found, "n_reference": int(len(reference)),
            "dim": int(reference.shape[1])}
    predictor.ood, predictor.ood_reference = spec, tensors
    level = logging.WARNING if "leave-one-out" in found["calibrated_on"] else logging.INFO
    logger.log(level, "Unknown inputs: %s score above %.4g (threshold fitted on %s)", method,
               found["threshold"], found["calibrated_on"])
    return dict(spec)


def _skip(predictor, reason: str) -> dict[str, Any]:
    logger.warning("No out-of-distribution score: %s", reason)
    predictor.ood = predictor.ood_reference = None
    return {"method": None, "reason": reason}


def fit_ood_network(cfg, predictor, dataset, parts) -> dict[str, Any]:
    """The OOD score of a network: the pooled features of its training part (a sample of
    :data:`MAX_REFERENCE` at most) and of its validation part."""
    if cfg.ood == "off":
        return {"method": "off"}
    train = dataset.subset(np.asarray(parts["train"])[reference_sample(len(parts["train"]), cfg.seed)])
    val = dataset.subset(parts["val"])
    try:
        reference = predictor.features(train.model_inputs())
        held_out = predictor.features(val.model_inputs()) if len(val) else None
    except (AttributeError, NotImplementedError, TypeError) as exc:  # no pooled features
        return _skip(predictor, f"the network has no pooled features ({exc})")
    return fit_ood(cfg, predictor, reference, train.labels, held_out)


def ood_test_metrics(predictor, dataset, test) -> dict[str, Any] | None:
    """The share of the test part (in-distribution) under the OOD threshold: the threshold
    was fitted so that 95 % of such items pass."""
    if predictor.ood is None or not len(test):
        return None
    part = dataset.subset(test)
    found = predictor.ood_scores(predictor.features(part.model_inputs()))
    return {"method": predictor.ood["method"], "threshold": predictor.ood["threshold"],
            "target_pass_rate": predictor.ood["tpr"],
            "test_pass_rate": float(np.mean(found <= predictor.ood["threshold"])), "n": int(len(found))}
