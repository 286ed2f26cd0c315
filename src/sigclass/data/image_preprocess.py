"""Image decoding and preprocessing, identical in training, evaluation and serving, and the way
back from the model input to the original image (where a class activation map lies on it).

The preprocessing of a model (input size, mean, std, channels) is a small dict, the *data config*,
resolved from the network's pretrained config and stored with the model. Every place that turns an
image into a tensor builds its transform from that dict with :func:`build_image_transform`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import RESIZE_MODES, check_choice
from ..exceptions import DataError, Problem
from .file_checks import file_problem
from .image_resize import AspectSwitch, LetterboxPad, ResizedCenterCrop, letterbox_padding
from .views import resolve_tta, views_of

ImageLike = Any  # str | Path | bytes | PIL.Image.Image | np.ndarray

# By default, an image further from square than FAR_ASPECT (long side / short side) is not centre
# cropped (that can cut the evidence off) but resized with FAR_RESIZE, chosen on BCCD patches of
# aspect 1.25 and whole 4:3 images (bench/bench_cam_localization.py --resize-study). 4:3 photos
# keep the crop: squashing fridgeObjects' cost the label audit precision (README).
FAR_ASPECT = 1.5
FAR_RESIZE = "squash"


def image_data_config(
    model, image_size: int | None = None, resize: str | None = None,
    crop_pct: float | None = None, tta: str | bool = "none",
) -> dict[str, Any]:
    """The preprocessing a network expects, with optional overrides.

    Args:
        model: A network with a timm-style ``pretrained_cfg``.
        image_size: Square input size; ``None`` keeps the network's own.
        resize: One of :data:`RESIZE_MODES`: ``"center_crop"`` (resize the shorter side to
            ``size / crop_pct`` and crop the centre, as the network was pretrained), ``"squash"``
            (resize the whole image to the input size, nothing cut off, the aspect changed) or
            ``"letterbox"`` (pad the image to a square with the mean colour, then resize: nothing
            cut off, the aspect kept). ``None``: ``center_crop`` when the network's config has a
            ``crop_pct`` below 1, else ``squash``.
        crop_pct: Centre-crop fraction; ``None`` takes the network's own.
        tta: Test-time augmentation: the group of views whose outputs are averaged
            (``"none"``, ``"hflip"``, ``"flips"``, ``"dihedral"``; see
            :mod:`sigclass.data.views`). ``"auto"`` is stored until a headless featurizer's
            ``fit`` chooses the group from the data.

    Returns:
        ``{"input_size": [C, H, W], "mean", "std", "interpolation", "resize", "crop_pct",
        "tta", "far_resize", "far_aspect"}``. With the default ``resize`` (``None``) a centre
        crop applies to near-square images only: those whose long side exceeds ``far_aspect``
        (:data:`FAR_ASPECT`) times the short one get ``far_resize`` (:data:`FAR_RESIZE`); a
        ``resize`` given explicitly applies to every image (``far_resize`` is ``None``).
    """
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    channels, height, width = cfg["input_size"]
    if image_size is not None:
        height = width = int(image_size)
    crop_pct = float(crop_pct if crop_pct is not None else cfg.get("crop_pct") or 1.0)
    far_resize = None
    if resize is None:
        resize = "center_crop" if crop_pct < 1.0 else "squash"
        far_resize = FAR_RESIZE if resize == "center_crop" else None
    check_choice("resize", resize, RESIZE_MODES)
    return {
        "input_size": [int(channels), int(height), int(width)],
        "mean": _per_channel(cfg["mean"], channels),
        "std": _per_channel(cfg["std"], channels),
        "interpolation": cfg.get("interpolation", "bilinear"),
        "resize": resize,
        "crop_pct": crop_pct,
        "tta": resolve_tta(tta),
        "far_resize": far_resize,
        "far_aspect": FAR_ASPECT,
    }


def resize_for(data_config: dict[str, Any], height: int, width: int) -> str:
    """The resize mode a ``height x width`` image gets under ``data_config`` (see
    :func:`image_data_config`: far-from-square images may get ``far_resize``)."""
    far = data_config.get("far_resize")
    if far and max(height, width) > float(data_config.get("far_aspect", FAR_ASPECT)) * min(height, width):
        return str(far)
    return str(data_config.get("resize", "squash"))


def _per_channel(values, channels: int) -> list[float]:
    values = [float(v) for v in values]
    return values[:channels] if len(values) >= channels else values[:1] * channels


def build_image_transform(data_config: dict[str, Any], augment=None):
    """A transform from a PIL image to a normalized ``(C, H, W)`` float tensor.

    With ``augment`` (an :class:`~sigclass.data.image_augment.AugmentConfig`, training only) it applies a random resized crop, flips, rotation and colour
    jitter; without it, the data config's ``resize``: a centre crop as in pretraining, a plain
    resize of the whole image, or the image padded to a square and resized (both: nothing cut off,
    for defects at the border of inspection images; ``letterbox`` pads before the augmentation too).
    """
    import torch
    from torchvision.transforms import InterpolationMode, v2

    _, height, width = data_config["input_size"]
    size = (height, width)
    interpolation = InterpolationMode(data_config.get("interpolation", "bilinear"))
    steps: list[Any] = []
    if augment is not None and augment.enabled:
        steps.append(v2.ToImage())
        if data_config.get("resize") == "letterbox":  # train on what evaluation will show
            steps.append(LetterboxPad(data_config["mean"]))
        if augment.scale_min < 1.0:
            steps.append(v2.RandomResizedCrop(size, scale=(augment.scale_min, 1.0),
                                              interpolation=interpolation, antialias=True))
        else:
            steps.append(v2.Resize(size, interpolation=interpolation, antialias=True))
        if augment.hflip > 0:
            steps.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.vflip > 0:
            steps.append(v2.RandomVerticalFlip(augment.vflip))
        if augment.rotation > 0:
            steps.append(v2.RandomRotation(augment.rotation, interpolation=InterpolationMode.BILINEAR))
        if augment.color_jitter > 0:
            jitter = augment.color_jitter
            saturation = jitter if data_config["input_size"][0] == 3 else 0.0
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=saturation))
    else:
        mode = str(data_config.get("resize", "squash"))
        far = data_config.get("far_resize")
        near_steps = _resize_steps(mode, data_config, size, interpolation)
        if far and far != mode:
            far_steps = _resize_steps(str(far), data_config, size, interpolation)
            steps.append(AspectSwitch(v2.Compose(near_steps), v2.Compose(far_steps),
                                      float(data_config.get("far_aspect", FAR_ASPECT))))
        else:
            steps += near_steps
        # Resized while still a PIL image: Pillow's resampling, which the lean serving runtime
        # (sigclass.runtime, NumPy and Pillow only) repeats to the bit; torchvision's uint8
        # kernel differs from Pillow's by a grey level on ~0.3% of the pixels. The scaling is
        # the runtime's too (NumPy, see NormalizedTensor).
        steps.append(NormalizedTensor(data_config["mean"], data_config["std"]))
        return v2.Compose(steps)
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=data_config["mean"], std=data_config["std"]),
    ]
    return v2.Compose(steps)


def normalized_array(image, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A PIL image as the network's float32 ``(C, H, W)`` input: ``/ 255``, ``- mean``, ``/ std``
    (``mean`` and ``std`` shaped ``(C, 1, 1)``), computed as one multiply and one subtraction
    (``x * (1 / (255 std)) - mean / std``, within 2e-7 of the three steps, 7x faster). The one
    definition of this step, for the training side and the lean serving runtime alike."""
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    # a grey image (one plane) for a colour network broadcasts over the channels: the values of
    # its RGB conversion, which repeats the grey level in each
    out = np.empty((max(len(mean), array.shape[0]), *array.shape[1:]), dtype=np.float32)
    np.multiply(array, (1.0 / (255.0 * std)).astype(np.float32), out=out)
    out -= (mean / std).astype(np.float32)
    return out


class NormalizedTensor:
    """The last step of evaluation preprocessing: a resized PIL image as the normalized float32
    ``(C, H, W)`` tensor (:func:`normalized_array`).

    Done in NumPy rather than with torchvision's ``ToDtype`` and ``Normalize``: per image, those
    small tensor operations start PyTorch's intra-op thread teams from every thread that
    preprocesses (a service's request threads, the featurizer's prefetch), which costs more
    than the arithmetic, many times more on a busy CPU.
    """

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]

    def __call__(self, image):
        import torch

        if isinstance(image, torch.Tensor):  # a uint8 or float image tensor, torchvision's way
            from torchvision.transforms.v2 import functional as F

            scaled = F.to_dtype(image, torch.float32, scale=True)
            return F.normalize(scaled, self.mean.ravel().tolist(), self.std.ravel().tolist())
        return torch.from_numpy(normalized_array(image, self.mean, self.std))

    def __repr__(self) -> str:
        return f"NormalizedTensor(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


def _resize_steps(mode: str, data_config: dict[str, Any], size: tuple[int, int], interpolation) -> list:
    from torchvision.transforms import v2

    if mode == "center_crop":
        return [ResizedCenterCrop(size, float(data_config.get("crop_pct", 1.0)), interpolation.value)]
    steps: list[Any] = [LetterboxPad(data_config["mean"])] if mode == "letterbox" else []
    return steps + [v2.Resize(size, interpolation=interpolation, antialias=True)]


def load_image(source: ImageLike, channels: int = 3, keep_gray: bool = False):
    """Decode any supported image into a PIL image with ``channels`` (1: ``L``, 3: ``RGB``).

    Accepts a path, raw bytes, a PIL image or a NumPy array (``(H, W)``, ``(H, W, 1|3|4)``; uint8,
    uint16 or float in [0, 1]). 16-bit images are scaled to 8 bits, transparency is composited on
    white, palette and CMYK images are converted and EXIF orientation is applied. With
    ``keep_gray``, a grey image stays ``L`` for ``channels=3``: resized as one plane and spread
    over the channels at the end (:func:`normalized_array`), it gives the input of its RGB
    conversion to the bit, in half the resizing time.
    """
    from PIL import Image, ImageOps

    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _array_to_pil(source)
    elif isinstance(source, bytes | bytearray):
        image = Image.open(io.BytesIO(bytes(source)))
    elif isinstance(source, str | Path):
        reason = file_problem(source)  # a named pipe would block Image.open forever
        if reason:
            raise DataError(Problem(str(source), reason))
        image = Image.open(source)
    else:
        raise DataError(Problem("input", f"cannot read an image from a {type(source).__name__}; "
                                "pass a file path, bytes, a PIL image or a NumPy array"))
    if image.getexif().get(_ORIENTATION, 1) != 1:  # exif_transpose copies even upright images
        image = ImageOps.exif_transpose(image) or image
    image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    mode = "L" if channels == 1 or (keep_gray and image.mode == "L") else "RGB"
    if channels not in (1, 3):
        raise DataError(Problem("input", f"images can be read with 1 or 3 channels, not {channels}"))
    # convert() copies even when the mode is right: a 40-megapixel upload would be held twice
    if image.mode != mode:
        return image.convert(mode)
    image.load()  # decoding errors belong here, where the caller names the input
    return image


_ORIENTATION = 0x0112  # the EXIF tag


def _to_8bit(image):
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(array / 257.0, 0, 255).round().astype(np.uint8), mode="L")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 if np.nanmax(array) <= 1.0 else 1.0
        return Image.fromarray(np.clip(array * scale, 0, 255).round().astype(np.uint8), mode="L")
    return image


def _array_to_pil(array: np.ndarray):
    from PIL import Image

    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise DataError(Problem("input", f"an image array must have shape (H, W), (H, W, 1), "
                                f"(H, W, 3) or (H, W, 4); got {array.shape}"))
    if array.dtype == np.uint16:
        array = (array.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise DataError(Problem("input", "image array contains NaN or infinite values"))
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


class ImageDecoder:
    """What the toolkit's image preprocessing and the lean runtime's share: the network's input
    shape and test-time views, and inputs (paths, bytes, PIL images, arrays) decoded to PIL images
    with the model's channels, every unreadable one named in one :class:`DataError`."""

    modality = "image"

    def __init__(self, data_config: dict[str, Any]):
        self.data_config = data_config
        self.channels = int(data_config["input_size"][0])
        # Grey images stay one plane through the resize, except where a letterbox pads them
        # with the mean colour, whose channels differ.
        self.keep_gray = "letterbox" not in (data_config.get("resize"), data_config.get("far_resize"))

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.data_config["input_size"])

    @property
    def views(self) -> tuple[str, ...]:
        """The test-time views whose outputs are averaged (:func:`~sigclass.data.views.views_of`)."""
        return views_of(self.data_config)

    def as_list(self, inputs) -> list:
        return image_inputs_as_list(inputs)

    def decode(self, items: list, names: list[str] | None = None) -> list:
        """The items as PIL images with the model's channels; all unreadable ones in one error."""
        images, problems = [], []
        for index, item in enumerate(items):
            if isinstance(item, DataError):  # an input a reader refused (batch scoring)
                problems += item.problems
                continue
            try:
                images.append(load_image(item, self.channels, self.keep_gray))
            except DataError as exc:
                problems += exc.problems
            except Exception as exc:  # noqa: BLE001 - any decoding failure names the input
                name = names[index] if names else str(item) if isinstance(item, str | Path) else f"input {index}"
                problems.append(Problem(name, f"cannot be read as an image: {exc}"))
        if problems:
            raise DataError(problems)
        return images


class ImagePreprocessor(ImageDecoder):
    """Turns images (paths, bytes, PIL images, arrays) into one normalized batch tensor, and the
    maps computed on that tensor back onto the images.

    Every input that cannot be read is named in one :class:`DataError`.
    """

    def __init__(self, data_config: dict[str, Any]):
        super().__init__(data_config)
        self.transform = build_image_transform(data_config)

    def __call__(self, items: list, names: list[str] | None = None):
        return self._stacked(self.decode(items, names))

    def prepare(self, items: list) -> tuple[Any, list[tuple[int, int]]]:
        """The batch tensor of ``items`` and the ``(height, width)`` of every original image."""
        images = self.decode(items)
        return self._stacked(images), [(im.height, im.width) for im in images]

    def _stacked(self, images: list):
        import torch

        if not images:
            return torch.zeros((0, *self.item_shape), dtype=torch.float32)
        # stacked by NumPy: one plain copy, where torch.stack starts PyTorch's thread team
        return torch.from_numpy(np.stack([self.transform(image).numpy() for image in images]))

    def to_input(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A map at the model input's resolution placed on the original image of ``size``."""
        return map_to_image(raw, size, self.data_config)


def image_inputs_as_list(inputs) -> list:
    """One image input or many, as a list. A 4D array, or a 3D array whose last axis is not 1, 3
    or 4 (channels), is a batch; any other array is one image."""
    from PIL import Image

    if isinstance(inputs, str | Path | bytes | bytearray | Image.Image):
        return [inputs]
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 4 or (inputs.ndim == 3 and inputs.shape[-1] not in (1, 3, 4)):
            return list(inputs)
        return [inputs]
    return list(inputs)


def resize_map(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``raw`` (2D) stretched to ``size`` by bilinear interpolation."""
    import torch
    import torch.nn.functional as F

    size = (max(1, int(size[0])), max(1, int(size[1])))
    return F.interpolate(torch.as_tensor(raw, dtype=torch.float32)[None, None], size=size,
                         mode="bilinear", align_corners=False)[0, 0].numpy()


def map_to_image(raw: np.ndarray, size: tuple[int, int], data_config: dict,
                 resize=resize_map) -> np.ndarray:
    """The map placed on the original image: stretched over it (squash), over the square it was
    padded to with the padding cut off (letterbox), or over the centre crop the model saw (centre
    crop), zero elsewhere. ``resize(map, (height, width))`` stretches a map (PyTorch's bilinear
    interpolation by default; the lean runtime passes its NumPy one)."""
    height, width = size
    mode = resize_for(data_config, height, width)
    if mode == "letterbox":
        left, top, _, _ = letterbox_padding(height, width)
        side = max(height, width)
        return np.ascontiguousarray(resize(raw, (side, side))[top:top + height, left:left + width])
    if mode != "center_crop":
        return resize(raw, (height, width))
    _, in_h, in_w = data_config["input_size"]
    short = int(round(min(in_h, in_w) / float(data_config.get("crop_pct", 1.0))))
    # torchvision's Resize(int): the shorter side becomes `short`, the other keeps the ratio.
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    top = int(round((new_h - in_h) / 2.0))
    left = int(round((new_w - in_w) / 2.0))
    scale_h, scale_w = height / new_h, width / new_w
    y0, y1 = round(top * scale_h), round((top + in_h) * scale_h)
    x0, x1 = round(left * scale_w), round((left + in_w) * scale_w)
    patch = resize(raw, (y1 - y0, x1 - x0))
    canvas = np.zeros((height, width), dtype=np.float32)
    cy0, cx0 = max(0, y0), max(0, x0)
    cy1, cx1 = min(height, y1), min(width, x1)
    canvas[cy0:cy1, cx0:cx1] = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return canvas
