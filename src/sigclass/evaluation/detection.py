"""Detection metrics by the COCO protocol (pycocotools): mAP@[.5:.95], mAP@0.5, per class AP and
recall.

The ground truth and the detections are handed to ``pycocotools.cocoeval.COCOeval`` as in-memory
COCO documents; areas are the boxes' own (no segmentation), no box is ``iscrowd``.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

__all__ = ["detection_metrics"]


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


def detection_metrics(predictions, targets, classes: list[str], max_detections: int = 100) -> dict:
    """COCO metrics of ``predictions`` against ``targets``.

    Args:
        predictions: Per image, ``{"boxes" (n, 4) xyxy, "labels" (n,) 1-based, "scores" (n,)}``.
        targets: Per image, ``{"boxes", "labels"}`` alike.
        classes: Class names; label ``i`` is ``classes[i - 1]``.
        max_detections: Detections per image kept by the protocol.

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
    return {"map": stats[0], "map_50": stats[1], "map_75": stats[2], "mar_100": stats[8],
            "per_class": per_class, "n_images": len(truth["images"]),
            "n_boxes": int(n_truth.sum()), "max_detections": int(max_detections),
            "protocol": "COCO bbox (pycocotools), IoU 0.50:0.95, all areas"}
