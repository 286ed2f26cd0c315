"""Detection metrics by the COCO protocol (pycocotools): mAP@[.5:.95], mAP@0.5, per class AP,
recall and precision-recall curves; per image matches (:func:`image_matches`) that rank the
images of a report from worst to best.

The ground truth and the detections are handed to ``pycocotools.cocoeval.COCOeval`` as in-memory
COCO documents; areas are the boxes' own (no segmentation), no box is ``iscrowd``.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

__all__ = ["detection_metrics", "image_matches"]

#: The recall points of the COCO protocol's interpolated precision (0, 0.01, ..., 1).
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _coco_documents(predictions, targets, classes):
    images, annotations, detections = [], [], []
    for image_id, (pred, target) in enumerate(zip(predictions, targets, strict=True), start=1):
        images.append({"id": image_id})
        for box, label in zip(np.asarray(target["boxes"]).reshape(-1, 4),
                              np.asarray(target["labels"]).reshape(-1), strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        for box, label, score in zip(np.asarray(pred["boxes"]).reshape(-1, 4),
                                     np.asarray(pred["labels"]).reshape(-1),
                                     np.asarray(pred["scores"]).reshape(-1), strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            detections.append({"image_id": image_id, "category_id": int(label),
                               "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    truth = {"images": images, "annotations": annotations, "categories": categories}
    return truth, detections


def detection_metrics(predictions, targets, classes: list[str], max_detections: int = 100,
                      curves: bool = False) -> dict:
    """COCO metrics of ``predictions`` against ``targets``.

    Args:
        predictions: Per image, ``{"boxes" (n, 4) xyxy, "labels" (n,) 1-based, "scores" (n,)}``.
        targets: Per image, ``{"boxes", "labels"}`` alike.
        classes: Class names; label ``i`` is ``classes[i - 1]``.
        max_detections: Detections per image kept by the protocol.
        curves: Add ``pr_curves``: per class with boxes, the interpolated precision at IoU 0.5
            at the protocol's 101 recall points (``recall``), cut where it ends (-1 in COCO).

    Returns:
        ``map`` (mAP@[.5:.95]), ``map_50``, ``map_75``, ``mar_100`` (mean recall at
        ``max_detections``), and ``per_class``: per class ``ap``, ``ap_50``, ``recall``,
        ``recall_50`` and its numbers of ground-truth boxes and detections. A class without any
        ground-truth box has ``null`` AP and recall and is left out of the means.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth, detections = _coco_documents(predictions, targets, classes)
    n_truth = np.bincount([a["category_id"] for a in truth["annotations"]], minlength=len(classes) + 1)
    n_dets = np.bincount([d["category_id"] for d in detections], minlength=len(classes) + 1)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        if detections:
            dt = gt.loadRes(detections)
        else:  # pycocotools refuses an empty result list: an empty result document instead
            dt = COCO()
            dt.dataset = {"images": truth["images"], "annotations": [], "categories": truth["categories"]}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, max dets]
    recall = evaluator.eval["recall"]  # [iou, class, area, max dets]

    def mean(values) -> float | None:
        values = np.asarray(values)
        values = values[values > -1]
        return float(values.mean()) if values.size else None

    per_class = {}
    for k, name in enumerate(classes):
        has_truth = n_truth[k + 1] > 0
        per_class[name] = {
            "ap": mean(precision[:, :, k, 0, -1]) if has_truth else None,
            "ap_50": mean(precision[0, :, k, 0, -1]) if has_truth else None,
            "recall": mean(recall[:, k, 0, -1]) if has_truth else None,
            "recall_50": mean(recall[0, k, 0, -1]) if has_truth else None,
            "n_boxes": int(n_truth[k + 1]),
            "n_detections": int(n_dets[k + 1]),
        }
    stats = [max(0.0, float(v)) for v in evaluator.stats]
    extra = {}
    if curves:
        extra["pr_curves"] = {"recall": [round(float(r), 2) for r in RECALL_POINTS], "iou": 0.5,
                              "precision": {name: _curve(precision[0, :, k, 0, -1])
                                            for k, name in enumerate(classes) if n_truth[k + 1]}}
    return {**extra, "map": stats[0], "map_50": stats[1], "map_75": stats[2], "mar_100": stats[8],
            "per_class": per_class, "n_images": len(truth["images"]),
            "n_boxes": int(n_truth.sum()), "max_detections": int(max_detections),
            "protocol": "COCO bbox (pycocotools), IoU 0.50:0.95, all areas"}


def _curve(values: np.ndarray) -> list[float]:
    values = np.asarray(values, dtype=float)
    return [round(float(v), 4) for v in values[values > -1]]


def image_matches(prediction, target, score_threshold: float = 0.5, iou: float = 0.5) -> dict:
    """True and false positives and missed boxes of one image: detections scoring at least
    ``score_threshold``, matched greedily (highest score first) to an unmatched true box of
    their class with IoU at least ``iou``; ``f1`` is 1 for an image with neither boxes nor
    detections."""
    boxes = np.asarray(prediction["boxes"], dtype=float).reshape(-1, 4)
    labels = np.asarray(prediction["labels"]).reshape(-1)
    scores = np.asarray(prediction["scores"], dtype=float).reshape(-1)
    keep = np.flatnonzero(scores >= score_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    truth = np.asarray(target["boxes"], dtype=float).reshape(-1, 4)
    truth_labels = np.asarray(target["labels"]).reshape(-1)
    overlap = _iou(boxes[keep], truth)
    used = np.zeros(len(truth), dtype=bool)
    tp = 0
    for row, index in enumerate(keep):
        candidates = (truth_labels == labels[index]) & ~used & (overlap[row] >= iou)
        if candidates.any():
            used[np.flatnonzero(candidates)[np.argmax(overlap[row][candidates])]] = True
            tp += 1
    fp, fn = len(keep) - tp, len(truth) - tp
    f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "f1": f1}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(n, 4)`` and ``(m, 4)`` xyxy boxes (torchvision's ``box_iou``)."""
    import torch
    from torchvision.ops import box_iou

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return box_iou(torch.as_tensor(a), torch.as_tensor(b)).numpy()
