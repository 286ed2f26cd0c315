"""The lean part of images: uploads read and described, and a bundle's preprocessing redone with
NumPy and Pillow, without PyTorch (:class:`~sigclass.modalities.base.LeanModality`).

:class:`ImageInputs` follows :func:`sigclass.data.image_preprocess.build_image_transform` step by
step: the resize mode of the image's aspect (:func:`~sigclass.data.image_preprocess.resize_for`),
a centre crop (the shorter side resized to ``size / crop_pct``, torchvision's rounding), a
letterbox pad with the mean colour or a plain resize, then ``/ 255``, ``- mean`` and ``/ std`` in
float32 (:func:`~sigclass.data.image_preprocess.normalized_array`, the training side's own step).
Both sides resize with Pillow, so the runtime's input is the training side's to the bit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..data.image_preprocess import ImageDecoder, map_to_image, normalized_array, resize_for
from ..data.image_resize import PIL_FILTERS, LetterboxPad, center_crop_pil
from .base import LeanModality
from .resize import resize_2d
from .uploads import IMAGE_FORMATS, as_limits, decode_image


class ImageInputs(ImageDecoder):
    """Images (paths, bytes, PIL images, arrays) as one normalized float32 ``(N, C, H, W)`` batch
    (the ``inputs`` of :class:`~sigclass.modalities.base.LeanModality`); the decoding is the
    toolkit's own (:class:`~sigclass.data.image_preprocess.ImageDecoder`)."""

    per_channel = False

    def __init__(self, data_config: dict[str, Any]):
        super().__init__(data_config)
        self.mean = np.asarray(data_config["mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(data_config["std"], dtype=np.float32)[:, None, None]
        self.filter = PIL_FILTERS[str(data_config.get("interpolation", "bilinear"))]
        self.letterbox = LetterboxPad(data_config["mean"])

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
            image = center_crop_pil(image, height, width, float(self.data_config.get("crop_pct", 1.0)),
                                    self.filter)
        else:
            if mode == "letterbox":
                image = self.letterbox(image)
            if image.size != (width, height):
                image = image.resize((width, height), self.filter)
        return normalized_array(image, self.mean, self.std)


class LeanImage(LeanModality):
    """Image uploads: a multipart file or a raw ``image/*`` body, checked before it is decoded
    (:func:`~sigclass.modalities.uploads.decode_image`)."""

    name = "image"
    body_types = ("image/",)
    inputs = ImageInputs

    def upload_hint(self, field: str) -> str:
        return f"multipart form field '{field}'"

    def decode_upload(self, upload, data_config, limits):
        return decode_image(upload.data, upload.name, as_limits(limits))

    def reduce_for_explanation(self, item, max_pixels: int):
        """A copy of a larger image scaled down to ``max_pixels`` (its aspect kept): the map is
        then computed and returned at that size, not at the upload's."""
        if item.width * item.height <= max_pixels:
            return item
        scale = math.sqrt(max_pixels / (item.width * item.height))
        size = (max(1, int(item.width * scale)), max(1, int(item.height * scale)))
        return item.resize(size, reducing_gap=2.0)

    def input_spec(self, predictor, max_pixels: int) -> dict[str, Any]:
        config = predictor.data_config
        channels, height, width = predictor.preprocessor.item_shape
        return {"modality": self.name, "channels": channels, "height": height, "width": width,
                "resize": config.get("resize"), "mean": config.get("mean"), "std": config.get("std"),
                "content_types": ["multipart/form-data (field 'file')", "image/*"],
                "max_image_pixels": max_pixels, "formats": list(IMAGE_FORMATS),
                "accept": "image/jpeg,image/png,image/bmp,image/tiff,image/webp",
                "description": f"An image; the model sees it at {width}x{height} pixels."}
