"""Pictures of explanations: a heat map over the image, or each channel shaded by the map."""

from __future__ import annotations

from ..modalities import modality_of
from .cam import Explanation


def render_overlay(explanation: Explanation, input, alpha: float = 0.45,
                   classes: list[str] | None = None, channel_names: list[str] | None = None) -> bytes:
    """A PNG of the explanation over its input, drawn by the input's modality.

    Args:
        explanation: What :func:`~sigclass.explain.explain` returned for ``input``.
        input: The same input: an image (path, bytes, PIL image, array) or a signal case
            ``(C, T)`` / ``(T,)``.
        alpha: Opacity of the heat map over an image.
        classes: Class names, to caption the predicted class when it differs from the target.
        channel_names: Signals: names of the channels (default ``ch0``, ``ch1``...).

    Returns:
        PNG bytes: the image with a heat map and a caption, or one panel per channel with the map
        as shading over time.
    """
    return modality_of(explanation).render(explanation, input, alpha, classes, channel_names)
