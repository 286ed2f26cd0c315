"""How far an input lies from the training data: out-of-distribution scores on a network's
pooled features, and the threshold above which an input is called *unknown*.

Two scores, both fitted on the training items' features only (no negative examples):

- ``knn`` (default): the distance from the L2-normalized feature vector to its ``k``-th nearest
  neighbour among the normalized training features (Sun, Ming, Zhu and Li, *Out-of-Distribution
  Detection with Deep Nearest Neighbors*, ICML 2022). No assumption on the shape of the classes;
  the reference bank is the normalized training features themselves.
- ``mahalanobis``: the smallest Mahalanobis distance to a class mean under one covariance shared
  by the classes (Lee, Lee, Lee and Shin, NeurIPS 2018), on the raw pooled features. The
  covariance is the within-class scatter plus ``SHRINKAGE`` times its mean variance on the
  diagonal (with fewer items than features the scatter alone is singular); it is kept as its
  leading eigenvectors, which is exact when they span the scatter (at most ``MAX_RANK`` of them).

``knn`` is the default. On the bench (``bench/results/ood.json``, README "Unknown inputs") it
separates every far set (another image dataset, noise, blank images, other UCR series) with an
AUROC of 1.0, while ``mahalanobis`` drops to 0.990 and 0.996 on noise and blank images for the
ELPV model: its covariance is estimated from a few hundred items in thousands of dimensions and
rests on the shrinkage. It needs no class structure and costs one matrix product. ``mahalanobis``
is better at near shifts of signals on MiniRocket features (a flat-lined channel: AUROC 0.92
against 0.84; swapped sensors: 1.00 against 0.96), so it stays available (``--ood mahalanobis``).

The threshold is fitted on held-out in-distribution items (the validation part) so that a share
``tpr`` of them (0.95) pass: it is the ``ceil((n + 1) * tpr)``-th smallest of their ``n`` scores,
the split-conformal quantile, so a new in-distribution item passes with probability at least
``tpr``. With fewer than ``tpr / (1 - tpr)`` (19) held-out items that rank does not exist; the
leave-one-out scores of the reference items (each against the others) then join them, and the
threshold says so in its ``calibrated_on``. For a network those scores are optimistic (it was
fitted to the training items, whose features lie closer together than new items'), so fewer than
95 % of new items may pass: a larger validation part (``--val-size``) avoids it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

METHODS = ("knn", "mahalanobis")
DEFAULT_METHOD = "knn"
DEFAULT_K = 5
TPR = 0.95
SHRINKAGE = 0.1
MAX_RANK = 512
MAX_REFERENCE = 10_000  # reference items kept (a seeded sample of larger training parts)
_CHUNK = 1024
KNN_RECHECK = 16  # candidate neighbours beyond k whose distances are recomputed exactly
_EXACT_CHUNK = 64  # queries per float64 recomputation (64 x (k + 16) x features)


def normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def fit_reference(features: np.ndarray, labels: np.ndarray, method: str) -> dict[str, np.ndarray]:
    """The tensors a score needs, from the training items' ``features`` (rows) and their class
    indices ``labels``."""
    features = np.asarray(features, dtype=np.float64)
    if method == "knn":
        return {"bank": normalize(features)}
    if method != "mahalanobis":
        raise ValueError(f"unknown OOD method {method!r}; expected one of {METHODS}")
    labels = np.asarray(labels, dtype=int)
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centered = features - means[np.searchsorted(classes, labels)]
    _, singular, vt = np.linalg.svd(centered / math.sqrt(len(features)), full_matrices=False)
    variances = singular ** 2
    floor = SHRINKAGE * max(float(variances.sum()) / features.shape[1], 1e-12)
    rank = int(min(MAX_RANK, np.sum(variances > 1e-9 * max(variances.max(initial=0), 1e-30)) or 1))
    return {"means": means.astype(np.float32), "basis": vt[:rank].T.astype(np.float32),
            "inverse_variances": (1.0 / (variances[:rank] + floor)).astype(np.float32),
            "residual_precision": np.array([1.0 / floor], dtype=np.float32)}


def scores(reference: dict[str, np.ndarray], method: str, k: int | None,
           features: np.ndarray) -> np.ndarray:
    """The OOD score of every row of ``features`` (larger: farther from the training data)."""
    features = np.asarray(features, dtype=np.float32)
    if method == "knn":
        return _knn(reference["bank"], normalize(features), int(k or DEFAULT_K))
    return _mahalanobis(reference, features)


def _knn(bank: np.ndarray, queries: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """The distance of each query to its ``k``-th nearest row of ``bank`` (unit rows).

    Candidates come from float32 dot products (``|a - b|^2 = 2 - 2 a.b``); the distances of the
    nearest :data:`KNN_RECHECK` more than ``k`` are then computed again from the differences in
    float64. The dot-product form loses most of its digits for close neighbours (a distance of
    0.02 keeps about three), and its rounding depends on how many queries share a matrix product,
    so the same input would score differently alone and in a batch.
    """
    k = min(k, len(bank) - (1 if exclude_self else 0))
    candidates = min(len(bank), k + KNN_RECHECK)
    found = np.empty(len(queries), dtype=np.float64)
    for begin in range(0, len(queries), _CHUNK):
        block = queries[begin:begin + _CHUNK]
        squared = 2.0 - 2.0 * (block @ bank.T)
        rows = np.arange(len(block))
        if exclude_self:
            squared[rows, begin + rows] = np.inf
        nearest = np.argpartition(squared, candidates - 1, axis=1)[:, :candidates]
        for start in range(0, len(block), _EXACT_CHUNK):
            part = slice(start, start + _EXACT_CHUNK)
            neighbours = bank[nearest[part]].astype(np.float64)
            exact = ((block[part, None, :].astype(np.float64) - neighbours) ** 2).sum(axis=2)
            if exclude_self:
                exact[nearest[part] == (begin + rows[part])[:, None]] = np.inf
            found[begin + start:begin + start + len(exact)] = np.partition(exact, k - 1, axis=1)[:, k - 1]
    return np.sqrt(found)


def _mahalanobis(reference: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    basis = reference["basis"].astype(np.float64)
    inverse = reference["inverse_variances"].astype(np.float64)
    residual = float(reference["residual_precision"][0])
    best = np.full(len(features), np.inf)
    for mean in reference["means"].astype(np.float64):
        z = features.astype(np.float64) - mean
        q = z @ basis
        inside = (q ** 2 * inverse).sum(axis=1)
        outside = np.maximum((z ** 2).sum(axis=1) - (q ** 2).sum(axis=1), 0.0) * residual
        best = np.minimum(best, inside + outside)
    return np.sqrt(best)


def leave_one_out_scores(reference: dict[str, np.ndarray], method: str, k: int | None,
                         features: np.ndarray) -> np.ndarray:
    """The scores of the reference items themselves: for ``knn`` each against the others (its
    own row left out); for ``mahalanobis`` in-sample (slightly optimistic: each item helped
    fit the means and covariance)."""
    if method == "knn":
        return _knn(reference["bank"], reference["bank"], int(k or DEFAULT_K), exclude_self=True)
    return _mahalanobis(reference, np.asarray(features, dtype=np.float32))


def fit_threshold(held_out: np.ndarray, extra: np.ndarray | None = None,
                  tpr: float = TPR) -> dict[str, Any]:
    """The score under which a share ``tpr`` of in-distribution items fall, from the held-out
    scores ``held_out`` (and, when they are too few, the leave-one-out scores ``extra``).

    Returns:
        ``{"threshold", "tpr", "n", "calibrated_on"}``.
    """
    held_out = np.asarray(held_out, dtype=np.float64)
    needed = math.ceil(tpr / (1 - tpr) - 1e-9)
    source = f"{len(held_out)} validation item(s)"
    pool = held_out
    if len(held_out) < needed and extra is not None and len(extra):
        pool = np.concatenate([held_out, np.asarray(extra, dtype=np.float64)])
        source += (f" (fewer than the {needed} a {tpr:g} quantile needs) and the leave-one-out "
                   f"scores of {len(extra)} training item(s)")
    n = len(pool)
    if n == 0:
        raise ValueError("no in-distribution items to fit the OOD threshold on")
    rank = min(math.ceil((n + 1) * tpr - 1e-9), n)
    return {"threshold": float(np.sort(pool)[rank - 1]), "tpr": float(tpr), "n": int(n),
            "calibrated_on": source}


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Probability that an out-of-distribution item scores above an in-distribution one (ties
    count half): 1 separates perfectly, 0.5 is chance."""
    inside, outside = np.asarray(inside, float), np.asarray(outside, float)
    both = np.concatenate([inside, outside])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_values = both[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(average, counts)
    above = ranks[len(inside):].sum() - len(outside) * (len(outside) + 1) / 2
    return float(above / (len(inside) * len(outside)))


def fpr_at_tpr(inside: np.ndarray, outside: np.ndarray, tpr: float = TPR) -> float:
    """Share of out-of-distribution items that pass a threshold keeping ``tpr`` of the
    in-distribution ones."""
    inside = np.sort(np.asarray(inside, float))
    cut = inside[min(math.ceil(tpr * len(inside)) - 1, len(inside) - 1)]
    return float(np.mean(np.asarray(outside, float) <= cut))


def score_records(predictor, proba: np.ndarray, ood: np.ndarray | None,
                  reject_unknown: bool = False) -> list[dict[str, Any]]:
    """The records of :meth:`~sigclass.Predictor.score` and the service from probabilities and
    OOD scores: class (``None`` for an unknown input with ``reject_unknown``), confidence,
    probabilities, prediction set, OOD score and whether it is unknown."""
    sets = predictor.prediction_sets(proba)
    unknown = predictor.unknown(ood) if ood is not None else None
    records = []
    for i, row in enumerate(np.asarray(proba)):
        best = int(np.argmax(row))
        is_unknown = None if unknown is None else bool(unknown[i])
        records.append({
            "class": None if (reject_unknown and is_unknown) else predictor.classes[best],
            "confidence": float(row[best]),
            "probabilities": {c: float(p) for c, p in zip(predictor.classes, row, strict=True)},
            "prediction_set": sets[i] if sets is not None else None,
            "ood_score": None if ood is None else float(ood[i]),
            "unknown": is_unknown})
    return records
