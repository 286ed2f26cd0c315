"""The networks sigclass ships, all registered: :func:`create_model` and :func:`list_models`.

Every architecture module registers its networks when it is imported; this module imports them
all, so that a name from :func:`list_models` always builds. Any timm architecture name works too.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from . import efficientnet, image_features, signal, signal_baselines, signal_features, simple  # noqa: F401 - they register their networks
from .registry import ModelEntry, build_model, registered

__all__ = ["create_model", "is_model", "list_models", "model_entry"]


def list_models(
    pattern: str = "*", modality: str | None = None, pretrained: bool | None = None
) -> list[str]:
    """Names of the networks sigclass registers.

    Args:
        pattern: Shell-style wildcard on the name, e.g. ``"efficientnet*"``.
        modality: Keep only ``"image"`` or ``"signal"`` networks.
        pretrained: Keep only networks with (``True``) or without (``False``) offline weights.

    Returns:
        Sorted registry names. Any timm architecture name is accepted by :func:`create_model` too.
    """
    names = []
    for entry in registered():
        if not fnmatch.fnmatch(entry.name, pattern):
            continue
        if modality is not None and entry.modality != modality:
            continue
        if pretrained is not None and entry.has_pretrained != pretrained:
            continue
        names.append(entry.name)
    return sorted(names)


def model_entry(name: str) -> ModelEntry | None:
    """The registry entry of ``name``, or ``None`` for a plain timm name."""
    return next((entry for entry in registered() if entry.name == name), None)


def is_model(name: str) -> bool:
    """Whether :func:`create_model` knows ``name`` (registered or a timm architecture)."""
    if model_entry(name) is not None:
        return True
    import timm

    return timm.is_model(name)


def create_model(
    name: str,
    n_classes: int,
    pretrained: bool = False,
    in_chans: int | None = None,
    weights: str | Path | None = None,
    **kwargs: Any,
):
    """Build a network by name.

    Args:
        name: A name from :func:`list_models`, or any timm architecture name.
        n_classes: Width of the classifier; ``0`` gives a featurizer returning pooled features.
        pretrained: Load pretrained weights. They must be available offline (shipped with
            sigclass, given by ``weights``, or present in the local Hugging Face cache); if they
            cannot be found a :class:`~sigclass.exceptions.WeightsNotFoundError` says how to
            supply them.
        in_chans: Input channels (image channels, or signal channels). ``None`` keeps the default.
        weights: A ``.safetensors`` or ``.pth`` state dict to load into the network. A classifier
            whose shape does not match ``n_classes`` is left freshly initialised.
        **kwargs: Architecture options (e.g. ``input_size`` for flatten heads, ``n_timepoints``).
            ``feature_pool="stages"`` with ``n_classes=0`` gives a featurizer pooling several
            stages (:class:`~sigclass.models.stage_pool.StagePooled`).

    Returns:
        A ``torch.nn.Module`` following the backbone/head contract, with a ``model_spec`` dict
        holding everything needed to build it again.
    """
    return build_model(name, n_classes, pretrained, in_chans, weights, **kwargs)
