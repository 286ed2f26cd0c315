"""Class activation maps of a bundle, in NumPy: the graph's second output is the last feature
map, ``cam.json`` holds the class weights over its channels (the network's final linear layer,
or a headless model's head coefficients divided by its scaling), as in
:mod:`sigclass.explain.engine` (``cam`` / ``head_cam``); for a signal, each channel's importance
by occlusion, as the toolkit's (:func:`channel_importance`)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError

from ..data.views import apply_view, invert_view
from ..exceptions import ArtifactError
from ..model_schema.fields import Finite, StrictModel

CAM_JSON = "cam.json"


class CamDocument(StrictModel):
    """``cam.json``: weights ``(n_classes, C)`` in ``model.json``'s class order."""

    kind: Literal["cam", "head_cam"]
    weights: list[list[Finite]] = Field(min_length=2, max_length=100_000)


def read_cam(path: Path, n_classes: int) -> CamDocument:
    try:
        document = CamDocument.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise ArtifactError(f"'{path}' is not a valid CAM description "
                            f"({' '.join(str(exc).split())[:300]}); fix: export the bundle again.") from None
    if len(document.weights) != n_classes or len({len(r) for r in document.weights}) != 1:
        raise ArtifactError(f"'{path}': 'weights' must be {n_classes} rows of one width; fix: "
                            "export the bundle again.")
    return document


def normalize_map(raw: np.ndarray) -> np.ndarray:
    positive = np.maximum(np.asarray(raw, dtype=np.float32), 0.0)
    peak = float(positive.max(initial=0.0))
    return positive / peak if peak > 0 else positive


def bundle_cam(bundle, item, target: str | None) -> dict:
    """The explanation of one input, as the full service's ``explanation`` field."""
    from ..exceptions import ExplainError

    prep = bundle.preprocessor
    batch, size, picture = prep.cam_input(item)
    weights = np.asarray(bundle.cam.weights, dtype=np.float32)
    outputs, feats = 0, []
    for view in prep.views:
        x = batch if view == "id" else np.ascontiguousarray(apply_view(batch, view))
        out, feat = bundle.session.run(None, {bundle.input_name: x.astype(np.float32)})[:2]
        outputs, feats = outputs + out, feats + [feat]
    proba = bundle.probabilities_from_outputs(outputs / len(prep.views))[0]
    if target is None:
        index = int(proba.argmax())
    elif target in bundle.classes:
        index = bundle.classes.index(target)
    else:
        raise ExplainError(f"Unknown target class {target!r}. The model's classes are: "
                           f"{', '.join(bundle.classes)}.")
    raw = sum(invert_view(np.tensordot(weights[index], f[0], axes=(0, 0))[None], v)[0]
              for f, v in zip(feats, prep.views, strict=True)) / len(prep.views)
    cam = normalize_map(prep.place_map(raw, size))
    png = _overlay(cam, picture)
    importance = (channel_importance(bundle, batch, proba[index], index).astype(float).tolist()
                  if prep.per_channel else None)
    return {"method": bundle.cam.kind, "target": bundle.classes[index],
            "overlay_png_base64": base64.b64encode(png).decode("ascii"),
            "map": np.round(cam.astype(np.float64), 4).tolist(), "channel_importance": importance}


def channel_importance(bundle, batch: np.ndarray, base: float, index: int) -> np.ndarray:
    """Per channel of one preprocessed signal ``batch`` ``(1, C, T)``: how much the probability
    ``base`` of class ``index`` drops when that channel is set to its training mean (0 after the
    standardization), as :mod:`sigclass.explain` computes it (one graph run on ``C`` copies,
    the test-time views averaged)."""
    n_channels = batch.shape[1]
    occluded = np.repeat(np.asarray(batch, dtype=np.float32), n_channels, axis=0)
    occluded[np.arange(n_channels), np.arange(n_channels)] = 0.0
    dropped = bundle.probabilities_from_outputs(bundle.run(occluded))[:, index]
    return (float(base) - dropped).astype(np.float32)


def _overlay(cam: np.ndarray, image) -> bytes:
    """A PNG of the map: a red heat layer over the image, or a strip over time for a signal."""
    from PIL import Image

    heat = (cam * 255).astype(np.uint8)
    if image is None:
        strip = np.repeat(heat[None, :], 24, axis=0)
        picture = Image.fromarray(np.stack([strip, np.zeros_like(strip), 255 - strip], axis=-1))
    else:
        base = np.asarray(image.convert("RGB"), dtype=np.float32)
        colour = np.stack([heat, np.zeros_like(heat), 255 - heat], axis=-1).astype(np.float32)
        picture = Image.fromarray((base * 0.55 + colour * 0.45).astype(np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)  # speed over size
    return buffer.getvalue()
