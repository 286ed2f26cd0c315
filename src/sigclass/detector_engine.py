"""A detector on ONNX Runtime: the torchvision network exported whole, and the engine that runs it.

The exported graph is the detector as PyTorch runs it in evaluation: it takes one image
``(3, H, W)`` in ``[0, 1]`` of any height and width, resizes and normalizes it itself, and returns
``boxes`` ``(n, 4)`` in the image's own pixels, ``labels`` (class ids, 1-based) and ``scores``,
highest score first. It is written by torch.onnx's TorchScript exporter (``dynamo=False``, the
path torchvision documents for its detection models; opset 17) with dynamic height and width,
and kept in the sigclass cache folder keyed by the model's checksums, like a classifier's graph.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ._utils import atomic_write
from .artifacts import graph_cache_path
from .exceptions import ConfigError
from .inference import OnnxEngine

__all__ = ["OPSET", "OnnxDetectionEngine", "check_graph", "compare_detections",
           "detector_graph_path", "export_detector_onnx"]

logger = logging.getLogger(__name__)

OPSET = 17
OUTPUTS = ("boxes", "labels", "scores")


def detector_graph_path(predictor, explicit: str | Path | None = None) -> Path | None:
    """Where a saved detector's ONNX graph is kept: ``explicit``, else the sigclass cache folder
    keyed by the model's checksums (``None`` for a model that was never saved)."""
    return graph_cache_path(predictor.info.get("path"), {"task": "detection", "opset": OPSET},
                            explicit, prefix="detector-")


def export_detector_onnx(network, path: str | Path, example_size: tuple[int, int] = (96, 128)) -> Path:
    """Export a torchvision detector (eval mode, float32, CPU) to ``path``, written atomically.

    Args:
        network: A detector of :func:`~sigclass.models.detection.build_detector`.
        path: Destination ``.onnx`` file.
        example_size: Height and width of the image traced (any size runs afterwards).

    Raises:
        ConfigError: The exporter cannot convert this detector.
    """
    import torch

    network = network.eval().float().cpu()
    example = torch.rand(3, *example_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # the graph's outputs follow the keys of the network's dict
        names = list(network([example])[0])  # (RetinaNet and FCOS: boxes, scores, labels)
    axes = {"image": {1: "height", 2: "width"}, **{name: {0: "found"} for name in names}}

    def write(tmp: Path) -> None:
        for name in ("torch.onnx", "onnx_ir", "onnxscript"):  # the exporter is chatty
            logging.getLogger(name).setLevel(logging.ERROR)
        # Tracer warnings: torchvision's shape arithmetic, recorded as graph operations.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(network, ([example],), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=names,
                              dynamic_axes=axes, do_constant_folding=True)

    name = getattr(network, "model_spec", {}).get("name", type(network).__name__)
    try:
        return atomic_write(Path(path), write)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds of errors
        raise ConfigError(f"The detector '{name}' cannot be exported to ONNX "
                          f"({' '.join(str(exc).split())[:300]}); run it with --backend torch.") from None


class OnnxDetectionEngine(OnnxEngine):
    """Runs an exported detector graph with ONNX Runtime on the CPU, one image per call."""

    def __call__(self, image) -> dict[str, np.ndarray]:
        """``boxes``, ``labels`` and ``scores`` of one image ``(3, H, W)`` in ``[0, 1]``."""
        array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
        out = self.session.run(list(OUTPUTS),
                               {self.input_name: np.ascontiguousarray(array, dtype=np.float32)})
        return dict(zip(OUTPUTS, out, strict=True))


def compare_detections(expected: dict[str, Any], got: dict[str, Any], min_score: float = 0.1,
                       min_iou: float = 0.99, max_pixels: float = 1.0, rank: int = 90) -> dict[str, Any]:
    """How far two engines' detections of one image are apart.

    Each box of either side scoring at least ``min_score`` among its first ``rank`` (boxes near
    the score threshold or the detection cap may fall on either side of it) is paired with the
    other side's box of the same label nearest to it (largest coordinate difference); the pair
    matches when they overlap by IoU >= ``min_iou`` or no coordinate differs by more than
    ``max_pixels`` (boxes of zero area have no IoU).

    Returns:
        ``n_boxes`` compared (from both sides), ``unmatched`` (boxes without a match),
        ``max_box_diff`` (pixels) and ``max_score_diff`` over the matched pairs.
    """
    import torch
    from torchvision.ops import box_iou

    result = {"n_boxes": 0, "unmatched": 0, "max_box_diff": 0.0, "max_score_diff": 0.0}
    for one, other in ((expected, got), (got, expected)):
        boxes = np.asarray(one["boxes"], dtype=np.float32).reshape(-1, 4)
        others = np.asarray(other["boxes"], dtype=np.float32).reshape(-1, 4)
        labels, other_labels = np.asarray(one["labels"]), np.asarray(other["labels"])
        iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(others)).numpy()
        for i in range(min(len(boxes), rank)):
            if float(one["scores"][i]) < min_score:
                continue
            result["n_boxes"] += 1
            same = np.flatnonzero(other_labels == labels[i])
            if not len(same):
                result["unmatched"] += 1
                continue
            diffs = np.abs(others[same] - boxes[i]).max(axis=1)
            j = same[int(np.argmin(diffs))]
            if not (diffs.min() <= max_pixels or iou[i, j] >= min_iou):
                result["unmatched"] += 1
                continue
            result["max_box_diff"] = max(result["max_box_diff"], float(diffs.min()))
            result["max_score_diff"] = max(result["max_score_diff"],
                                           abs(float(one["scores"][i]) - float(other["scores"][j])))
    return result


def check_images(side: int, n: int, seed: int = 0) -> list:
    """``n`` synthetic images ``(3, side, 4/3 side)`` in ``[0, 1]``: smooth random blobs (random
    colours on a coarse grid, upsampled), on which a detector finds boxes of many sizes."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    height, width = side, round(side * 4 / 3)
    coarse = torch.rand(n, 3, max(2, height // 12), max(2, width // 12), generator=generator)
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear",
                                           align_corners=False)
    return list(fine.clamp(0, 1))


def check_graph(network, path: str | Path, side: int, n_check: int = 2, seed: int = 0,
                max_box_diff: float = 2.0, max_score_diff: float = 1e-3) -> dict[str, Any]:
    """Run ``network`` with PyTorch and the graph at ``path`` with ONNX Runtime on ``n_check``
    images of :func:`check_images` and compare their detections (:func:`compare_detections`,
    boxes above the network's score threshold).

    Returns:
        ``n_checked`` images, ``n_boxes``, ``max_box_diff`` (pixels) and ``max_score_diff``.

    Raises:
        ConfigError: A box has no counterpart, or the engines differ by more than the tolerances.
    """
    import torch

    engine = OnnxDetectionEngine(path)
    network = network.eval().float().cpu()
    head = getattr(network, "roi_heads", network)  # Faster R-CNN's, or RetinaNet's and FCOS's own
    floor = float(getattr(head, "score_thresh", 0.05)) + 0.01
    totals = {"n_checked": n_check, "n_boxes": 0, "max_box_diff": 0.0, "max_score_diff": 0.0}
    for image in check_images(side, n_check, seed):
        with torch.inference_mode():
            out = network([image])[0]
        expected = {k: v.numpy() for k, v in out.items()}
        report = compare_detections(expected, engine(image), min_score=floor)
        if report["unmatched"]:
            raise ConfigError(f"ONNX Runtime and PyTorch find different boxes with the graph "
                              f"'{path}' ({report['unmatched']} of {report['n_boxes']} unmatched); "
                              "run this detector with --backend torch.")
        totals["n_boxes"] += report["n_boxes"]
        for key in ("max_box_diff", "max_score_diff"):
            totals[key] = max(totals[key], report[key])
    if totals["max_box_diff"] > max_box_diff or totals["max_score_diff"] > max_score_diff:
        raise ConfigError(f"ONNX Runtime differs from PyTorch on the graph '{path}' by "
                          f"{totals['max_box_diff']:.3g} px (box) and {totals['max_score_diff']:.3g} "
                          f"(score), over the tolerance ({max_box_diff} px, {max_score_diff}); run "
                          "this detector with --backend torch.")
    return totals
