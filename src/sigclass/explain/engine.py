"""The forward passes behind :func:`sigclass.explain`: CAM, Grad-CAM, headless CAM and Layer-CAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.views import apply_view, invert_view, views_of
from ..exceptions import DataError, ExplainError, Problem
from .cam import Explanation, normalize_map
from .heads import linear_head_weights

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

        from .._utils import resolve_device

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
            from .layercam import resolve_stages

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
        signal = self.predictor.modality == "signal"
        names = [str(it) if isinstance(it, str | Path) else None for it in items]
        if signal:
            x = self.predictor.preprocessor(items)
            sizes = [_signal_length(it) for it in items]
        else:
            images = _load_images(items, self.predictor.preprocessor.channels)
            x = self.predictor.preprocessor(images)
            sizes = [(im.height, im.width) for im in images]
        x = x.to(self.device)
        if self.kind == "gradcam":
            outputs, raw, targets = self._gradcam(x, targets)
        elif self.kind == "layercam":
            outputs, raw, targets = self._layercam(x, targets)
        else:
            outputs, raw, targets = self._cam(x, targets)
        proba = self.predictor.probabilities_from_outputs(outputs)
        importance = None
        if signal and channel_importance:
            importance = self._channel_importance(x, proba, targets)
        results = []
        for i, item_raw in enumerate(raw):
            if signal:
                full = _to_signal_length(item_raw, x.shape[-1], sizes[i])
            else:
                full = _to_image_size(item_raw, sizes[i], self.predictor.data_config)
            target = int(targets[i])
            results.append(Explanation(
                map=normalize_map(full), target=target, label=self.predictor.classes[target],
                probabilities=proba[i].astype(np.float64), method=self.kind,
                channel_importance=None if importance is None else importance[i],
                raw=item_raw.astype(np.float32), name=names[i]))
        return results

    def _views(self) -> tuple[str, ...]:
        """The test-time views of the model: each gets its map, mapped back and averaged."""
        return views_of(self.predictor.data_config) if self.predictor.modality == "image" else ("id",)

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
        from .layercam import layer_cam

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

        from ..inference import infer

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


def _load_images(items: list, channels: int) -> list:
    from ..data.transforms import load_image

    images, problems = [], []
    for index, item in enumerate(items):
        try:
            images.append(load_image(item, channels))
        except DataError as exc:
            problems += exc.problems
        except Exception as exc:  # noqa: BLE001 - any decoding failure names the input
            name = str(item) if isinstance(item, str | Path) else f"input {index}"
            problems.append(Problem(name, f"cannot be read as an image: {exc}"))
    if problems:
        raise DataError(problems)
    return images


def _signal_length(item) -> int:
    from ..data.signal_preprocess import _trim_trailing_nan, as_case

    return int(_trim_trailing_nan(as_case(item)).shape[1])


def _to_signal_length(raw: np.ndarray, model_length: int, length: int) -> np.ndarray:
    """The feature-resolution map stretched to the model input, then cut or padded with zeros
    (the part the model never saw) to the original length."""
    import torch
    import torch.nn.functional as F

    stretched = F.interpolate(torch.as_tensor(raw, dtype=torch.float32)[None, None], size=model_length,
                              mode="linear", align_corners=False)[0, 0].numpy()
    if length <= model_length:
        return stretched[:length]
    return np.concatenate([stretched, np.zeros(length - model_length, dtype=np.float32)])


def _resize(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    size = (max(1, int(size[0])), max(1, int(size[1])))
    return F.interpolate(torch.as_tensor(raw, dtype=torch.float32)[None, None], size=size,
                         mode="bilinear", align_corners=False)[0, 0].numpy()


def _to_image_size(raw: np.ndarray, size: tuple[int, int], data_config: dict) -> np.ndarray:
    """The map placed on the original image: stretched over it (squash), over the square it was
    padded to with the padding cut off (letterbox), or over the centre crop the model saw (centre
    crop), zero elsewhere."""
    from ..data.transforms import letterbox_padding, resize_for

    height, width = size
    mode = resize_for(data_config, height, width)
    if mode == "letterbox":
        left, top, _, _ = letterbox_padding(height, width)
        side = max(height, width)
        return np.ascontiguousarray(_resize(raw, (side, side))[top:top + height, left:left + width])
    if mode != "center_crop":
        return _resize(raw, (height, width))
    _, in_h, in_w = data_config["input_size"]
    short = int(round(min(in_h, in_w) / float(data_config.get("crop_pct", 1.0))))
    # torchvision's Resize(int): the shorter side becomes `short`, the other keeps the ratio.
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    top = int(round((new_h - in_h) / 2.0))
    left = int(round((new_w - in_w) / 2.0))
    scale_h, scale_w = height / new_h, width / new_w
    y0, y1 = round(top * scale_h), round((top + in_h) * scale_h)
    x0, x1 = round(left * scale_w), round((left + in_w) * scale_w)
    patch = _resize(raw, (y1 - y0, x1 - x0))
    canvas = np.zeros((height, width), dtype=np.float32)
    cy0, cx0 = max(0, y0), max(0, x0)
    cy1, cx1 = min(height, y1), min(width, x1)
    canvas[cy0:cy1, cx0:cx1] = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return canvas
