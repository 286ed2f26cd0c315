"""Pictures: an image with a map as a heat map, a signal with a map as shading behind each
channel, and plain channel plots. The modalities draw their explanations with these.
"""

from __future__ import annotations

import io

import numpy as np

from ..data.image_preprocess import load_image
from ..data.signal_preprocess import as_case

MAX_CHANNELS_PLOTTED = 16
COLORMAP = "jet"


def caption(explanation, classes: list[str] | None) -> str:
    text = f"{explanation.label} {explanation.confidence:.2f} ({explanation.method})"
    if classes is not None and explanation.predicted != explanation.target:
        text += f" | predicted {classes[explanation.predicted]}"
    return text


def heatmap_rgb(values: np.ndarray) -> np.ndarray:
    """``(H, W)`` values in ``[0, 1]`` as ``(H, W, 3)`` uint8 colours."""
    from matplotlib import colormaps

    return (colormaps[COLORMAP](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def blend_heatmap(base, values: np.ndarray, alpha: float = 0.45):
    """The PIL image ``base`` with ``values`` (``(H, W)`` in ``[0, 1]``) as a colour heat map
    whose opacity grows with the value (low-map areas stay close to the photo)."""
    from PIL import Image

    weight = (alpha * values)[..., None]
    blended = (1 - weight) * np.asarray(base, dtype=np.float32) + weight * heatmap_rgb(values)
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))


def render_image(explanation, image, alpha: float = 0.45,
                 classes: list[str] | None = None) -> bytes:
    """The image with the map as a colour heat map and a caption strip."""
    from PIL import Image, ImageDraw

    base = load_image(image, 3)
    cam = explanation.map
    if cam.shape != (base.height, base.width):
        raise ValueError(f"The map has shape {cam.shape} but the image is "
                         f"{base.height}x{base.width}; pass the input that was explained.")
    overlay = blend_heatmap(base, cam, alpha)
    strip = max(14, base.height // 12)
    canvas = Image.new("RGB", (base.width, base.height + strip), (255, 255, 255))
    canvas.paste(overlay, (0, strip))
    ImageDraw.Draw(canvas).text((2, 1), caption(explanation, classes), fill=(0, 0, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def render_signal(explanation, case, classes: list[str] | None = None,
                  channel_names: list[str] | None = None) -> bytes:
    """One panel per channel: the series, the map as shading behind it, the channel's importance."""
    from matplotlib.figure import Figure

    values = as_case(case)
    cam = explanation.map
    n_channels, length = values.shape
    if cam.shape[0] != length:
        raise ValueError(f"The map has {cam.shape[0]} timepoints but the signal has {length}; "
                         "pass the input that was explained.")
    shown = min(n_channels, MAX_CHANNELS_PLOTTED)
    names = list(channel_names or [f"ch{i}" for i in range(n_channels)])
    fig = Figure(figsize=(8, 0.4 + 1.3 * shown), dpi=100)
    axes = fig.subplots(shown, 1, sharex=True, squeeze=False)[:, 0]
    time = np.arange(length)
    for c, ax in enumerate(axes):
        series = values[c]
        low, high = float(np.nanmin(series)), float(np.nanmax(series))
        pad = 0.05 * (high - low or 1.0)
        ax.imshow(cam[None, :], extent=(-0.5, length - 0.5, low - pad, high + pad), aspect="auto",
                  cmap="Reds", vmin=0, vmax=1, alpha=0.6, interpolation="nearest", origin="lower")
        ax.plot(time, series, color="black", linewidth=0.9)
        label = names[c] if c < len(names) else f"ch{c}"
        if explanation.channel_importance is not None:
            label += f"\n{explanation.channel_importance[c]:+.2f}"
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    title = caption(explanation, classes)
    if shown < n_channels:
        title += f" (first {shown} of {n_channels} channels)"
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel("time", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def render_channels(case, channel_names: list[str] | None = None, title: str = "") -> bytes:
    """A plain plot of a signal, one panel per channel (PNG bytes), e.g. for the label audit."""
    from matplotlib.figure import Figure

    values = as_case(case)
    shown = min(values.shape[0], MAX_CHANNELS_PLOTTED)
    names = list(channel_names or [f"ch{i}" for i in range(values.shape[0])])
    fig = Figure(figsize=(5, 0.4 + 0.8 * shown), dpi=80)
    axes = fig.subplots(shown, 1, sharex=True, squeeze=False)[:, 0]
    for c, ax in enumerate(axes):
        ax.plot(np.arange(values.shape[1]), values[c], color="black", linewidth=0.8)
        ax.set_ylabel(names[c] if c < len(names) else f"ch{c}", rotation=0, ha="right",
                      va="center", fontsize=7)
        ax.tick_params(labelsize=6)
    if title:
        axes[0].set_title(title, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
