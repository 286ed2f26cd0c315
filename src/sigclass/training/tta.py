"""Test-time views chosen from the data: ``tta="auto"`` of the headless image featurizer.

A group of views (:mod:`sigclass.data.views`) pays for itself only on data with that symmetry;
:func:`choose_tta` compares the groups by how well a linear classifier separates their
view-averaged features on a sample of the training items.
"""

from __future__ import annotations

import logging

import numpy as np

from ..data.views import TTA_GROUPS

logger = logging.getLogger(__name__)

TTA_SAMPLE = 300  # labeled items on which tta="auto" compares the view groups
AUTO_TTA_GROUPS = ("none", "hflip", "flips")  # "dihedral" (8 views) only when asked for
TTA_MARGIN = 0.005  # a group with more views must beat the smaller one by more than this


def choose_tta(featurizer, X, y, seed: int = 0) -> tuple[str, dict[str, float]]:
    """The TTA group whose view-averaged features a linear classifier separates best.

    On a stratified sample of up to :data:`TTA_SAMPLE` items, each group of
    :data:`AUTO_TTA_GROUPS` is scored by the cross-validated accuracy of a ridge classifier
    (standardized features, regularization chosen by efficient leave-one-out); a group with more
    views must beat the best smaller one by more than :data:`TTA_MARGIN`, so a data set without
    the symmetry pays for no extra passes. The views computed here are cached and reused.

    Measured on ELPV's demo split (Lite2, logistic head): no views 75.0 % test accuracy, the
    four flips averaged 78.7 %; fridgeObjects (5-fold CV on all 134 photos): 95.6 % and 97.8 %
    (``bench/bench_featurizer.py``).

    Returns:
        ``(group, {group: cv_accuracy})``.
    """
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    items = featurizer.preprocessor_.as_list(X)
    labels = np.asarray(y)
    index = np.arange(len(items))
    if len(items) > TTA_SAMPLE:
        index, _ = train_test_split(index, train_size=TTA_SAMPLE, stratify=labels, random_state=seed)
    counts = np.unique(labels[index], return_counts=True)[1]
    folds = int(min(5, counts.min()))
    if folds < 2 or len(counts) < 2:
        logger.info("tta='auto': too few labeled items per class to compare views; using 'none'")
        return "none", {}
    views = TTA_GROUPS[AUTO_TTA_GROUPS[-1]]
    per_view = featurizer.view_features([items[i] for i in index], views)
    scores: dict[str, float] = {}
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for group in AUTO_TTA_GROUPS:
        features = per_view[[views.index(v) for v in TTA_GROUPS[group]]].mean(axis=0)
        head = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-1, 5, 13)))
        scores[group] = float(cross_val_score(head, features, labels[index], cv=splitter).mean())
    best = pick_tta_group(scores)
    logger.info("tta='auto' chose %r (cross-validated accuracy on %d items: %s)", best, len(index),
                ", ".join(f"{g} {s:.3f}" for g, s in scores.items()))
    return best, scores


def pick_tta_group(scores: dict[str, float]) -> str:
    """The group of ``scores`` (in order of more views) that wins: each larger group must beat
    the best smaller one by more than :data:`TTA_MARGIN`."""
    groups = list(scores)
    best = groups[0]
    for group in groups[1:]:
        if scores[group] > scores[best] + TTA_MARGIN:
            best = group
    return best
