"""The registry of modalities: :func:`modality_of` answers for a name, a dataset, a predictor, a
configuration or an explanation, and :func:`detect_modality` for a data source;
:func:`lean_modality` gives the torch-free part of one for the lean serving runtime.

See :class:`~sigclass.modalities.base.Modality` for the contract. A new modality is a
:class:`~sigclass.modalities.base.LeanModality` subclass in a torch-free file of its own (how its
uploads are read, a bundle's preprocessing), added to :data:`LEAN` here, and a subclass of that and
of :class:`~sigclass.modalities.base.Modality` in another file, added to :data:`MODALITIES` (and its
name to :data:`sigclass.choices.MODALITIES`, which the options offer).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ..choices import MODALITIES as NAMES
from ..choices import check_choice
from .base import LeanModality, Modality
from .image_lean import LeanImage
from .signal_lean import LeanSignal

__all__ = ["LEAN", "MODALITIES", "LeanModality", "Modality", "detect_modality", "lean_modality",
           "modality_of", "resolve_modality"]

#: The lean part of each modality, by name: NumPy and Pillow only, for :mod:`sigclass.runtime`.
LEAN: dict[str, LeanModality] = {m.name: m for m in (LeanImage(), LeanSignal())}


@cache
def _registry() -> dict[str, Modality]:
    # Built on first use: the modalities import the networks (PyTorch), which the lean serving
    # runtime (sigclass.runtime) must not load when it reaches LEAN.
    from .image import ImageModality
    from .signal import SignalModality

    return {m.name: m for m in (ImageModality(), SignalModality())}


def __getattr__(name: str):
    if name == "MODALITIES":  # the registry, {name: modality}
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
#: What a source no modality claims is read as: a folder of class subfolders or a CSV manifest.
FALLBACK = "image"


def modality_of(thing: Any) -> Modality:
    """The modality of ``thing``: a name (``"image"``), anything with a ``modality`` (a dataset,
    predictor, run configuration or served model), or an explanation (by its map's dimensions).

    Raises:
        ConfigError: The name is not a registered modality.
    """
    name = thing if isinstance(thing, str) else getattr(thing, "modality", None)
    if name is None and hasattr(thing, "map"):
        name = next((m.name for m in _registry().values() if m.map_ndim == thing.map.ndim), None)
    check_choice("modality", name, NAMES)
    return _registry()[name]


def lean_modality(name: str) -> LeanModality:
    """The lean part of the modality ``name`` (a bundle's ``modality``), without PyTorch.

    Raises:
        ConfigError: The name is not a registered modality.
    """
    check_choice("modality", name, NAMES)
    return LEAN[name]


def detect_modality(source: str) -> Modality:
    """The modality that claims a data source, else :data:`FALLBACK`."""
    text = str(source)
    registry = _registry()
    return next((m for m in registry.values() if m.claims(text)), registry[FALLBACK])


def resolve_modality(name: str, source) -> Modality:
    """The modality ``name`` (an option's value), or for ``"auto"`` the one of ``source``."""
    return detect_modality(str(source)) if name == "auto" else modality_of(name)
