"""The forward passes behind :func:`sigclass.explain`: CAM, Grad-CAM, headless CAM and Layer-CAM.

What differs between inputs is asked of the predictor's preprocessor (the batch, the original
sizes, the views, the map placed back on the input) and of its modality (whether channels are
rated), so the passes are the same for images and signals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._utils import resolve_device
from ..choices import CAM_METHODS, choice_problem
from ..data.views import apply_view, invert_view
from ..exceptions import ExplainError
from ..inference import infer
from ..modalities import modality_of
from .cam import Explanation, normalize_map
from .heads import linear_head_weights
from .layercam import layer_cam, resolve_stages

# Logits recomputed from the pooled map may differ from the network's own head by rounding only.
_ATOL, _RTOL = 1e-3, 1e-3


class CamEngine:
    """Computes maps and probabilities for one predictor, batch by batch.

    Args:
        predictor: The predictor to explain.
        kind: ``"cam"``, ``"gradcam"``, ``"head_cam"`` or ``"layercam"``.
        weights: Class weights over feature channels ``(n_classes, C)`` for ``cam`` and
            ``head_cam`` (in ``predictor.classes`` order); for ``layercam`` those of a headless
            predictor's linear head (``None``: the network's own logits).
        strict: Raise instead of falling back to Grad-CAM when the head turns out not to be
            pooling + linear (``method="cam"`` asked explicitly).
        layers: ``layercam`` only: the stages to combine (see
            :func:`~sigclass.explain.layercam.resolve_stages`).
    """

    def __init__(self, predictor, kind: str, weights=None, strict: bool = False, layers=None):
        import torch

        self.predictor = predictor
        self.kind = kind
        self.strict = strict
        self.device = resolve_device(predictor.device)
        self.network = predictor.network.eval().to(self.device)
        self.weights = None if weights is None else torch.as_tensor(
            np.asarray(weights), dtype=torch.float32, device=self.device)
        self._verified = kind in ("gradcam", "layercam")
        self.layers = None
        if kind == "layercam":
            self.layers = resolve_stages(self.network, layers)

    @classmethod
    def for_predictor(cls, predictor, method: str = "auto", layers=None) -> CamEngine:
        """Pick the method a predictor allows (see :mod:`sigclass.explain.cam`)."""
        from torch import nn

        if getattr(predictor, "members", None):
            folders = ", ".join(f"members/{n}" for n in predictor.names)
            raise ExplainError(f"{predictor.model_name} averages several models; a class activation "
                               f"map belongs to one network. Explain a member instead: the model "
                               f"folders {folders} inside the ensemble's folder.")
        network = predictor.network
        name = getattr(network, "model_spec", {}).get("name", type(network).__name__)
        if not callable(getattr(network, "forward_features", None)) or not callable(
                getattr(network, "forward_head", None)):
            raise ExplainError(
                f"'{name}' has no feature map over the input (no forward_features), so no class "
                "activation map can be computed for it. Networks with one: "
                "`sigclass networks` (CNNs, fcn, resnet1d, inception, recurrent networks).")
        if predictor.head is not None:
            weights = linear_head_weights(predictor.head, predictor.classes, name)
            if method == "layercam":
                return cls(predictor, "layercam", weights, layers=layers)
            # a stage-pooling featurizer: the weights of the final map's mean map onto that map
            start, stop = getattr(network, "final_mean_slice", (0, weights.shape[1]))
            return cls(predictor, "head_cam", weights[:, start:stop])
        if method == "layercam":
            return cls(predictor, "layercam", layers=layers)
        classifier = network.get_classifier() if callable(getattr(network, "get_classifier", None)) else None
        if method != "gradcam" and isinstance(classifier, nn.Linear):
            weights = classifier.weight.detach().float().cpu().numpy()
            return cls(predictor, "cam", weights, strict=method == "cam")
        if method == "cam":
            raise ExplainError(f"'{name}' has no linear classifier after global average pooling, so "
                               "plain CAM does not apply; use method='gradcam' (or 'auto').")
        return cls(predictor, "gradcam")

    # ----------------------------------------------------------------------------- batches

    def explain_batch(self, items: list, targets: list[int | None],
                      channel_importance: bool = True) -> list[Explanation]:
        preprocessor = self.predictor.preprocessor
        names = [str(it) if isinstance(it, str | Path) else None for it in items]
        x, sizes = preprocessor.prepare(items)
        x = x.to(self.device)
        if self.kind == "gradcam":
            outputs, raw, targets = self._gradcam(x, targets)
        elif self.kind == "layercam":
            outputs, raw, targets = self._layercam(x, targets)
        else:
            outputs, raw, targets = self._cam(x, targets)
        proba = self.predictor.probabilities_from_outputs(outputs)
        importance = None
        if channel_importance and modality_of(self.predictor).explains_channels:
            importance = self._channel_importance(x, proba, targets)
        results = []
        for i, item_raw in enumerate(raw):
            target = int(targets[i])
            results.append(Explanation(
                map=normalize_map(preprocessor.to_input(item_raw, sizes[i])), target=target,
                label=self.predictor.classes[target], probabilities=proba[i].astype(np.float64),
                method=self.kind, channel_importance=None if importance is None else importance[i],
                raw=item_raw.astype(np.float32), name=names[i]))
        return results

    def _views(self) -> tuple[str, ...]:
        """The test-time views of the model: each gets its map, mapped back and averaged."""
        return self.predictor.preprocessor.views

    def _cam(self, x, targets):
        import torch

        views = self._views()
        with torch.inference_mode(), self._autocast():
            # each head call follows its own features: a stage-pooling featurizer pools the
            # stage maps of the forward_features call just before it
            feats, outputs = [], []
            for view in views:
                feats.append(self.network.forward_features(_view(x, view)).float())
                outputs.append(self.network.forward_head(feats[-1]).float())
            self._verify(feats[0], outputs[0])
            outputs = sum(outputs) / len(views)
        outputs_np = outputs.cpu().numpy()
        targets = self._fill_targets(outputs_np, targets)
        index = torch.as_tensor(targets, device=self.device)
        with torch.inference_mode():
            raw = sum(invert_view(_weighted_sum(self.weights[index], f), v)
                      for f, v in zip(feats, views, strict=True)) / len(views)
        return outputs_np, raw.float().cpu().numpy(), targets

    def _verify(self, feats, outputs) -> None:
        """Check once that the head is "average pool, then the weights": else CAM would be wrong."""
        if self._verified:
            return
        pooled = feats.mean(dim=tuple(range(2, feats.ndim)))
        if self.kind == "head_cam":
            start, stop = getattr(self.network, "final_mean_slice", (0, outputs.shape[1]))
            outputs = outputs[:, start:stop]
            ok = outputs.shape == pooled.shape and bool(
                (outputs - pooled).abs().max() <= _ATOL + _RTOL * pooled.abs().max())
            if not ok:
                raise ExplainError(
                    f"The featurizer of '{self.predictor.model_name}' does not output the average of "
                    "its feature map, so its head's weights cannot be mapped onto the input.")
        else:
            classifier = self.network.get_classifier()
            ok = classifier.in_features == pooled.shape[1]
            if ok:
                expected = classifier(pooled).float()
                ok = expected.shape == outputs.shape and bool(
                    (expected - outputs).abs().max() <= _ATOL + _RTOL * outputs.abs().max())
            if not ok:
                if self.strict:
                    raise ExplainError(
                        f"The head of '{self.predictor.model_name}' is not global average pooling + "
                        "a linear layer, so plain CAM does not apply; use method='gradcam' or 'auto'.")
                self.kind = "gradcam"  # the caller re-runs this batch with Grad-CAM
                raise _SwitchToGradCam
        self._verified = True

    def _gradcam(self, x, targets):
        import torch

        views = self._views()
        with torch.no_grad(), self._autocast():
            feats = [self.network.forward_features(_view(x, v)).float() for v in views]
        outputs = sum(self._head_grads(f, None)[0] for f in feats) / len(views)
        targets = self._fill_targets(outputs, targets)
        raw = 0
        for f, view in zip(feats, views, strict=True):
            _, grads = self._head_grads(f, targets)
            raw = raw + invert_view(_weighted_sum(grads.mean(dim=tuple(range(2, grads.ndim))), f), view)
        return outputs, (raw / len(views)).detach().cpu().numpy(), targets

    def _layercam(self, x, targets):
        def scores(feats, outputs):  # a headless head scores the whole pooled vector
            return outputs if self.weights is None else outputs.float() @ self.weights.T

        views = self._views()
        outputs, raw, targets = layer_cam(self.network, x, self.layers, scores,
                                          self._fill_targets, targets)
        for view in views[1:]:
            outputs_v, raw_v, _ = layer_cam(self.network, _view(x, view), self.layers, scores,
                                            self._fill_targets, targets)
            outputs = outputs + outputs_v
            raw = raw + invert_view(raw_v, view)
        return outputs / len(views), raw / len(views), targets

    def _head_grads(self, feats, targets):
        """Logits of the head on ``feats`` and, for ``targets``, d logit[target] / d feats."""
        import torch

        leaf = feats.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = self.network.forward_head(leaf).float()
            if targets is None:
                return logits.detach().cpu().numpy(), None
            index = torch.as_tensor(targets, device=logits.device)[:, None]
            (grads,) = torch.autograd.grad(logits.gather(1, index).sum(), leaf)
        return logits.detach().cpu().numpy(), grads

    def _fill_targets(self, outputs: np.ndarray, targets: list[int | None]) -> list[int]:
        if all(t is not None for t in targets):
            return [int(t) for t in targets]
        predicted = self.predictor.probabilities_from_outputs(outputs).argmax(axis=1)
        return [int(p) if t is None else int(t) for t, p in zip(targets, predicted, strict=True)]

    def _channel_importance(self, x, proba: np.ndarray, targets: list[int]) -> np.ndarray:
        """Drop of the target probability when each channel is set to its training mean (0)."""
        import torch

        n, c = x.shape[0], x.shape[1]
        occluded = x.unsqueeze(1).repeat(1, c, 1, 1)  # (n, c, C, T): copy j has channel j blanked
        eye = torch.eye(c, dtype=torch.bool, device=x.device)
        occluded = occluded.masked_fill(eye[None, :, :, None], 0.0).reshape(n * c, c, -1)
        with torch.inference_mode(), self._autocast():
            outputs = infer(lambda b: self.network(b).float().cpu().numpy(), occluded, self._views())
        drop_proba = self.predictor.probabilities_from_outputs(outputs).reshape(n, c, -1)
        rows = np.arange(n)
        base = proba[rows, targets]
        return (base[:, None] - drop_proba[rows, :, targets]).astype(np.float32)

    def _autocast(self):
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")


class _SwitchToGradCam(Exception):
    """Raised once when the verification finds a head CAM does not fit (``method="auto"``)."""


def explain_batch(engine: CamEngine, items, targets, channel_importance: bool = True):
    """:meth:`CamEngine.explain_batch`, re-run with Grad-CAM when CAM turns out not to apply."""
    try:
        return engine.explain_batch(items, targets, channel_importance)
    except _SwitchToGradCam:
        return engine.explain_batch(items, targets, channel_importance)


def _view(x, view: str):
    return x if view == "id" else apply_view(x, view).contiguous()


def _weighted_sum(weights, feats):
    """``sum_c weights[b, c] * feats[b, c, ...]`` → ``(B, *spatial)``."""
    shape = weights.shape + (1,) * (feats.ndim - 2)
    return (weights.reshape(shape).to(feats.dtype) * feats).sum(dim=1)


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
    problem = choice_problem("method", method, CAM_METHODS)
    if problem:
        raise ExplainError(problem)
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
