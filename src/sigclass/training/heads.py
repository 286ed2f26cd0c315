"""The classic machine-learning heads of headless mode, their regularization chosen by
cross-validation on the training part.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigError


def make_head(name: str = "logreg", cv_folds: int = 5, seed: int = 0, n_jobs: int | None = None,
              calibration_folds: int = 5, params: dict[str, Any] | None = None):
    """A scikit-learn classifier whose regularization is chosen by cross-validation.

    The estimator is ``GridSearchCV`` over a ``StandardScaler`` + classifier pipeline with
    stratified folds on the training set; its ``best_estimator_`` is the head that gets saved.

    Args:
        name: ``logreg``, ``linear_svm``, ``rbf_svm``, ``random_forest``, ``hist_gb`` or ``ridge``.
        cv_folds: Cross-validation folds.
        seed: Seed of the folds and of randomized models.
        n_jobs: Parallel jobs of the search.
        calibration_folds: Folds of the probability calibration of SVM and ridge heads.
        params: Fixed settings of the classifier that replace its searched values, e.g.
            ``{"C": 0.1}`` (logreg, SVMs) or ``{"alpha": 1.0}`` (ridge).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    grids: dict[str, tuple[Any, dict[str, list]]] = {
        "logreg": (LogisticRegression(max_iter=3000), {"clf__C": [0.001, 0.01, 0.1, 1.0, 10.0]}),
        "linear_svm": (CalibratedClassifierCV(LinearSVC(max_iter=5000, random_state=seed), ensemble=False,
                                              cv=calibration_folds),
                       {"clf__estimator__C": [0.0001, 0.001, 0.01, 0.1, 1.0]}),
        "rbf_svm": (CalibratedClassifierCV(SVC(kernel="rbf", gamma="scale", random_state=seed), ensemble=False,
                                           cv=calibration_folds),
                    {"clf__estimator__C": [0.1, 1.0, 10.0, 100.0]}),
        "random_forest": (RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=n_jobs),
                          {"clf__max_features": ["sqrt", 0.05], "clf__min_samples_leaf": [1, 3]}),
        "hist_gb": (HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=seed),
                    {"clf__learning_rate": [0.05, 0.1], "clf__l2_regularization": [0.0, 1.0]}),
        "ridge": (CalibratedClassifierCV(RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)), ensemble=False,
                                         cv=calibration_folds),
                  {}),
    }
    if name not in grids:
        options = ", ".join(f"'{n}'" for n in grids)
        raise ConfigError(f"The 'head' option must be one of {options}. Got {name!r}.")
    estimator, grid = grids[name]
    grid = _fix_params(name, estimator, grid, params or {})
    pipeline = Pipeline([("scale", StandardScaler()), ("clf", estimator)])
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    return GridSearchCV(pipeline, grid or {"scale__with_mean": [True]}, cv=folds,
                        scoring="accuracy", n_jobs=n_jobs, refit=True)


def _fix_params(name: str, estimator, grid: dict[str, list], params: dict[str, Any]) -> dict[str, list]:
    """The search grid with the values in ``params`` fixed (ridge's ``alpha`` fixes its alphas)."""
    from sklearn.calibration import CalibratedClassifierCV

    # A calibrated classifier's settings are its inner estimator's (a random forest's `estimator`
    # is its tree template, not a wrapped classifier).
    inner = estimator.estimator if isinstance(estimator, CalibratedClassifierCV) else None
    target = inner if inner is not None else estimator
    prefix = "clf__estimator__" if inner is not None else "clf__"
    valid = sorted(target.get_params(deep=False))
    grid = dict(grid)
    for key, value in params.items():
        if name == "ridge" and key == "alpha":
            grid[prefix + "alphas"] = [[float(value)]]
            continue
        if key not in valid:
            extra = ", 'alpha'" if name == "ridge" else ""
            raise ConfigError(f"The 'head_params' key {key!r} is not a setting of the {name!r} head; "
                              f"use one of {', '.join(repr(v) for v in valid)}{extra}.")
        grid[prefix + key] = [value]
    return grid


AUTO_RIDGE_FEATURES = 5000  # wider features (MiniRocket's ~10,000) get a ridge head under "auto"


def resolve_head(name: str, n_features: int) -> str:
    """``"auto"``: logistic regression, or ridge for features wider than 5,000, where logistic
    regression is slow and ridge is the MiniRocket paper's choice; other names unchanged."""
    if name != "auto":
        return name
    return "ridge" if n_features > AUTO_RIDGE_FEATURES else "logreg"


def fit_head(name: str, features: np.ndarray, labels: np.ndarray, cv_folds: int = 5, seed: int = 0,
             params: dict[str, Any] | None = None):
    """Fit a head by cross-validated search; returns ``(best_pipeline, search_summary)``.

    ``params`` fixes settings of the classifier (see :func:`make_head`); the summary's
    ``cv_accuracy`` is then the cross-validated accuracy of exactly that head. A ``class_weight``
    dict (class name → weight) is applied as sample weights, which every head takes.
    """
    name = resolve_head(name, features.shape[1])
    counts = np.unique(labels, return_counts=True)[1]
    folds = int(min(cv_folds, counts.min()))
    if folds < 2:
        raise ConfigError(
            "Headless mode needs at least 2 training items per class for cross-validation; "
            f"the smallest class has {counts.min()}. Add data or lower --val-size/--test-size."
        )
    # Calibration splits each training fold again: no more folds than its smallest class has items.
    smallest_in_fold = int(counts.min()) - -(-int(counts.min()) // folds)
    params = dict(params or {})
    weights = params.pop("class_weight", None) if isinstance(params.get("class_weight"), dict) else None
    search = make_head(name, folds, seed, calibration_folds=max(2, min(5, smallest_in_fold)),
                       params=params)
    if weights is not None:  # per-class weights as sample weights: every head, calibrated ones too
        sample_weight = np.array([weights[label] for label in labels], dtype=np.float64)
        search.fit(features, labels, clf__sample_weight=sample_weight)
    else:
        search.fit(features, labels)
    summary = {
        "head": name, "cv_folds": folds, "best_params": search.best_params_,
        "cv_accuracy": float(search.best_score_),
    }
    return search.best_estimator_, summary


def out_of_fold_proba(head, features: np.ndarray, labels: np.ndarray, cv_folds: int, seed: int = 0,
                      class_weight: dict[str, float] | None = None) -> np.ndarray:
    """Probabilities of every training item from a copy of ``head`` (a fitted pipeline of
    :func:`fit_head`, its chosen settings fixed) fitted on the other folds: the same stratified
    folds as its search. Columns follow ``head.classes_``.

    They are held out from the head that made them, so they can calibrate what the head trained
    on all items will do on new ones (a cross-validation approximation: each fold's head saw a
    fraction ``1 - 1 / cv_folds`` of the items).
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    params = {}
    if class_weight is not None:
        params["clf__sample_weight"] = np.array([class_weight[label] for label in labels], dtype=np.float64)
    return cross_val_predict(clone(head), features, labels, cv=folds, method="predict_proba",
                             params=params or None)
