"""Maps stretched with NumPy, as the toolkit's ``resize_map`` does with PyTorch (the lean runtime
places an explanation's map on its input with these)."""

from __future__ import annotations

import numpy as np


def _linear_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a linear resize (half-pixel centres, as PyTorch's
    ``align_corners=False``)."""
    pos = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(pos).astype(int), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (pos - low).astype(np.float32)


def resize_1d(raw: np.ndarray, length: int) -> np.ndarray:
    """``raw`` stretched to ``length`` by linear interpolation."""
    low, high, frac = _linear_index(raw.shape[-1], max(1, int(length)))
    raw = np.asarray(raw, dtype=np.float32)
    return raw[low] * (1 - frac) + raw[high] * frac


def resize_2d(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``raw`` stretched to ``size`` by bilinear interpolation (as the toolkit's ``resize_map``)."""
    raw = np.asarray(raw, dtype=np.float32)
    y0, y1, fy = _linear_index(raw.shape[0], max(1, int(size[0])))
    x0, x1, fx = _linear_index(raw.shape[1], max(1, int(size[1])))
    rows = raw[y0] * (1 - fy)[:, None] + raw[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx
