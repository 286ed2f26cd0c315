"""Class activation maps for image and signal predictors, computed with the prediction: what an
explanation holds (:class:`Explanation`) and how its map is normalized.

The methods, picked per model by :func:`sigclass.explain.explain` (``method="auto"``; the passes
are in :mod:`sigclass.explain.engine`):

- ``cam``: a network whose head is global average pooling + a linear layer (every GAP network in
  the registry, EfficientNet-Lite and other timm CNNs with that head). The map of class ``k`` is
  ``sum_c w[k, c] * A[c]`` over the last feature map ``A``; the logits come from the same feature
  map, so the map costs one extra matrix product, not a second pass.
- ``gradcam``: any other network with a spatial (or temporal) feature map, e.g. a flattening or
  non-linear head (Selvaraju et al. 2017). Channel weights are the gradients of the class logit
  averaged over the map; only the head is differentiated, the backbone runs once.
- ``head_cam``: a headless predictor (frozen featurizer + scikit-learn head) whose head is linear
  (logistic regression, linear SVM, ridge). The head's coefficients, with its feature scaling
  folded in, play the role of ``w``.
- ``layercam`` (asked for with ``method="layercam"``): Layer-CAM over the last stages of the
  network (:mod:`sigclass.explain.layercam`): finer maps than the last 7x7-9x9 grid, at the cost
  of one backward pass through the backbone. Any predictor with a feature map, headless too.

Every map goes through ReLU and is divided by its maximum, so it lies in ``[0, 1]`` (all zeros
where no location supports the class). It is upsampled to the model input, then mapped back onto
the original input: the full image for a squash resize, the centre crop's place for a
centre-crop resize; the original length of a padded or truncated signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Explanation:
    """The class activation map of one input.

    Attributes:
        map: ``float32`` in ``[0, 1]``: ``(H, W)`` of the original image, or ``(n_timepoints,)``
            of the original signal.
        target: Index of the explained class (in ``predictor.classes``).
        label: Name of the explained class.
        probabilities: Class probabilities of the input, in ``predictor.classes`` order.
        method: ``"cam"``, ``"gradcam"``, ``"head_cam"`` or ``"layercam"``.
        channel_importance: Signals only: per channel, how much the explained class's probability
            drops when that channel is replaced by its training mean (see :func:`explain`).
        raw: The map at the network's feature resolution, before ReLU and normalization.
        name: The input's name (its path for files), where known.
    """

    map: np.ndarray
    target: int
    label: str
    probabilities: np.ndarray
    method: str
    channel_importance: np.ndarray | None = None
    raw: np.ndarray | None = field(default=None, repr=False)
    name: str | None = None

    @property
    def predicted(self) -> int:
        """Index of the predicted class."""
        return int(np.argmax(self.probabilities))

    @property
    def confidence(self) -> float:
        """Probability of the explained class."""
        return float(self.probabilities[self.target])

    def save_map(self, path: str | Path) -> Path:
        """Save :attr:`map` as a ``.npy`` file (no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, self.map.astype(np.float32), allow_pickle=False)
        return path

    def to_dict(self, classes: list[str] | None = None) -> dict[str, Any]:
        """A JSON-ready summary (without the map itself)."""
        out: dict[str, Any] = {
            "name": self.name, "target": self.target, "label": self.label, "method": self.method,
            "confidence": self.confidence, "predicted": self.predicted,
            "probabilities": [float(p) for p in self.probabilities],
            "map_shape": list(self.map.shape),
        }
        if classes is not None:
            out["predicted_label"] = classes[self.predicted]
        if self.channel_importance is not None:
            out["channel_importance"] = [float(v) for v in self.channel_importance]
        return out


def normalize_map(raw: np.ndarray) -> np.ndarray:
    """ReLU, then divide by the maximum: a ``float32`` map in ``[0, 1]`` (zeros if nothing is
    positive)."""
    positive = np.maximum(np.asarray(raw, dtype=np.float32), 0.0)
    peak = float(positive.max(initial=0.0))
    return positive / peak if peak > 0 else positive
