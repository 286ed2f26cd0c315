"""Small image CNNs trained from scratch.

- ``simple_cnn``: the lab brief's network, input → conv → max-pool → conv → max-pool → dense.
- ``simple_cnn_gap``: the same with global average pooling before the dense layer, so it accepts
  any input size and gives class activation maps.
- ``vgg_like_{1,2,3}``: 1-3 VGG blocks (two 3x3 convolutions, max-pool, dropout) with 32, 64, 128
  filters, after the CIFAR-10 models of "Deep Learning with Azure" ch. 6 and Keras' cifar10_cnn.
"""

from __future__ import annotations

from torch import nn

from ..exceptions import WeightsNotFoundError
from .base import ClassifierNet
from .registry import register_model

_MEAN_STD = (0.5, 0.5, 0.5)


def _cfg(in_chans: int, input_size: int | tuple[int, int]) -> dict:
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    return {
        "input_size": (in_chans, height, width),
        "mean": _MEAN_STD[:1] * in_chans,
        "std": _MEAN_STD[:1] * in_chans,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
    }


class SimpleCNN(ClassifierNet):
    """Two convolution + max-pool stages and a dense output layer.

    Args:
        n_classes: Output classes (0 for a featurizer).
        in_chans: Input channels.
        width: Filters of the first convolution; the second has twice as many.
        global_pool: ``"flatten"`` (the lab brief) or ``"avg"`` (global average pooling).
        input_size: Input height and width; fixed for ``"flatten"``.
        drop_rate: Dropout before the dense layer.
    """

    def __init__(
        self, n_classes: int = 10, in_chans: int = 3, width: int = 32, global_pool: str = "avg",
        input_size: int | tuple[int, int] = 64, drop_rate: float = 0.0,
    ):
        super().__init__()
        self.pretrained_cfg = _cfg(in_chans, input_size)
        _, height, width_px = self.pretrained_cfg["input_size"]
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self._init_head(2 * width, n_classes, global_pool, drop_rate, (height // 4) * (width_px // 4))

    def forward_features(self, x):
        return self.features(x)


class VGGLike(ClassifierNet):
    """1-3 VGG blocks (conv-conv-maxpool-dropout) and a global-average-pool dense head.

    Args:
        n_classes: Output classes (0 for a featurizer).
        in_chans: Input channels.
        n_blocks: Number of VGG blocks, 1 to 3 (32, 64, 128 filters).
        input_size: Nominal input size (any size works).
        drop_rate: Dropout after each block and before the dense layer.
    """

    def __init__(
        self, n_classes: int = 10, in_chans: int = 3, n_blocks: int = 3,
        input_size: int | tuple[int, int] = 64, drop_rate: float = 0.25,
    ):
        super().__init__()
        if n_blocks not in (1, 2, 3):
            raise ValueError(f"n_blocks must be 1, 2 or 3. Got {n_blocks!r}.")
        self.pretrained_cfg = _cfg(in_chans, input_size)
        layers, channels = [], in_chans
        for block in range(n_blocks):
            filters = 32 * 2**block
            layers += [
                nn.Conv2d(channels, filters, 3, padding=1), nn.BatchNorm2d(filters), nn.ReLU(inplace=True),
                nn.Conv2d(filters, filters, 3, padding=1), nn.BatchNorm2d(filters), nn.ReLU(inplace=True),
            ]
            if block < n_blocks - 1:  # the last block's map stays larger for sharper CAMs
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.Dropout(drop_rate))
            channels = filters
        self.features = nn.Sequential(*layers)
        self._init_head(channels, n_classes, "avg", drop_rate)

    def forward_features(self, x):
        return self.features(x)


def _chans(in_chans: int | None) -> int:
    return 3 if in_chans is None else in_chans


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise WeightsNotFoundError(
            f"'{name}' is trained from scratch and has no pretrained weights. Use --no-pretrained "
            "(mode 'scratch'), or pass your own with --weights PATH."
        )


@register_model(description="Lab-brief CNN: conv, max-pool, conv, max-pool, dense (fixed input size)")
def simple_cnn(n_classes: int = 10, pretrained: bool = False, in_chans: int | None = None, **kwargs):
    """The lab brief's CNN with a flatten + dense output layer."""
    _no_pretrained("simple_cnn", pretrained)
    return SimpleCNN(n_classes, _chans(in_chans), global_pool="flatten", **kwargs)


@register_model(description="Lab-brief CNN with global average pooling (any input size, CAM)")
def simple_cnn_gap(n_classes: int = 10, pretrained: bool = False, in_chans: int | None = None, **kwargs):
    """The lab brief's CNN with global average pooling before the dense layer."""
    _no_pretrained("simple_cnn_gap", pretrained)
    return SimpleCNN(n_classes, _chans(in_chans), global_pool="avg", **kwargs)


def _vgg(n_blocks: int):
    def build(n_classes: int = 10, pretrained: bool = False, in_chans: int | None = None, **kwargs):
        _no_pretrained(f"vgg_like_{n_blocks}", pretrained)
        kwargs.setdefault("n_blocks", n_blocks)
        return VGGLike(n_classes, _chans(in_chans), **kwargs)

    build.__name__ = f"vgg_like_{n_blocks}"
    return build


for _n in (1, 2, 3):
    register_model(
        f"vgg_like_{_n}", description=f"VGG-like CNN, {_n} block(s) of two 3x3 convs + dropout"
    )(_vgg(_n))
