"""Class activation maps for image and signal predictors, computed with the prediction.

Three methods, picked per model by :func:`explain` (``method="auto"``):

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

from ..exceptions import ExplainError

METHODS = ("auto", "cam", "gradcam", "layercam")


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


def explain(predictor, inputs, target=None, method: str = "auto", batch_size: int = 32,
            channel_importance: bool = True, layers=None) -> list[Explanation]:
    """Class activation maps of ``inputs`` for the predicted class or a chosen one.

    Args:
        predictor: A :class:`~sigclass.Predictor` (any mode).
        inputs: What :meth:`Predictor.predict` accepts: image paths, bytes, PIL images or arrays;
            signal cases ``(C, T)``, ``(T,)``, ``(N, C, T)`` or a list of cases.
        target: ``None`` (each input's predicted class), a class index or name for all inputs,
            or a list of them, one per input.
        method: ``"auto"`` (CAM where the head allows it, else Grad-CAM), ``"cam"``,
            ``"gradcam"`` or ``"layercam"`` (several stages combined, finer maps). Headless
            predictors use their linear head (``head_cam``, or its weights in ``layercam``).
        batch_size: Inputs per forward pass.
        channel_importance: Signals: compute the per-channel importance by occlusion: each
            channel in turn is set to its training mean (0 after standardization) and the drop of
            the explained class's probability is that channel's importance (negative: the class
            got more likely without it). Costs one extra pass per channel, batched.
        layers: ``method="layercam"`` only: how many of the last stages to combine (``None``:
            :data:`~sigclass.explain.layercam.DEFAULT_STAGES`) or a list of module names.

    Returns:
        One :class:`Explanation` per input, in order.

    Raises:
        ExplainError: The model has no feature map to explain (MiniRocket, signal-as-image) or
            a headless model has a non-linear head (random forest, RBF SVM, boosting).
    """
    from .engine import CamEngine, explain_batch

    if method not in METHODS:
        raise ExplainError(f"The 'method' option must be one of {', '.join(METHODS)}. Got {method!r}.")
    if layers is not None and method != "layercam":
        raise ExplainError("The 'layers' option belongs to method='layercam'; drop it or set "
                           f"method='layercam' (got method={method!r}).")
    engine = CamEngine.for_predictor(predictor, method, layers)
    items = predictor.preprocessor.as_list(inputs)
    targets = _resolve_targets(predictor, target, len(items))
    results: list[Explanation] = []
    for begin in range(0, len(items), batch_size):
        chunk = items[begin:begin + batch_size]
        results += explain_batch(engine, chunk, targets[begin:begin + batch_size],
                                 channel_importance=channel_importance)
    return results


def _resolve_targets(predictor, target, n_items: int) -> list[int | None]:
    if target is None:
        return [None] * n_items
    if isinstance(target, list | tuple | np.ndarray):
        if len(target) != n_items:
            raise ExplainError(f"'target' has {len(target)} entries for {n_items} inputs; give one "
                               "class per input, or a single class for all.")
        return [None if t is None else _class_index(predictor, t) for t in target]
    return [_class_index(predictor, target)] * n_items


def _class_index(predictor, value) -> int:
    classes = predictor.classes
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if 0 <= int(value) < len(classes):
            return int(value)
        raise ExplainError(f"Target class index {value} is out of range; the model has "
                           f"{len(classes)} classes (0-{len(classes) - 1}).")
    if str(value) in classes:
        return classes.index(str(value))
    raise ExplainError(f"Unknown target class {value!r}. The model's classes are: "
                       f"{', '.join(classes)}.")


def normalize_map(raw: np.ndarray) -> np.ndarray:
    """ReLU, then divide by the maximum: a ``float32`` map in ``[0, 1]`` (zeros if nothing is
    positive)."""
    positive = np.maximum(np.asarray(raw, dtype=np.float32), 0.0)
    peak = float(positive.max(initial=0.0))
    return positive / peak if peak > 0 else positive
