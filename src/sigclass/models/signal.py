"""1D networks for signals ``(B, C, T)``, all with the ``forward_features`` + GAP head contract.

- ``fcn``: Fully Convolutional Network (Wang, Yan, Oates 2017): three conv-BN-ReLU blocks with
  128, 256, 128 filters and kernels 8, 5, 3.
- ``resnet1d``: the ResNet of the same paper: three residual blocks of three convolutions
  (64, 128, 128 filters).
- ``inception``: one InceptionTime network (Ismail Fawaz et al. 2020): six inception modules
  (bottleneck, kernels 41/21/11 and a max-pool branch), a residual connection every three;
  ``inception_time`` is the ensemble option (five such networks side by side).
- ``simple_cnn1d``: the lab brief's CNN, conv, max-pool, conv, max-pool, dense.
- ``lstm``, ``gru``, ``bilstm``: recurrent networks over time.
- ``lstm_fcn``: LSTM-FCN (Karim et al. 2017), an LSTM branch beside an FCN branch.

Every network keeps the full time axis in ``forward_features`` (only ``simple_cnn1d`` pools it,
by 4), so class activation maps have the input's resolution. Recurrent networks return their
hidden sequence ``(B, H, T)``, so CAM works for them too. Width and depth are options of every
builder (``width``, ``depth``), for hyperparameter search.
"""

from __future__ import annotations

import torch
from torch import nn

from ..exceptions import WeightsNotFoundError
from .base import ClassifierNet
from .registry import register_model


def conv_bn_relu(in_chans: int, out_chans: int, kernel_size: int, relu: bool = True) -> nn.Sequential:
    """Conv1d with "same" padding, batch norm and (optionally) ReLU."""
    # Explicit padding: PyTorch's padding="same" copies the input for even kernels, with a warning.
    layers: list[nn.Module] = [nn.ConstantPad1d(((kernel_size - 1) // 2, kernel_size // 2), 0.0),
                               nn.Conv1d(in_chans, out_chans, kernel_size, bias=False),
                               nn.BatchNorm1d(out_chans)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _check_size(name: str, **values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: the '{key}' option must be a positive integer. Got {value!r}.")


class FCN(ClassifierNet):
    """Fully Convolutional Network (Wang et al. 2017).

    Args:
        n_classes: Output classes (0 for a featurizer).
        in_chans: Input channels.
        width: Filters of the first and last block; middle blocks have twice as many.
        depth: Number of conv blocks (3 in the paper); kernels 8, 5, ..., 5, 3.
        drop_rate: Dropout before the classifier.
    """

    def __init__(self, n_classes: int, in_chans: int = 1, width: int = 128, depth: int = 3,
                 drop_rate: float = 0.0):
        super().__init__()
        _check_size("fcn", width=width, depth=depth)
        filters = [width] + [2 * width] * max(0, depth - 2) + ([width] if depth > 1 else [])
        kernels = [8] + [5] * max(0, depth - 2) + ([3] if depth > 1 else [])
        layers, channels = [], in_chans
        for out, kernel in zip(filters, kernels, strict=True):
            layers.append(conv_bn_relu(channels, out, kernel))
            channels = out
        self.features = nn.Sequential(*layers)
        self._init_head(channels, n_classes, "avg", drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ResidualBlock1d(nn.Module):
    """Three convolutions (kernels 8, 5, 3) and a shortcut (1x1 conv when the width changes)."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(in_chans, out_chans, 8), conv_bn_relu(out_chans, out_chans, 5),
                                  conv_bn_relu(out_chans, out_chans, 3, relu=False))
        self.shortcut = (nn.BatchNorm1d(out_chans) if in_chans == out_chans else
                         nn.Sequential(nn.Conv1d(in_chans, out_chans, 1, bias=False), nn.BatchNorm1d(out_chans)))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet1d(ClassifierNet):
    """ResNet for time series (Wang et al. 2017).

    Args:
        n_classes: Output classes (0 for a featurizer).
        in_chans: Input channels.
        width: Filters of the first block; later blocks have twice as many (64, 128, 128).
        depth: Number of residual blocks (3 in the paper).
        drop_rate: Dropout before the classifier.
    """

    def __init__(self, n_classes: int, in_chans: int = 1, width: int = 64, depth: int = 3,
                 drop_rate: float = 0.0):
        super().__init__()
        _check_size("resnet1d", width=width, depth=depth)
        blocks, channels = [], in_chans
        for i in range(depth):
            out = width if i == 0 else 2 * width
            blocks.append(ResidualBlock1d(channels, out))
            channels = out
        self.features = nn.Sequential(*blocks)
        self._init_head(channels, n_classes, "avg", drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class InceptionModule(nn.Module):
    """Bottleneck, three convolutions of decreasing kernel and a max-pool branch, concatenated."""

    def __init__(self, in_chans: int, width: int, kernel_size: int = 40, bottleneck: int = 32):
        super().__init__()
        use_bottleneck = in_chans > 1 and bottleneck > 0
        self.bottleneck = nn.Conv1d(in_chans, bottleneck, 1, bias=False) if use_bottleneck else nn.Identity()
        mid = bottleneck if use_bottleneck else in_chans
        kernels = [max(1, kernel_size // 2**i) // 2 * 2 + 1 for i in range(3)]  # odd: 41, 21, 11
        self.convs = nn.ModuleList(nn.Conv1d(mid, width, k, padding=k // 2, bias=False) for k in kernels)
        self.pool = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(in_chans, width, 1, bias=False))
        self.bn = nn.BatchNorm1d(4 * width)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.bottleneck(x)
        out = torch.cat([conv(reduced) for conv in self.convs] + [self.pool(x)], dim=1)
        return self.act(self.bn(out))


class InceptionBackbone(nn.Module):
    """``depth`` inception modules with a residual connection every three."""

    def __init__(self, in_chans: int, width: int = 32, depth: int = 6, kernel_size: int = 40,
                 bottleneck: int = 32):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        channels, residual_in = in_chans, in_chans
        for i in range(depth):
            self.blocks.append(InceptionModule(channels, width, kernel_size, bottleneck))
            channels = 4 * width
            if i % 3 == 2:
                self.shortcuts.append(nn.Sequential(nn.Conv1d(residual_in, channels, 1, bias=False),
                                                    nn.BatchNorm1d(channels)))
                residual_in = channels
        self.out_chans = channels
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        for i, module in enumerate(self.blocks):
            x = module(x)
            if i % 3 == 2:
                x = self.act(x + self.shortcuts[i // 3](residual))
                residual = x
        return x


class Inception(ClassifierNet):
    """InceptionTime-style network; ``n_members > 1`` is the ensemble option.

    The members run side by side on the same input; their feature maps are concatenated and one
    linear head reads the pooled vector, so the logits are the sum of each member's linear head,
    as an ensemble averages its members (trained jointly here rather than one by one).

    Args:
        n_classes: Output classes (0 for a featurizer).
        in_chans: Input channels.
        width: Filters per branch (4 branches: 4 * width channels per module).
        depth: Inception modules per member (6 in the paper).
        kernel_size: Longest kernel (40 in the paper); the others are 1/2 and 1/4 of it.
        bottleneck: Bottleneck width.
        n_members: Networks in the ensemble (5 in InceptionTime).
        drop_rate: Dropout before the classifier.
    """

    def __init__(self, n_classes: int, in_chans: int = 1, width: int = 32, depth: int = 6,
                 kernel_size: int = 40, bottleneck: int = 32, n_members: int = 1,
                 drop_rate: float = 0.0):
        super().__init__()
        _check_size("inception", width=width, depth=depth, kernel_size=kernel_size, n_members=n_members)
        self.members = nn.ModuleList(InceptionBackbone(in_chans, width, depth, kernel_size, bottleneck)
                                     for _ in range(n_members))
        self._init_head(n_members * 4 * width, n_classes, "avg", drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(x) for member in self.members], dim=1)


class SimpleCNN1d(ClassifierNet):
    """The lab brief's CNN for signals: conv, max-pool, conv, max-pool, dense.

    Args:
        n_classes: Output classes (0 for a featurizer).
        in_chans: Input channels.
        n_timepoints: Input length (needed by ``global_pool="flatten"``).
        width: Filters of the first convolution; the second has twice as many.
        depth: Conv + max-pool stages (2 in the lab brief).
        kernel_size: Convolution kernel.
        global_pool: ``"avg"`` (global average pooling, any length, CAM) or ``"flatten"``.
        drop_rate: Dropout before the dense layer.
    """

    def __init__(self, n_classes: int, in_chans: int = 1, n_timepoints: int | None = None,
                 width: int = 32, depth: int = 2, kernel_size: int = 5, global_pool: str = "avg",
                 drop_rate: float = 0.0):
        super().__init__()
        _check_size("simple_cnn1d", width=width, depth=depth, kernel_size=kernel_size)
        if global_pool == "flatten" and not n_timepoints:
            raise ValueError("simple_cnn1d with global_pool='flatten' needs n_timepoints.")
        layers, channels = [], in_chans
        for i in range(depth):
            out = width * 2**i
            layers += [conv_bn_relu(channels, out, kernel_size), nn.MaxPool1d(2, ceil_mode=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        length = n_timepoints or 1
        for _ in range(depth):
            length = -(-length // 2)
        self._init_head(channels, n_classes, global_pool, drop_rate, flat_size=length)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class RecurrentNet(ClassifierNet):
    """LSTM or GRU over time; the hidden sequence ``(B, H, T)`` is the feature map.

    Args:
        n_classes: Output classes (0 for a featurizer).
        in_chans: Input channels (features per timestep).
        cell: ``"lstm"`` or ``"gru"``.
        width: Hidden units per direction.
        depth: Stacked recurrent layers.
        bidirectional: Read the series both ways (the feature width doubles).
        drop_rate: Dropout between layers and before the classifier.

    Attributes:
        clip_grad_norm: The gradient-norm clip of ``train.clip_grad_norm="auto"``: 1.0. With
            the other defaults, the LSTM reached 86.0 % on GunPoint and 97.5 % on BasicMotions
            with it, 65.3 and 85.0 % without it (the BiLSTM 94.7 / 69.3 and 95.0 / 92.5 %;
            ``bench/bench_defaults.py --set train.clip_grad_norm=null``).
    """

    clip_grad_norm = 1.0

    def __init__(self, n_classes: int, in_chans: int = 1, cell: str = "lstm", width: int = 64,
                 depth: int = 1, bidirectional: bool = False, drop_rate: float = 0.0):
        super().__init__()
        _check_size(cell, width=width, depth=depth)
        if cell not in ("lstm", "gru"):
            raise ValueError(f"The 'cell' option must be 'lstm' or 'gru'. Got {cell!r}.")
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(in_chans, width, num_layers=depth, batch_first=True,
                       bidirectional=bidirectional, dropout=drop_rate if depth > 1 else 0.0)
        self._init_head(width * (2 if bidirectional else 1), n_classes, "avg", drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.rnn(x.transpose(1, 2))
        return hidden.transpose(1, 2)


class LSTMFCN(ClassifierNet):
    """LSTM-FCN (Karim et al. 2017): an LSTM branch beside an FCN branch, concatenated.

    The LSTM reads the series over time (not the paper's "dimension shuffle"), so both branches
    give a ``(B, C, T)`` map and CAM covers the whole network.

    Args:
        n_classes: Output classes (0 for a featurizer).
        in_chans: Input channels.
        width: FCN filters of the first and last block (128 in the paper).
        depth: FCN blocks.
        lstm_width: LSTM hidden units.
        lstm_drop: Dropout on the LSTM branch (0.8 in the paper).
        drop_rate: Dropout before the classifier.
    """

    def __init__(self, n_classes: int, in_chans: int = 1, width: int = 128, depth: int = 3,
                 lstm_width: int = 64, lstm_drop: float = 0.8, drop_rate: float = 0.0):
        super().__init__()
        _check_size("lstm_fcn", width=width, depth=depth, lstm_width=lstm_width)
        self.lstm = nn.LSTM(in_chans, lstm_width, batch_first=True)
        self.lstm_drop = nn.Dropout(lstm_drop)
        self.fcn = FCN(0, in_chans, width, depth)
        self._init_head(lstm_width + self.fcn.num_features, n_classes, "avg", drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(x.transpose(1, 2))
        return torch.cat([self.lstm_drop(hidden.transpose(1, 2)), self.fcn.forward_features(x)], dim=1)


def _scratch_only(name: str, pretrained: bool) -> None:
    if pretrained:
        raise WeightsNotFoundError(
            f"'{name}' is trained from scratch: there are no pretrained 1D networks. Use --mode "
            "scratch (--no-pretrained), pass your own weights with --weights PATH, or use --mode "
            "headless with minirocket or signal_image."
        )


def _builder(name: str, cls, description: str, **defaults):
    def build(n_classes: int = 2, pretrained: bool = False, in_chans: int | None = None,
              n_timepoints: int | None = None, **kwargs):
        _scratch_only(name, pretrained)
        options = {**defaults, **kwargs}
        if cls is SimpleCNN1d:
            options["n_timepoints"] = n_timepoints
        return cls(n_classes, 1 if in_chans is None else in_chans, **options)

    build.__name__ = name
    build.__doc__ = description
    register_model(name, modality="signal", description=description)(build)


_builder("fcn", FCN, "FCN (Wang et al. 2017): 3 conv blocks, 128-256-128 filters, GAP")
_builder("resnet1d", ResNet1d, "ResNet-1D (Wang et al. 2017): 3 residual blocks of 3 convs")
_builder("inception", Inception, "InceptionTime-style network: 6 inception modules, residuals")
_builder("inception_time", Inception, "InceptionTime ensemble: 5 inception networks side by side",
         n_members=5)
_builder("simple_cnn1d", SimpleCNN1d, "Lab-brief 1D CNN: conv, max-pool, conv, max-pool, dense")
_builder("lstm", RecurrentNet, "LSTM over time, mean of the hidden sequence", cell="lstm")
_builder("gru", RecurrentNet, "GRU over time, mean of the hidden sequence", cell="gru")
_builder("bilstm", RecurrentNet, "Bidirectional LSTM over time", cell="lstm", bidirectional=True)
_builder("lstm_fcn", LSTMFCN, "LSTM-FCN (Karim et al. 2017): LSTM branch beside an FCN")
