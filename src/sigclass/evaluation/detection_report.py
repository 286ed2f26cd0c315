"""The report of a detector on labeled images: the precision-recall curves and a page of images
with the predicted and the true boxes drawn, the worst images first, then the best.

:func:`write_detection_report` writes into a folder (``report/`` of a detection run, or the
``--out`` of ``sigclass evaluate``): ``pr_curves.png``, ``images/*.jpg`` and ``report.html``.
Images are ranked by the F1 score of their boxes (:func:`~sigclass.evaluation.detection.image_matches`:
detections scoring at least ``score_threshold`` matched at IoU 0.5), ties broken by the number
of boxes, so the page opens on what the detector gets most wrong.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write
from ..explain.report import html_page
from .detection import image_matches
from .plots import plot_pr_curves

__all__ = ["draw_boxes", "write_detection_report"]

#: Colours of the classes in drawings (cycled).
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40))
TRUE_COLOUR = (255, 255, 255)
#: Longest side of a drawn image on the page.
PAGE_SIDE = 640


def draw_boxes(image, prediction: dict[str, Any], classes: list[str],
               target: dict[str, Any] | None = None, score_threshold: float = 0.5,
               max_side: int = PAGE_SIDE):
    """A PIL image with the true boxes (thin, white, under) and the detections scoring at least
    ``score_threshold`` (class colour, with class and score), scaled to ``max_side`` at most.

    Args:
        image: A PIL image in RGB.
        prediction: ``boxes`` (n, 4) xyxy in the image's pixels, ``labels`` (1-based), ``scores``.
        classes: Class names; label ``i`` is ``classes[i - 1]``.
        target: ``boxes`` and ``labels`` of the truth, or ``None``.
    """
    from PIL import ImageDraw

    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    if target is not None:
        for box in np.asarray(target["boxes"], dtype=float).reshape(-1, 4) * scale:
            draw.rectangle(box.tolist(), outline=TRUE_COLOUR, width=1)
    boxes = np.asarray(prediction["boxes"], dtype=float).reshape(-1, 4) * scale
    for box, label, score in zip(boxes, np.asarray(prediction["labels"]).reshape(-1),
                                 np.asarray(prediction["scores"], dtype=float).reshape(-1), strict=True):
        if score < score_threshold:
            continue
        colour = PALETTE[(int(label) - 1) % len(PALETTE)]
        draw.rectangle(box.tolist(), outline=colour, width=2)
        text = f"{classes[int(label) - 1]} {score:.2f}"
        left, top = float(box[0]), max(0.0, float(box[1]) - 11)
        draw.rectangle(draw.textbbox((left, top), text), fill=colour)
        draw.text((left, top), text, fill=(0, 0, 0))
    return image


def write_detection_report(folder: str | Path, paths: list[str | Path], predictions: list[dict],
                           targets: list[dict], classes: list[str], metrics: dict[str, Any],
                           score_threshold: float = 0.5, per_end: int = 12) -> Path:
    """Write ``pr_curves.png`` and ``report.html`` with the ``per_end`` worst and best images.

    Args:
        folder: Where to write (created).
        paths: The image files, in the order of ``predictions`` and ``targets``.
        predictions: Per image, ``boxes``, ``labels`` (1-based) and ``scores``.
        targets: Per image, the true ``boxes`` and ``labels``.
        classes: Class names.
        metrics: :func:`~sigclass.evaluation.detection.detection_metrics` with ``curves=True``.
        score_threshold: The detections drawn and matched for the ranking.

    Returns:
        The path of ``report.html``.
    """
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    parts = [f"<p>{len(paths)} images, {metrics['n_boxes']} true boxes. mAP@[.5:.95] "
             f"{metrics['map']:.3f}, mAP@0.5 {metrics['map_50']:.3f} ({html.escape(metrics['protocol'])}).</p>"]
    if metrics.get("pr_curves", {}).get("precision"):
        plot_pr_curves(metrics["pr_curves"], folder / "pr_curves.png")
        parts.append("<figure><img src='pr_curves.png' alt='precision-recall curves'></figure>")
    scores = [image_matches(p, t, score_threshold) for p, t in zip(predictions, targets, strict=True)]
    order = sorted(range(len(paths)), key=lambda i: (scores[i]["f1"], -len(np.asarray(targets[i]["labels"]))))
    worst = order[:per_end]
    best = [i for i in reversed(order) if i not in set(worst)][:per_end]
    legend = (f"Detections scoring at least {score_threshold:g} in class colours with their score; "
              "true boxes thin and white. F1 of the boxes at IoU 0.5.")
    for title, chosen in (("Worst images", worst), ("Best images", best)):
        if not chosen:
            continue
        parts.append(f"<h2>{title}</h2><p>{legend}</p>")
        for i in chosen:
            name = f"{i:04d}-{Path(paths[i]).stem}.jpg"
            with Image.open(paths[i]) as image:
                drawn = draw_boxes(image, predictions[i], classes, targets[i], score_threshold)
            atomic_write(folder / "images" / name, lambda p, d=drawn: d.save(p, format="JPEG", quality=85))
            s = scores[i]
            caption = (f"{html.escape(Path(paths[i]).name)}: F1 {s['f1']:.2f} ({s['tp']} found, "
                       f"{s['fp']} false, {s['fn']} missed)")
            parts.append(f"<figure><img src='images/{html.escape(name)}' alt='boxes'>"
                         f"<figcaption>{caption}</figcaption></figure>")
    page = html_page(html.escape(f"Detections: {', '.join(classes)}"), parts)
    atomic_write(folder / "report.html", lambda p: Path(p).write_text(page, encoding="utf-8"))
    return folder / "report.html"
