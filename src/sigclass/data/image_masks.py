"""Mask files of guided training: areas of images that must not drive predictions.

Masks are image files in a folder that mirrors the dataset: the mask of ``<root>/can/can_1.jpg``
is ``<masks>/can/can_1.<png|jpg|...>`` (same relative path and stem, any image format). White
(non-zero) mask pixels mark the area; a mask has the size of its image. Images without a mask
are used as they are. During training (``--masks DIR``, ``RunConfig.masks``) the area is filled
with the network's mean colour before augmentation, so the model cannot learn from it (0 after
normalization); :func:`sigclass.explain.guided.mask_report` checks a trained model against them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError, DataError, Problem
from .file_checks import file_problem
from .image_files import IMAGE_EXTENSIONS


def mask_paths(dataset, masks_dir: str | Path) -> list[Path | None]:
    """The mask file of every image of ``dataset`` (``None`` where it has none), checked.

    Raises:
        ConfigError: ``masks_dir`` is not a folder, or the dataset holds no images.
        DataError: Masks that cannot be read or whose size differs from their image, all listed.
    """
    from PIL import Image

    folder = Path(masks_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"The masks folder '{folder}' does not exist. Pass a folder that mirrors "
                          "the dataset (masks/<class>/<image stem>.png).")
    found: list[Path | None] = []
    problems: list[Problem] = []
    for key, path in zip(dataset.ids, dataset.paths, strict=True):
        stem = Path(key).with_suffix("")
        candidates = [folder / stem.parent / f"{stem.name}{ext}" for ext in sorted(IMAGE_EXTENSIONS)]
        mask = next((c for c in candidates if os.path.lexists(c)), None)
        reason = file_problem(mask) if mask is not None else ""
        if reason:  # a pipe or a device is named, never opened
            problems.append(Problem(str(mask), reason))
        found.append(mask)
        if mask is None or reason:
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
