"""Image tensors for training, with optional training-only augmentation (torchvision v2).

The counterpart of :mod:`sigclass.data.signal_augment`: a config of the augmentation and a
``torch.utils.data.Dataset`` of ``(tensor, class index)`` pairs. Evaluation and prediction never
augment; they use :class:`~sigclass.data.image_preprocess.ImagePreprocessor`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .image_masks import blank_masked
from .image_preprocess import ImageLike, load_image


@dataclass
class AugmentConfig:
    """Training-only image augmentation (torchvision.transforms.v2).

    Attributes:
        enabled: Turn augmentation on or off as a whole.
        hflip: Probability of a horizontal flip.
        vflip: Probability of a vertical flip (useful for inspection and medical images).
        rotation: Largest random rotation in degrees.
        scale_min: Smallest area fraction kept by the random resized crop (1.0 disables it).
        color_jitter: Strength of brightness, contrast and saturation jitter (0 disables it).
    """

    enabled: bool = True
    hflip: float = 0.5
    vflip: float = 0.0
    rotation: float = 10.0
    scale_min: float = 0.75
    color_jitter: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageTensorDataset:
    """A ``torch.utils.data.Dataset`` of (tensor, class index) pairs decoded from files.

    ``masks`` (one mask file or ``None`` per source) blank areas with ``fill`` before the
    transform (guided training, see :mod:`sigclass.data.image_masks`).
    """

    def __init__(self, sources: list[ImageLike], targets: np.ndarray | None, transform, channels: int = 3,
                 masks: list | None = None, fill: tuple[int, ...] | None = None):
        self.sources = sources
        self.targets = targets
        self.transform = transform
        self.channels = channels
        self.masks = masks
        self.fill = fill

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int):
        image = load_image(self.sources[index], self.channels)
        if self.masks is not None and self.masks[index] is not None:
            image = blank_masked(image, self.masks[index], self.fill)
        tensor = self.transform(image)
        target = -1 if self.targets is None else int(self.targets[index])
        return tensor, target
