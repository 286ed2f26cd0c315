"""The training-side preprocessing redone with NumPy and Pillow, for the lean serving runtime.

Images follow :func:`sigclass.data.image_preprocess.build_image_transform` step by step: the
resize mode of the image's aspect (:func:`~sigclass.data.image_preprocess.resize_for`), a centre
crop (the shorter side resized to ``size / crop_pct``, torchvision's rounding), a letterbox pad
with the mean colour or a plain resize, then ``/ 255``, ``- mean`` and ``/ std`` in float32.
Pillow resizes where torchvision resizes a uint8 tensor; both antialias, and a pixel may differ
by one grey level (the README's parity figures measure what that costs). Signals reuse the
training-side checks and standardization (:mod:`sigclass.data.signal_preprocess`), which need
NumPy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.image_preprocess import (
    image_inputs_as_list,
    letterbox_padding,
    load_image,
    map_to_image,
    normalized_array,
    resize_for,
)
from ..data.signal_preprocess import SignalPreprocessor, as_case
from ..data.signal_windows import trim_trailing_nan
from ..data.views import views_of
from ..exceptions import DataError, Problem

# torchvision's InterpolationMode names as Pillow's filters (Image.Resampling values)
PIL_FILTERS = {"nearest": 0, "nearest-exact": 0, "box": 4, "bilinear": 2, "hamming": 5,
               "bicubic": 3, "lanczos": 1}


class ImageInputs:
    """Images (paths, bytes, PIL images, arrays) as one normalized float32 ``(N, C, H, W)`` batch.

    What the runtime does differently for images and signals is here and in
    :class:`SignalInputs`, one contract: ``__call__`` (a batch), ``cam_input`` and ``place_map``
    (an explanation's input and where its map lands), ``per_channel`` (whether an explanation
    weighs channels).
    """

    modality = "image"
    per_channel = False

    def __init__(self, data_config: dict[str, Any]):
        self.data_config = data_config
        self.channels = int(data_config["input_size"][0])
        self.mean = np.asarray(data_config["mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(data_config["std"], dtype=np.float32)[:, None, None]
        self.filter = PIL_FILTERS[str(data_config.get("interpolation", "bilinear"))]

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.data_config["input_size"])

    @property
    def views(self) -> tuple[str, ...]:
        return views_of(self.data_config)

    def as_list(self, inputs) -> list:
        return image_inputs_as_list(inputs)

    def decode(self, items: list, names: list[str] | None = None) -> list:
        images, problems = [], []
        for index, item in enumerate(items):
            try:
                images.append(load_image(item, self.channels))
            except DataError as exc:
                problems += exc.problems
            except Exception as exc:  # noqa: BLE001 - any decoding failure names the input
                name = names[index] if names else str(item) if isinstance(item, str | Path) else f"input {index}"
                problems.append(Problem(name, f"cannot be read as an image: {exc}"))
        if problems:
            raise DataError(problems)
        return images

    def __call__(self, items: list, names: list[str] | None = None) -> np.ndarray:
        images = self.decode(items, names)
        if not images:
            return np.zeros((0, *self.item_shape), dtype=np.float32)
        return np.stack([self.transform(image) for image in images])

    def cam_input(self, item) -> tuple[np.ndarray, tuple[int, int], Any]:
        """One image's batch ``(1, C, H, W)``, its own ``(height, width)`` and the decoded
        picture an overlay is drawn on."""
        image = self.decode([item])[0]
        return self.transform(image)[None], (image.height, image.width), image

    def place_map(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A map over the network's input placed on the image's own ``size`` (undoing the
        resize, crop or letterbox), as the toolkit places it."""
        return map_to_image(raw, size, self.data_config, resize=resize_2d)

    def transform(self, image) -> np.ndarray:
        """One decoded PIL image as the normalized ``(C, H, W)`` float32 input of the network."""
        _, height, width = self.item_shape
        mode = resize_for(self.data_config, image.height, image.width)
        if mode == "center_crop":
            image = self._center_crop(image, height, width)
        else:
            if mode == "letterbox":
                image = self._letterbox(image)
            if image.size != (width, height):
                image = image.resize((width, height), self.filter)
        return normalized_array(image, self.mean, self.std)

    def _center_crop(self, image, height: int, width: int):
        short = int(round(min(height, width) / float(self.data_config.get("crop_pct", 1.0))))
        w, h = image.size
        # torchvision's Resize(int): the shorter side becomes `short`, the longer keeps the ratio
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        if size != (w, h):
            image = image.resize(size, self.filter)
        w, h = image.size
        if w < width or h < height:  # torchvision pads a crop larger than the image with zeros
            from PIL import Image

            canvas = Image.new(image.mode, (max(w, width), max(h, height)), 0)
            canvas.paste(image, ((max(w, width) - w) // 2, (max(h, height) - h) // 2))
            image, (w, h) = canvas, canvas.size
        top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
        return image.crop((left, top, left + width, top + height))

    def _letterbox(self, image):
        from PIL import Image

        w, h = image.size
        if w == h:
            return image
        left, top, _, _ = letterbox_padding(h, w)
        fill = tuple(round(float(m) * 255) for m in self.data_config["mean"])
        side = max(w, h)
        canvas = Image.new(image.mode, (side, side), fill[0] if image.mode == "L" else fill)
        canvas.paste(image, (left, top))
        return canvas


class SignalInputs(SignalPreprocessor):
    """Signal cases as one standardized float32 ``(N, C, T)`` batch: the training-side checks
    (channels, NaN, length policy) and standardization, without PyTorch."""

    per_channel = True

    def __call__(self, items: list, names: list[str] | None = None) -> np.ndarray:
        return self.batch(items, names)

    def cam_input(self, item) -> tuple[np.ndarray, int, None]:
        """One case's batch ``(1, C, T)`` and its own length (no picture)."""
        return self([item]), int(trim_trailing_nan(as_case(item)).shape[1]), None

    def place_map(self, raw: np.ndarray, length: int) -> np.ndarray:
        """A map over the model's time steps stretched back onto the case's ``length`` (zero
        past the model's length), as the toolkit places it."""
        model_length = int(self.data_config["n_timepoints"])
        stretched = resize_1d(raw, model_length)
        if length <= model_length:
            return stretched[:length]
        return np.concatenate([stretched, np.zeros(length - model_length, dtype=np.float32)])


#: The preprocessing of each modality.
INPUTS = {"image": ImageInputs, "signal": SignalInputs}


def inputs_for(modality: str, data_config: dict[str, Any]):
    """The preprocessing of a bundle's ``modality``."""
    return INPUTS[modality](data_config)


def _linear_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a linear resize (half-pixel centres, as PyTorch's
    ``align_corners=False``)."""
    pos = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(pos).astype(int), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (pos - low).astype(np.float32)


def resize_1d(raw: np.ndarray, length: int) -> np.ndarray:
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

