"""The resize, crop and padding steps of image preprocessing, on PIL images for evaluation and
serving, and on tensors where augmentation made them so. PyTorch is imported only for tensors,
so the lean serving runtime (NumPy and Pillow) uses these steps as they are.
"""

from __future__ import annotations

# torchvision's InterpolationMode names as Pillow's filters (Image.Resampling values)
PIL_FILTERS = {"nearest": 0, "nearest-exact": 0, "box": 4, "bilinear": 2, "hamming": 5,
               "bicubic": 3, "lanczos": 1}


def center_crop_pil(image, height: int, width: int, crop_pct: float, resample: int):
    """torchvision's ``Resize(round(min(height, width) / crop_pct))`` then ``CenterCrop((height,
    width))`` of a PIL image, computed on the kept region only.

    Pillow resizes in two passes, across then down, rounding to 8 bits in between; here each pass
    is its own call restricted to the crop's source region (``box``): the across pass for the kept
    columns of every row, then the down pass for the kept rows (the filter still reads the pixels
    around the region, as the whole resize does). The pixels are the whole resize's within one
    grey level on about 0.02 % of them (floating-point rounding of the filter positions), in
    about two thirds of the time (1.0 instead of 1.5 ms for a 150 x 113 photo at 224 px, 8.7
    instead of 12.9 ms for a 1200 x 900 one). One call with a 2-D ``box`` is faster still but
    rounds differently, by up to 4 grey levels on a tenth of the pixels. Where the crop is larger
    than the resized image, the resize is whole and the crop is padded with zeros, as torchvision
    pads it. The training side and the lean serving runtime both call this function, so their
    inputs stay identical.
    """
    short = int(round(min(height, width) / float(crop_pct)))
    w, h = image.size
    # torchvision's Resize(int): the shorter side becomes `short`, the longer keeps the ratio
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    if size[0] >= width and size[1] >= height:
        top, left = int(round((size[1] - height) / 2.0)), int(round((size[0] - width) / 2.0))
        if size[0] != w:
            sx = w / size[0]
            image = image.resize((width, h), resample, box=(left * sx, 0, (left + width) * sx, h))
        else:
            image = image.crop((left, 0, left + width, h))
        if size[1] != h:
            sy = h / size[1]
            return image.resize((width, height), resample, box=(0, top * sy, width, (top + height) * sy))
        return image.crop((0, top, width, top + height))
    from PIL import Image

    image = image.resize(size, resample) if size != (w, h) else image
    w, h = image.size
    canvas = Image.new(image.mode, (max(w, width), max(h, height)), 0)
    canvas.paste(image, ((max(w, width) - w) // 2, (max(h, height) - h) // 2))
    w, h = canvas.size
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return canvas.crop((left, top, left + width, top + height))


class ResizedCenterCrop:
    """Evaluation's centre crop (:func:`center_crop_pil` for a PIL image; torchvision's
    ``Resize`` and ``CenterCrop`` for an image tensor)."""

    def __init__(self, size: tuple[int, int], crop_pct: float, interpolation: str):
        self.size, self.crop_pct, self.interpolation = tuple(size), float(crop_pct), str(interpolation)

    def __call__(self, image):
        if hasattr(image, "shape"):
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms.v2 import functional as F

            short = int(round(min(self.size) / self.crop_pct))
            resized = F.resize(image, short, InterpolationMode(self.interpolation), antialias=True)
            return F.center_crop(resized, list(self.size))
        height, width = self.size
        return center_crop_pil(image, height, width, self.crop_pct, PIL_FILTERS[self.interpolation])

    def __repr__(self) -> str:
        return (f"ResizedCenterCrop(size={self.size}, crop_pct={self.crop_pct}, "
                f"interpolation={self.interpolation!r})")


class AspectSwitch:
    """Apply ``near`` to images at most ``aspect`` times longer than wide (or wider than long),
    ``far`` to the others (see :func:`~sigclass.data.image_preprocess.resize_for`)."""

    def __init__(self, near, far, aspect: float):
        self.near, self.far, self.aspect = near, far, float(aspect)

    def __call__(self, image):
        height, width = height_width(image)
        return self.far(image) if max(height, width) > self.aspect * min(height, width) else self.near(image)

    def __repr__(self) -> str:
        return f"AspectSwitch(aspect={self.aspect}, near={self.near!r}, far={self.far!r})"


def height_width(image) -> tuple[int, int]:
    """``(height, width)`` of a PIL image or a ``(..., H, W)`` tensor."""
    if hasattr(image, "shape"):
        return int(image.shape[-2]), int(image.shape[-1])
    return int(image.height), int(image.width)


def letterbox_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` padding that centres a ``height x width`` image on a square
    (an odd remainder goes right or bottom)."""
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    return left, top, side - width - left, side - height - top


class LetterboxPad:
    """Pad an image tensor ``(C, H, W)`` to a square, centred, with the colour ``mean`` (a
    per-channel fraction; after normalization the padding is 0, which the network reads as
    "nothing here")."""

    def __init__(self, mean):
        self.mean = [float(m) for m in mean]

    def __call__(self, image):
        height, width = height_width(image)
        if height == width:
            return image
        if not hasattr(image, "shape"):  # a PIL image (preprocessing, serving)
            from PIL import Image

            left, top, _, _ = letterbox_padding(height, width)
            fill = tuple(round(m * 255) for m in self.mean)
            canvas = Image.new(image.mode, (max(height, width),) * 2,
                               fill[0] if image.mode == "L" else fill)
            canvas.paste(image, (left, top))
            return canvas
        from torchvision.transforms.v2 import functional as F

        scale = 255.0 if not image.dtype.is_floating_point else 1.0
        fill = [round(m * scale) if scale > 1 else m for m in self.mean]
        return F.pad(image, list(letterbox_padding(int(height), int(width))), fill=fill)

    def __repr__(self) -> str:
        return f"LetterboxPad(mean={self.mean})"
