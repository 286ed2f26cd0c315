"""Test-time augmentation views: the flips and rotations of an image under which its class holds.

A view is a short name of steps applied in order to the last two axes (height, width) of a
batch: ``t`` transposes, ``h`` mirrors left-right, ``v`` mirrors top-bottom; ``"id"`` is the
image itself. A TTA group is a set of views averaged together:

- ``none``: the image only;
- ``hflip``: the image and its mirror (natural photos);
- ``flips``: the four flips (top views, cells, tiles, micrographs);
- ``dihedral``: the eight flips and quarter turns of a square.

The same functions run on torch tensors and numpy arrays, and :func:`invert_view` maps a class
activation map computed on a view back onto the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..choices import TTA_CHOICES, check_choice

TTA_GROUPS: dict[str, tuple[str, ...]] = {
    "none": ("id",),
    "hflip": ("id", "h"),
    "flips": ("id", "h", "v", "hv"),
    "dihedral": ("id", "h", "v", "hv", "t", "th", "tv", "thv"),
}


def resolve_tta(value: Any) -> str:
    """A ``tta`` setting as a group name: ``True`` is ``"hflip"``, ``False``/``None`` ``"none"``."""
    if value is True:
        return "hflip"
    if value is False or value is None:
        return "none"
    check_choice("tta", value, TTA_CHOICES)
    return str(value)


def tta_of(data_config: dict[str, Any]) -> str:
    """The TTA group stored in a data config (model folders written before groups say
    ``tta_hflip``)."""
    if "tta" in data_config:
        return resolve_tta(data_config["tta"])
    return "hflip" if data_config.get("tta_hflip") else "none"


def views_of(data_config: dict[str, Any]) -> tuple[str, ...]:
    """The views averaged at prediction time under ``data_config``."""
    group = tta_of(data_config)
    return TTA_GROUPS["none" if group == "auto" else group]


def _flip(x, axis: int):
    return x.flip(axis) if hasattr(x, "flip") else np.flip(x, axis)


def _transpose(x):
    return x.transpose(-1, -2) if hasattr(x, "flip") else np.swapaxes(x, -1, -2)


_STEPS = {"t": _transpose, "h": lambda x: _flip(x, -1), "v": lambda x: _flip(x, -2)}


def apply_view(x, view: str):
    """``x`` (``(..., H, W)``, torch or numpy) seen through ``view``."""
    if view == "id":
        return x
    for step in view:
        x = _STEPS[step](x)
    return x


def invert_view(x, view: str):
    """Undo :func:`apply_view`: each step is its own inverse, so they run in reverse order."""
    if view == "id":
        return x
    for step in reversed(view):
        x = _STEPS[step](x)
    return x
