"""Guided training: mask files that blank areas which must not drive predictions, and a report of
training images whose class activation map lies mostly inside such an area.

Masks are image files in a folder that mirrors the dataset: the mask of ``<root>/can/can_1.jpg``
is ``<masks>/can/can_1.<png|jpg|...>`` (same relative path and stem, any image format). White
(non-zero) mask pixels mark the area; a mask has the size of its image. Images without a mask
are used as they are. During training (``--masks DIR``, ``RunConfig.masks``) the area is filled
with the network's mean colour before augmentation, so the model cannot learn from it (0 after
normalization). :func:`mask_report` checks a trained model on the unblanked images: where most
of the map's mass lies inside the area, the model is looking at the wrong thing.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import write_json, write_text
from ..data.image_masks import mask_paths, read_mask
from ..data.images import ImageDataset
from ..exceptions import ConfigError
from .engine import explain
from .report import file_stem, html_page, write_explanation

__all__ = ["mask_paths", "mask_report"]


def mask_report(predictor, dataset, masks_dir: str | Path, indices=None, threshold: float = 0.5,
                out: str | Path | None = None) -> list[dict[str, Any]]:
    """Training images whose map of their true class lies mostly inside their mask's area.

    Args:
        predictor: A trained image predictor.
        dataset: The labeled :class:`~sigclass.ImageDataset` the masks belong to.
        masks_dir: The masks folder (see the module docs).
        indices: Positions to check (e.g. the training part); ``None`` checks all.
        threshold: Flag an image when more than this fraction of its map's mass is inside the area.
        out: Folder for ``mask_report.json``, ``mask_report.html`` and overlay PNGs of the
            flagged images.

    Returns:
        One entry per image with a mask: ``name``, ``label``, ``mass_inside`` (0-1), ``flagged``.
    """
    if not isinstance(dataset, ImageDataset):
        raise ConfigError("Mask files blank areas of images; signal datasets take no --masks.")
    positions = range(len(dataset)) if indices is None else [int(i) for i in indices]
    masks = mask_paths(dataset.subset(list(positions)), masks_dir)
    chosen = [(p, m) for p, m in zip(positions, masks, strict=True) if m is not None]
    labels = np.asarray(dataset.labels, dtype=object)
    entries: list[dict[str, Any]] = []
    folder = Path(out) if out is not None else None
    for begin in range(0, len(chosen), 32):
        chunk = chosen[begin:begin + 32]
        items = [dataset.paths[p] for p, _ in chunk]
        targets = [str(labels[p]) if str(labels[p]) in predictor.classes else None for p, _ in chunk]
        for (position, mask), ex in zip(chunk, explain(predictor, items, target=targets), strict=True):
            area = read_mask(mask)
            total = float(ex.map.sum())
            inside = float(ex.map[area].sum()) / total if total > 0 else 0.0
            entry = {"name": dataset.ids[position], "label": str(labels[position]),
                     "explained": ex.label, "mass_inside": inside, "mask_fraction": float(area.mean()),
                     "flagged": inside > threshold}
            if folder is not None and entry["flagged"]:
                entry["png"] = write_explanation(predictor, ex, dataset.paths[position], folder,
                                                 file_stem(position, dataset.ids[position]))["png"]
            entries.append(entry)
    if folder is not None:
        write_json(folder / "mask_report.json", {"threshold": threshold, "n_checked": len(entries),
                                                 "n_flagged": sum(e["flagged"] for e in entries),
                                                 "images": entries})
        _write_html(folder / "mask_report.html", entries, threshold)
    return entries


def _write_html(path: Path, entries: list[dict[str, Any]], threshold: float) -> None:
    """A page with the flagged images, most of the map inside the area first."""
    flagged = sorted((e for e in entries if e["flagged"]), key=lambda e: -e["mass_inside"])
    parts = [f"<p>{len(flagged)} of {len(entries)} images with a mask have more than "
             f"{threshold:.0%} of their class activation map inside the masked area: the model "
             "looks at what should not drive its predictions.</p>"]
    for e in flagged:
        caption = (f"<b>{html.escape(str(e['name']))}</b><br>label {html.escape(e['label'])}, "
                   f"{e['mass_inside']:.0%} of the map inside the area "
                   f"({e['mask_fraction']:.0%} of the image)")
        picture = f"<img src='{html.escape(e['png'])}' alt='map'><br>" if e.get("png") else ""
        parts.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
    write_text(path, html_page("Mask check", parts))
