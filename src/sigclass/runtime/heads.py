"""A headless model's head as plain coefficients (``head.json``), written from the fitted
scikit-learn head by :func:`head_document` and evaluated with NumPy by :class:`LinearHead`.

Both head kinds start with an optional standardization (``(x - mean) / scale``, the head
pipeline's ``StandardScaler``) and a linear score ``x @ coef.T + intercept``:

- ``logistic_regression``: a softmax over the classes (multinomial), or a sigmoid of the one
  column (two classes);
- ``calibrated_linear`` (the ``linear_svm`` and ``ridge`` heads: a ``LinearSVC`` or
  ``RidgeClassifierCV`` in a ``CalibratedClassifierCV`` with one calibrated classifier and
  sigmoid calibration): each score column ``j`` gives its class ``columns[j]`` the probability
  ``1 / (1 + exp(a_j * score + b_j))`` (Platt scaling, one-vs-rest); with two classes the
  first class gets the rest, otherwise the row is divided by its sum (all zeros: uniform), as
  scikit-learn's ``_CalibratedClassifier.predict_proba``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from ..exceptions import ArtifactError, ConfigError
from ..model_schema.fields import Finite, Name, StrictModel

HEAD_KINDS = ("logistic_regression", "calibrated_linear")


class Sigmoid(StrictModel):
    """The Platt scaling of one score column: ``1 / (1 + exp(a * score + b))``."""

    a: Finite
    b: Finite


class HeadDocument(StrictModel):
    """``head.json``."""

    kind: Literal[HEAD_KINDS]  # type: ignore[valid-type]
    classes: list[Name] = Field(min_length=2, max_length=100_000)
    mean: list[Finite] | None = None
    scale: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None
    coef: list[list[Finite]] = Field(min_length=1)
    intercept: list[Finite] = Field(min_length=1)
    # calibrated_linear: the sigmoid of each score column and the class index it gives
    calibration: list[Sigmoid] | None = None
    columns: list[Annotated[int, Field(ge=0)]] | None = None
    # the dtype of the scorer's coefficients, which scikit-learn computes the scores in (a ridge
    # classifier fitted on float32 features keeps float32 ones)
    dtype: Literal["float32", "float64"] = "float64"


class LinearHead:
    """Probabilities of a linear head from its coefficients.

    Args:
        document: The validated ``head.json``.
        classes: The model's classes; the columns come back in this order.
    """

    def __init__(self, document: HeadDocument, classes: list[str]):
        self.coef = np.asarray(document.coef, dtype=np.float64)
        self.intercept = np.asarray(document.intercept, dtype=np.float64)
        self.mean = None if document.mean is None else np.asarray(document.mean, dtype=np.float64)
        self.scale = None if document.scale is None else np.asarray(document.scale, dtype=np.float64)
        self.order = [list(document.classes).index(c) for c in classes]
        self.n_features = self.coef.shape[1]
        self.kind = document.kind
        self.dtype = np.dtype(document.dtype)
        self.n_head_classes = len(document.classes)
        self.columns = list(document.columns or [])
        self.calibration = (None if document.calibration is None else
                            np.asarray([[c.a, c.b] for c in document.calibration], dtype=np.float64))

    @classmethod
    def from_estimator(cls, head, classes: list[str]) -> LinearHead:
        """The head of a fitted scikit-learn ``head`` (see :func:`head_document`).

        Raises:
            ConfigError: The head has no coefficient form.
        """
        return cls(HeadDocument.model_validate(head_document(head, classes)), classes)

    @classmethod
    def read(cls, path: Path, classes: list[str]) -> LinearHead:
        """The head of ``path``, checked against the model's ``classes``.

        Raises:
            ArtifactError: The file does not hold a head of these classes.
        """
        try:
            document = HeadDocument.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, ValidationError) as exc:
            raise ArtifactError(f"'{path}' is not a valid head description "
                                f"({' '.join(str(exc).split())[:300]}); fix: export the bundle again.") from None
        problems = []
        if sorted(document.classes) != sorted(classes):
            problems.append(f"its classes {document.classes[:5]} differ from model.json's {classes[:5]}")
        n_rows = 1 if len(document.classes) == 2 else len(document.classes)
        widths = {len(row) for row in document.coef}
        if len(document.coef) != n_rows or len(document.intercept) != n_rows or len(widths) != 1:
            problems.append(f"'coef' must be {n_rows} rows of one width and 'intercept' {n_rows} values")
        width = widths.pop() if len(widths) == 1 else None
        for name in ("mean", "scale"):
            values = getattr(document, name)
            if values is not None and len(values) != width:
                problems.append(f"'{name}' has {len(values)} values for {width} features")
        if document.kind == "calibrated_linear":
            columns, calibration = document.columns or [], document.calibration or []
            if (len(columns) != n_rows or len(calibration) != n_rows or len(set(columns)) != n_rows
                    or any(c >= len(document.classes) for c in columns)):
                problems.append(f"'calibration' and 'columns' must be {n_rows} entries, the columns "
                                f"distinct class indices below {len(document.classes)}")
        elif document.calibration is not None or document.columns is not None:
            problems.append("'calibration' and 'columns' are for a calibrated_linear head only")
        if problems:
            raise ArtifactError(f"'{path}': " + "; ".join(problems) + "; fix: export the bundle again.")
        return cls(document, classes)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features)
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        # scikit-learn's StandardScaler computes in the features' dtype (float32 from the graph)
        if self.mean is not None:
            x = x.astype(dtype) - self.mean.astype(dtype)
        if self.scale is not None:
            x = x.astype(dtype) / self.scale.astype(dtype)
        scores = (x.astype(self.dtype) @ self.coef.T.astype(self.dtype)
                  + self.intercept.astype(self.dtype)).astype(np.float64)
        if self.kind == "calibrated_linear":
            return self._calibrated(scores)[:, self.order]
        if scores.shape[1] == 1:  # two classes: the column is the second class's log-odds
            positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            proba = np.stack([1.0 - positive, positive], axis=1)
        else:
            exp = np.exp(scores - scores.max(axis=1, keepdims=True))
            proba = exp / exp.sum(axis=1, keepdims=True)
        return proba[:, self.order]

    def _calibrated(self, scores: np.ndarray) -> np.ndarray:
        proba = np.zeros((len(scores), self.n_head_classes))
        with np.errstate(over="ignore"):  # exp overflow: probability 0, as scipy's expit
            for j, column in enumerate(self.columns):
                a, b = self.calibration[j]
                proba[:, column] = 1.0 / (1.0 + np.exp(a * scores[:, j] + b))
        if self.n_head_classes == 2:
            proba[:, 0] = 1.0 - proba[:, 1]
            return proba
        total = proba.sum(axis=1, keepdims=True)
        uniform = np.full_like(proba, 1.0 / self.n_head_classes)
        return np.divide(proba, total, out=uniform, where=total != 0)


LINEAR_SCORERS = ("LinearSVC", "RidgeClassifierCV", "RidgeClassifier")


def head_document(head, classes: list[str]) -> dict[str, Any]:
    """``head.json`` of a scikit-learn head, alone or after a ``StandardScaler`` in a
    ``Pipeline``: a ``LogisticRegression`` (``logistic_regression``), or a ``LinearSVC`` /
    ``RidgeClassifierCV`` in a ``CalibratedClassifierCV`` with one calibrated classifier and
    sigmoid calibration, the toolkit's ``linear_svm`` and ``ridge`` heads
    (``calibrated_linear``, see the module's docstring). Reads the fitted attributes only: no
    scikit-learn import.

    Raises:
        ConfigError: Any other head (an RBF SVM, forests and boosting have no coefficient form
            the runtime evaluates; isotonic or ensembled calibration is not reproduced).
    """
    steps = list(getattr(head, "steps", [("clf", head)]))
    scaler = steps[0][1] if len(steps) == 2 and type(steps[0][1]).__name__ == "StandardScaler" else None
    clf = steps[-1][1]
    kinds = " -> ".join(type(s).__name__ for _, s in steps)
    if type(clf).__name__ == "CalibratedClassifierCV":
        kinds += f" ({type(clf.estimator).__name__})"
    calibrated = _calibrated_linear(clf)
    multi_class = getattr(clf, "multi_class", "auto")
    logistic = type(clf).__name__ == "LogisticRegression" and multi_class != "ovr"
    if (not logistic and calibrated is None) or len(steps) > (2 if scaler is not None else 1):
        raise ConfigError(f"The head of this model ({kinds}) cannot be exported to a bundle: the "
                          "lean runtime evaluates the 'logreg', 'linear_svm' and 'ridge' heads "
                          "(logistic regression; a linear SVM or ridge classifier with sigmoid "
                          "calibration) as coefficients, without scikit-learn; an RBF SVM, "
                          "forests and boosting have no such form. Train with --head logreg, "
                          "linear_svm or ridge, or serve the model folder with the full install.")
    scaling = {
        "mean": None if scaler is None or scaler.mean_ is None else scaler.mean_.tolist(),
        "scale": None if scaler is None or scaler.scale_ is None else scaler.scale_.tolist(),
    }
    if calibrated is not None:
        return {"kind": "calibrated_linear", "classes": [str(c) for c in clf.classes_], **scaling,
                **calibrated}
    return {
        "kind": "logistic_regression",
        "classes": [str(c) for c in clf.classes_], **scaling,
        "coef": np.asarray(clf.coef_, dtype=np.float64).tolist(),
        "intercept": np.asarray(clf.intercept_, dtype=np.float64).reshape(-1).tolist(),
    }


def _calibrated_linear(clf) -> dict[str, Any] | None:
    """The coefficients, sigmoids and class columns of a calibrated linear classifier (``None``
    for anything else), as scikit-learn's ``_CalibratedClassifier.predict_proba`` uses them."""
    members = getattr(clf, "calibrated_classifiers_", None)
    if type(clf).__name__ != "CalibratedClassifierCV" or not members or len(members) != 1:
        return None
    member = members[0]
    scorer = member.estimator
    if (member.method != "sigmoid" or type(scorer).__name__ not in LINEAR_SCORERS
            or any(type(c).__name__ != "_SigmoidCalibration" for c in member.calibrators)):
        return None
    classes = [str(c) for c in member.classes]
    coef = np.asarray(scorer.coef_, dtype=np.float64).reshape(-1, np.shape(scorer.coef_)[-1])
    positions = [classes.index(str(c)) for c in scorer.classes_]
    # two classes: one score column, that of the second class
    columns = [positions[0] + 1] if len(classes) == 2 else positions[:len(coef)]
    if len(member.calibrators) != len(coef) or len(columns) != len(coef):
        return None
    return {"coef": coef.tolist(),
            "intercept": np.asarray(scorer.intercept_, dtype=np.float64).reshape(-1).tolist(),
            "calibration": [{"a": float(c.a_), "b": float(c.b_)} for c in member.calibrators],
            "columns": [int(c) for c in columns],
            "dtype": "float32" if np.asarray(scorer.coef_).dtype == np.float32 else "float64"}
