"""Explanations of detected boxes: per box, a gradient map of the box's class score.

For a Faster R-CNN detector (:func:`sigclass.models.detection.build_detector`, the default
architecture), :func:`explain_boxes` runs the detector once with gradients on. For every box it
returns, **that box's own score** (the softmax probability of its class for the proposal it was
regressed from) is computed again from that proposal alone, checked equal to the score the
detector reports, and differentiated with respect to one feature map of the backbone: the
stride-8 stage by default, the finest map the feature pyramid reads. The map is, as for
classifiers (:mod:`.layercam`, :mod:`.cam`), ReLU'd, upsampled over the image the detector saw,
placed back onto the original image and divided by its maximum:

- ``layercam`` (the default; Jiang et al. 2021): every location weighted by the positive part of
  the gradient there. The score reads only the features that RoIAlign samples inside its box,
  so the gradient, and the map, fade beyond the box and the receptive field around it: the map
  shows which parts in and around the box weigh on its score.
- ``gradcam`` (Selvaraju et al. 2017): the gradient averaged over the map gives one weight per
  channel, applied to the activations of the whole image. On BCCD such a map lights up every
  cell with the box's class features, not the box (measured in
  ``bench/results/detection_cam.json``: 3.6 % of the map inside the box against 2.8 % in a
  same-sized box elsewhere, its maximum inside the box for 2 % of the boxes; Layer-CAM: 62 %,
  0.7 % and 97 %). It is kept for comparison, not as the default.

Each :class:`BoxExplanation` keeps two maps in original image pixels: ``full_map``, the map over
the whole image, and ``map``, the same map restricted to the box (zero outside, divided by its
maximum inside), what the overlay draws. ``mass_inside`` is the share of the whole-image map that
lies inside the box: a box whose map is mostly elsewhere is not explained by its own region, and
that number says so instead of the cropped picture hiding it.

RetinaNet and FCOS are refused (:class:`~sigclass.exceptions.ExplainError`): their scores are
picked per anchor by a top-k that this module does not trace back.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write, write_json
from ..data.image_preprocess import resize_map
from ..exceptions import ExplainError
from .cam import normalize_map

__all__ = ["BOX_CAM_METHODS", "DEFAULT_METHOD", "BoxExplanation", "box_overlay", "explain_box_files", "explain_boxes",
           "explain_boxes_payload", "feature_stages", "mass_inside"]

BOX_CAM_METHODS = ("layercam", "gradcam")
DEFAULT_METHOD = "layercam"  # Grad-CAM's maps do not point at their box: detection_cam.json
DEFAULT_STAGE = 0  # the stride-8 stage, the finest (stride 16 localizes alike)


@dataclass
class BoxExplanation:
    """The gradient map of one detected box.

    Attributes:
        box: ``(xmin, ymin, xmax, ymax)`` in the original image's pixels.
        label: The box's class.
        score: The detector's score of the box (the class probability the map differentiates).
        map: ``float32 (H, W)`` of the original image, in ``[0, 1]``: the map inside the box,
            divided by its maximum there; zero outside the box.
        mass_inside: Share of the whole-image map (``full_map``) inside the box, in ``[0, 1]``
            (0 when the map is zero everywhere).
        method: ``"layercam"`` or ``"gradcam"``.
        full_map: The map over the whole image, in ``[0, 1]``, before it is restricted to the box.
    """

    box: np.ndarray
    label: str
    score: float
    map: np.ndarray
    mass_inside: float
    method: str
    full_map: np.ndarray = field(repr=False, default=None)

    def pixel_box(self) -> tuple[int, int, int, int]:
        """The box as whole pixels ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive: what ``map``
        covers."""
        return pixel_box(self.box, self.map.shape)

    def box_map(self) -> np.ndarray:
        """``map`` cut to :meth:`pixel_box`: ``(y1 - y0, x1 - x0)``."""
        x0, y0, x1, y1 = self.pixel_box()
        return self.map[y0:y1, x0:x1]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the maps)."""
        return {"xmin": float(self.box[0]), "ymin": float(self.box[1]), "xmax": float(self.box[2]),
                "ymax": float(self.box[3]), "class": self.label, "score": float(self.score),
                "method": self.method, "mass_inside": round(float(self.mass_inside), 4),
                "map_box": list(self.pixel_box())}


def pixel_box(box, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` (float pixels) as the whole pixels it touches, inside an image of ``shape``."""
    height, width = shape
    x0 = min(max(int(np.floor(box[0])), 0), width - 1)
    y0 = min(max(int(np.floor(box[1])), 0), height - 1)
    x1 = max(min(int(np.ceil(box[2])), width), x0 + 1)
    y1 = max(min(int(np.ceil(box[3])), height), y0 + 1)
    return x0, y0, x1, y1


def mass_inside(full_map: np.ndarray, box) -> float:
    """Share of ``full_map``'s total inside ``box`` (0 for an all-zero map)."""
    total = float(full_map.sum(dtype=np.float64))
    if total <= 0:
        return 0.0
    x0, y0, x1, y1 = pixel_box(box, full_map.shape)
    return float(full_map[y0:y1, x0:x1].sum(dtype=np.float64)) / total


def feature_stages(network) -> list[str]:
    """Module names of the backbone's feature stages the pyramid reads, finest first."""
    body = network.backbone.body
    info = getattr(body, "feature_info", None)
    names = list(info.module_name()) if info is not None else []
    modules = dict(body.named_modules())
    found = [n if n in modules else n.replace(".", "_") for n in names]
    found = [n for n in found if n in modules]
    if not found:
        raise ExplainError("The detector's backbone names no feature stages (timm feature_info); "
                           "box maps need one.")
    return found


def _check(network, method: str, stage: int) -> str:
    if method not in BOX_CAM_METHODS:
        raise ExplainError(f"The box map method must be one of {', '.join(BOX_CAM_METHODS)}. "
                           f"Got {method!r}.")
    name = getattr(network, "model_spec", {}).get("name", type(network).__name__)
    if not hasattr(network, "roi_heads") or not hasattr(network, "rpn"):
        raise ExplainError(f"'{name}' is not a Faster R-CNN detector: box maps follow the score of "
                           "each box back through Faster R-CNN's box head, which RetinaNet and FCOS "
                           "do not have. Train with the default architecture (fasterrcnn) to "
                           "explain boxes.")
    stages = feature_stages(network)
    if not 0 <= stage < len(stages):
        raise ExplainError(f"The feature stage must be in 0-{len(stages) - 1} (0: the finest, "
                           f"stride 8). Got {stage}.")
    return stages[stage]


def explain_boxes(network, classes: list[str], images, score_threshold: float = 0.3,
                  max_detections: int = 50, method: str = DEFAULT_METHOD, stage: int = DEFAULT_STAGE,
                  device=None) -> list[list[BoxExplanation]]:
    """Detect the boxes of ``images`` and explain each with the gradient map of its score.

    Args:
        network: A Faster R-CNN detector of :func:`~sigclass.models.detection.build_detector`.
        classes: Object class names (label ``i`` of the network is ``classes[i - 1]``).
        images: Image tensors ``(3, H, W)`` in ``[0, 1]``.
        score_threshold: Lowest score of an explained box.
        max_detections: Most boxes explained per image (highest scores first).
        method: ``"layercam"`` (every location weighted by its positive gradient; the default)
            or ``"gradcam"`` (channel weights: the gradient averaged over the map; measured not
            to point at the box on BCCD, see the module's text).
        stage: Which backbone feature stage to differentiate (0: stride 8, the finest the
            pyramid reads; 1: stride 16; 2: stride 32).
        device: Where to run (default: where the network is).

    Returns:
        Per image, one :class:`BoxExplanation` per box, highest score first: the same boxes,
        classes and scores as :meth:`~sigclass.detector.DetectionPredictor.detect`.
    """
    import torch

    module_name = _check(network, method, stage)
    module = dict(network.backbone.body.named_modules())[module_name]
    device = device or next(network.parameters()).device
    network = network.eval()
    captured: dict[str, Any] = {}

    def as_leaf(_module, _inputs, output):  # the stage's output becomes the differentiated leaf
        captured["act"] = output.detach().requires_grad_(True)
        return captured["act"]

    results = []
    handle = module.register_forward_hook(as_leaf)
    try:
        for image in images:
            with torch.enable_grad():
                results.append(_explain_one(network, classes, image.to(device), captured,
                                            score_threshold, max_detections, method))
    finally:
        handle.remove()
    return results


def _explain_one(network, classes, image, captured, score_threshold, max_detections, method):
    import torch

    heads = network.roi_heads
    original = tuple(image.shape[-2:])
    with torch.no_grad():
        image_list, _ = network.transform([image])
    sizes = image_list.image_sizes
    features = network.backbone(image_list.tensors)  # the graph starts at the stage's leaf
    act = captured["act"]
    with torch.no_grad():
        proposals, _ = network.rpn(image_list, features)
        class_logits, regression = heads.box_predictor(
            heads.box_head(heads.box_roi_pool(features, proposals, sizes)))
        boxes, scores, labels = (t[0] for t in heads.postprocess_detections(
            class_logits, regression, proposals, sizes))
        keep = (scores >= score_threshold).nonzero().flatten()[:max_detections].tolist()
        sources = _sources(heads, class_logits, regression, proposals[0], sizes[0],
                           boxes[keep], scores[keep], labels[keep])
        shown = network.transform.postprocess([{"boxes": boxes}], sizes, [original])[0]["boxes"]
    seen, padded = tuple(sizes[0]), tuple(image_list.tensors.shape[-2:])
    found = []
    for rank, (j, source) in enumerate(zip(keep, sources, strict=True)):
        # the box's own score again, from its proposal alone: one row to differentiate
        logits, _ = heads.box_predictor(heads.box_head(heads.box_roi_pool(
            features, [proposals[0][source:source + 1]], sizes)))
        score = torch.softmax(logits.float(), -1)[0, int(labels[j])]
        if abs(float(score.detach()) - float(scores[j])) > 1e-4:
            raise ExplainError(f"The score of a box computed again from its proposal "
                               f"({float(score.detach()):.6f}) "
                               f"differs from the detector's ({float(scores[j]):.6f}); its map "
                               "would explain another number.")
        (grad,) = torch.autograd.grad(score, act, retain_graph=rank < len(keep) - 1)
        raw = _cam(act.detach()[0].float(), grad[0].float(), method).cpu().numpy()
        full = normalize_map(resize_map(resize_map(raw, padded)[:seen[0], :seen[1]], original))
        box = shown[j].float().cpu().numpy()
        x0, y0, x1, y1 = pixel_box(box, original)
        inside = np.zeros_like(full)
        inside[y0:y1, x0:x1] = full[y0:y1, x0:x1]
        found.append(BoxExplanation(box=box, label=classes[int(labels[j]) - 1],
                                    score=float(scores[j]), map=normalize_map(inside),
                                    mass_inside=mass_inside(full, box), method=method,
                                    full_map=full))
    return found


def _sources(heads, class_logits, regression, proposals, size, boxes, scores, labels) -> list[int]:
    """For each kept detection, the proposal it was regressed from: the one whose decoded box
    and probability of the detection's class are the detection's (torchvision's
    ``postprocess_detections`` does not return it)."""
    import torch
    from torchvision.ops import boxes as box_ops

    decoded = heads.box_coder.decode(regression, [proposals])
    decoded = box_ops.clip_boxes_to_image(decoded, size)
    probabilities = torch.softmax(class_logits, -1)
    found = []
    for box, score, label in zip(boxes, scores, labels, strict=True):
        gap = ((decoded[:, label] - box).abs().sum(dim=1)
               + (probabilities[:, label] - score).abs())
        source = int(gap.argmin())
        if float(gap[source]) > 1e-3:
            raise ExplainError("A detected box matches none of the detector's proposals; its "
                               "map cannot be traced back.")
        found.append(source)
    return found


def _cam(act, grad, method: str):
    """``(C, h, w)`` activations and gradients → the ``(h, w)`` map before normalization."""
    import torch

    if method == "layercam":
        return torch.relu((torch.relu(grad) * act).sum(dim=0))
    weights = grad.mean(dim=(1, 2))
    return torch.relu((weights[:, None, None] * act).sum(dim=0))


# ------------------------------------------------------------------------------ pictures, files

_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (128, 128, 0))


def box_overlay(image, explained: list[BoxExplanation], classes: list[str] | None = None,
                alpha: float = 0.45) -> bytes:
    """A PNG of the image with every box's map (inside its box) as a heat map, the boxes drawn
    in their class's colour with their class and score.

    Args:
        image: The explained image (path, bytes, PIL image, array or ``(3, H, W)`` tensor in
            ``[0, 1]``).
        explained: What :func:`explain_boxes` returned for it.
        classes: All class names (fixes each class's colour); default: the labels present.
        alpha: Opacity of the heat map.
    """
    from PIL import Image, ImageDraw

    from ..data.image_preprocess import load_image
    from ..modalities.drawing import blend_heatmap

    if hasattr(image, "detach"):  # a (3, H, W) tensor in [0, 1]
        image = Image.fromarray((image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy() * 255)
                                .round().astype(np.uint8))
    base = load_image(image, 3)
    combined = np.zeros((base.height, base.width), dtype=np.float32)
    for entry in explained:
        if entry.map.shape != combined.shape:
            raise ExplainError(f"A box map has shape {entry.map.shape} but the image is "
                               f"{base.height}x{base.width}; pass the image that was explained.")
        np.maximum(combined, entry.map, out=combined)
    canvas = blend_heatmap(base, combined, alpha)
    draw = ImageDraw.Draw(canvas)
    names = list(classes or sorted({e.label for e in explained}))
    for entry in explained:
        colour = _COLOURS[names.index(entry.label) % len(_COLOURS)] if entry.label in names else (0, 0, 0)
        x0, y0, x1, y1 = (float(v) for v in entry.box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=max(1, base.width // 300))
        draw.text((x0 + 2, max(0.0, y0 - 11)), f"{entry.label} {entry.score:.2f}", fill=colour)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def explain_box_files(predictor, files, out: str | Path, score_threshold: float = 0.3,
                      max_detections: int = 50, method: str = DEFAULT_METHOD,
                      stage: int = DEFAULT_STAGE) -> list[dict[str, Any]]:
    """Explain the boxes of image files (and folders, searched recursively) into ``out``.

    Writes per image ``<n>_<name>.png`` (the overlay of :func:`box_overlay`) and
    ``<n>_<name>.npy`` (``(n_boxes, H, W)`` float32: each box's ``map``, in the order of its
    boxes), and ``explanations.json`` (per image its boxes with class, score, ``mass_inside`` and
    the files). An unreadable image gets an ``error`` entry and the others go on.

    Returns:
        One summary per image (also written to ``out/explanations.json``).
    """
    from ..data.detection_torch import read_rgb
    from ..data.image_files import check_image_file, expand_image_inputs

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    summaries: list[dict[str, Any]] = []
    for index, path in enumerate(expand_image_inputs(files)):
        reason = check_image_file(Path(path))[1]
        if reason:
            summaries.append({"name": str(path), "error": f"{path}: {reason}"})
            continue
        image = read_rgb(Path(path)).float().div(255)
        [explained] = predictor.explain_boxes([image], score_threshold, max_detections, method, stage)
        stem = f"{index:04d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(path).stem)[:60]}"
        png = box_overlay(image, explained, predictor.classes)
        atomic_write(folder / f"{stem}.png", lambda p, png=png: p.write_bytes(png))
        stack = np.stack([e.map for e in explained]) if explained else np.zeros(
            (0, *image.shape[-2:]), dtype=np.float32)
        buffer = io.BytesIO()  # np.save on a path would append ".npy" to the temporary name
        np.save(buffer, stack.astype(np.float32), allow_pickle=False)
        data = buffer.getvalue()
        atomic_write(folder / f"{stem}.npy", lambda p, data=data: p.write_bytes(data))
        summaries.append({"name": str(path), "png": f"{stem}.png", "maps": f"{stem}.npy",
                          "boxes": [e.to_dict() for e in explained]})
    write_json(folder / "explanations.json", summaries)
    return summaries


def explain_boxes_payload(explained: list[BoxExplanation], png: bytes,
                          method: str = DEFAULT_METHOD) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The service's answer for one image: its boxes, each with an ``explanation`` (``method``,
    ``target``: the box's class, ``map``: ``[row][column]`` over ``map_box``, ``mass_inside``),
    and the image's ``explanation`` (``method``, ``overlay_png_base64``)."""
    boxes = []
    for entry in explained:
        summary = entry.to_dict()
        boxes.append({key: summary[key] for key in ("xmin", "ymin", "xmax", "ymax", "class", "score")}
                     | {"explanation": {
                         "method": entry.method, "target": entry.label,
                         "map": np.round(entry.box_map().astype(np.float64), 4).tolist(),
                         "map_box": summary["map_box"], "mass_inside": summary["mass_inside"]}})
    method = explained[0].method if explained else method
    return boxes, {"method": method, "overlay_png_base64": base64.b64encode(png).decode("ascii")}
