"""A headless model's head as plain coefficients (``head.json``), evaluated with NumPy.

The one head kind written is ``logistic_regression``: an optional standardization
(``(x - mean) / scale``, the head pipeline's ``StandardScaler``) then ``x @ coef.T + intercept``;
a softmax over the classes (multinomial), or a sigmoid of the one column (two classes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, ValidationError

from ..exceptions import ArtifactError
from ..model_schema.fields import Finite, Name, StrictModel

HEAD_KINDS = ("logistic_regression",)


class HeadDocument(StrictModel):
    """``head.json``."""

    kind: Literal[HEAD_KINDS]  # type: ignore[valid-type]
    classes: list[Name] = Field(min_length=2, max_length=100_000)
    mean: list[Finite] | None = None
    scale: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None
    coef: list[list[Finite]] = Field(min_length=1)
    intercept: list[Finite] = Field(min_length=1)


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
        if problems:
            raise ArtifactError(f"'{path}': " + "; ".join(problems) + "; fix: export the bundle again.")
        return cls(document, classes)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if self.mean is not None:
            x = x - self.mean
        if self.scale is not None:
            x = x / self.scale
        scores = x @ self.coef.T + self.intercept
        if scores.shape[1] == 1:  # two classes: the column is the second class's log-odds
            positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            proba = np.stack([1.0 - positive, positive], axis=1)
        else:
            exp = np.exp(scores - scores.max(axis=1, keepdims=True))
            proba = exp / exp.sum(axis=1, keepdims=True)
        return proba[:, self.order]
