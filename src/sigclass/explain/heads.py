"""Class weights of a linear scikit-learn head over pooled features, for headless CAM.

A headless head is a ``Pipeline`` (``StandardScaler`` + classifier). The decision function of a
linear classifier on scaled features is ``W ((x - m) / s) + b = (W / s) x + const``, so the
per-feature weights ``W / s`` applied to the feature map give the class activation map (the
constant shifts every location equally). Probability calibration (linear SVM, ridge) is a
monotone map of the decision function, so the weights still rank locations the same way.
"""

from __future__ import annotations

import numpy as np

from ..exceptions import ExplainError

LINEAR_HEADS = "logreg, linear_svm or ridge"


def linear_head_weights(head, classes: list[str], model_name: str = "the model") -> np.ndarray:
    """Weights ``(n_classes, n_features)`` of a linear head, rows in ``classes`` order.

    Raises:
        ExplainError: The head (or a step before it) is not linear.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    estimator = getattr(head, "best_estimator_", head)
    steps = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    factor = None
    for step in steps[:-1]:
        if step is None or step == "passthrough":
            continue
        if not isinstance(step, StandardScaler):
            raise ExplainError(_not_linear(model_name, type(step).__name__))
        scale = step.scale_ if step.with_std and step.scale_ is not None else None
        if scale is not None:
            inverse = 1.0 / np.asarray(scale, dtype=np.float64)
            factor = inverse if factor is None else factor * inverse
    clf = steps[-1]
    weights, clf_classes = _coefficients(clf, model_name)
    if factor is not None:
        weights = weights * factor[None, :]
    names = [str(c) for c in clf_classes]
    missing = [c for c in classes if c not in names]
    if missing:
        raise ExplainError(f"The head of {model_name} does not know the classes {missing}; the "
                           "model folder is inconsistent. Retrain or restore it.")
    return weights[[names.index(c) for c in classes]].astype(np.float32)


def _coefficients(clf, model_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(coef per class, classes)`` of a linear classifier or a calibrated one."""
    inner = clf
    if hasattr(clf, "calibrated_classifiers_"):
        members = [c.estimator for c in clf.calibrated_classifiers_]
        coefs = [getattr(m, "coef_", None) for m in members]
        if any(c is None for c in coefs):
            raise ExplainError(_not_linear(model_name, type(members[0]).__name__))
        # Several members (ensemble calibration) average their decision functions.
        coef = np.mean([np.asarray(c, dtype=np.float64) for c in coefs], axis=0)
        inner = members[0]
    else:
        coef = getattr(clf, "coef_", None)
        if coef is None or not hasattr(clf, "decision_function"):
            raise ExplainError(_not_linear(model_name, type(clf).__name__))
        coef = np.asarray(coef, dtype=np.float64)
    classes = np.asarray(getattr(clf, "classes_", getattr(inner, "classes_", None)))
    if coef.ndim == 1:
        coef = coef[None, :]
    if coef.shape[0] == 1 and len(classes) == 2:  # binary: one decision function for class 1
        coef = np.concatenate([-coef, coef])
    if coef.shape[0] != len(classes):
        raise ExplainError(f"The head of {model_name} has {coef.shape[0]} weight rows for "
                           f"{len(classes)} classes; it cannot be explained with CAM.")
    return coef, classes


def _not_linear(model_name: str, step: str) -> str:
    return (f"No class activation map for {model_name}: its headless classifier ({step}) is not "
            f"linear in the pooled features. CAM needs a linear head ({LINEAR_HEADS}); retrain "
            "with `--head logreg`, or fine-tune the network (`--mode finetune`) for CAM or Grad-CAM.")
