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

from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError, DataError, Problem


def mask_paths(dataset, masks_dir: str | Path) -> list[Path | None]:
    """The mask file of every image of ``dataset`` (``None`` where it has none), checked.

    Raises:
        ConfigError: ``masks_dir`` is not a folder, or the dataset holds no images.
        DataError: Masks that cannot be read or whose size differs from their image, all listed.
    """
    from PIL import Image

    from ..data.images import IMAGE_EXTENSIONS

    if getattr(dataset, "modality", "image") != "image":
        raise ConfigError("Mask files blank areas of images; signal datasets take no --masks.")
    folder = Path(masks_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"The masks folder '{folder}' does not exist. Pass a folder that mirrors "
                          "the dataset (masks/<class>/<image stem>.png).")
    found: list[Path | None] = []
    problems: list[Problem] = []
    for key, path in zip(dataset.ids, dataset.paths, strict=True):
        stem = Path(key).with_suffix("")
        candidates = [folder / stem.parent / f"{stem.name}{ext}" for ext in sorted(IMAGE_EXTENSIONS)]
        mask = next((c for c in candidates if c.is_file()), None)
        found.append(mask)
        if mask is None:
            continue
        try:
            with Image.open(mask) as m, Image.open(path) as im:
                if m.size != im.size:
                    problems.append(Problem(str(mask), f"mask is {m.size[0]}x{m.size[1]} but its "
                                            f"image '{key}' is {im.size[0]}x{im.size[1]}; draw the "
                                            "mask at the image's size"))
        except Exception as exc:  # noqa: BLE001 - any decoding failure names the file
            problems.append(Problem(str(mask), f"cannot be read as a mask image: {exc}"))
    if problems:
        raise DataError(problems, hint="Fix or remove these mask files.")
    return found


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file as a boolean ``(H, W)`` array (True where the pixel is not black)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0


def blank_masked(image, mask: str | Path | np.ndarray, fill) -> Any:
    """``image`` (PIL) with the mask's area set to ``fill`` (one value per channel, 0-255)."""
    from PIL import Image

    area = read_mask(mask) if isinstance(mask, str | Path) else np.asarray(mask, dtype=bool)
    array = np.array(image)
    if area.shape != array.shape[:2]:
        raise DataError(Problem(str(mask) if isinstance(mask, str | Path) else "mask",
                                f"mask is {area.shape[1]}x{area.shape[0]} but the image is "
                                f"{array.shape[1]}x{array.shape[0]}"))
    array[area] = np.asarray(fill, dtype=array.dtype) if array.ndim == 3 else fill[0]
    return Image.fromarray(array, mode=image.mode)


def mask_fill(data_config: dict[str, Any]) -> tuple[int, ...]:
    """The colour that normalizes to 0: the network's mean, in 0-255."""
    return tuple(int(round(255 * float(m))) for m in data_config["mean"])


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
    from .cam import explain

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
                from .report import _stem, write_explanation

                entry["png"] = write_explanation(predictor, ex, dataset.paths[position], folder,
                                                 _stem(position, dataset.ids[position]))["png"]
            entries.append(entry)
    if folder is not None:
        from .._utils import write_json

        write_json(folder / "mask_report.json", {"threshold": threshold, "n_checked": len(entries),
                                                 "n_flagged": sum(e["flagged"] for e in entries),
                                                 "images": entries})
        _write_html(folder / "mask_report.html", entries, threshold)
    return entries


def _write_html(path: Path, entries: list[dict[str, Any]], threshold: float) -> None:
    """A page with the flagged images, most of the map inside the area first."""
    import html

    from .._utils import write_text
    from .report import html_page

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
