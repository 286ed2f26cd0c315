"""Featurizer "networks" for headless signal models: MiniRocket and signal-as-image transfer.

Both are ``nn.Module`` s whose ``forward(x)`` maps standardized signals ``(B, C, T)`` to a feature
matrix ``(B, num_features)`` that a scikit-learn head classifies. Being modules in the registry,
they are saved like every network (``state_dict`` in safetensors, rebuilt with
:func:`~sigclass.models.create_model` from ``model_spec``), without pickle.

- ``minirocket``: MiniRocket (Dempster, Schmidt, Webb 2021) from aeon. Its fitted dilations,
  channel choices and biases are buffers, so a saved model round-trips. It runs aeon's numba
  code, so it cannot be exported to ONNX (``onnx_exportable = False``).
- ``signal_image``: each channel rendered as an image (Gramian angular fields or a spectrogram)
  and passed through a frozen pretrained EfficientNet-Lite; the pooled features of all channels
  are concatenated.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..exceptions import ConfigError
from . import efficientnet, image_features, simple  # noqa: F401 - the image networks a backbone may be
from .registry import build_model, register_model

_MINIROCKET_BUFFERS = ("n_channels_per_combination", "channel_indices", "dilations",
                       "n_features_per_dilation", "biases")


def _featurizer_only(name: str, n_classes: int) -> None:
    if n_classes:
        raise ConfigError(f"'{name}' is a featurizer for headless mode (features + a classic ML "
                          f"head), not a trainable classifier. Use --mode headless --model {name}, "
                          "or a network such as fcn with --mode scratch.")


class MiniRocketFeatures(nn.Module):
    """MiniRocket features (aeon's implementation) with the fitted state in buffers.

    Args:
        in_chans: Input channels.
        n_timepoints: Input length (at least 9).
        n_kernels: Number of features asked for (rounded down to a multiple of 84).
        max_dilations_per_kernel: MiniRocket's dilation limit.
        seed: Seed of the fit (biases are drawn from random training cases).
        n_jobs: Threads of the numba transform.
    """

    is_featurizer = True
    onnx_exportable = False

    def __init__(self, in_chans: int = 1, n_timepoints: int | None = None, n_kernels: int = 10_000,
                 max_dilations_per_kernel: int = 32, seed: int = 0, n_jobs: int = 1):
        super().__init__()
        if n_timepoints is not None and n_timepoints < 9:
            raise ConfigError(f"MiniRocket needs series of at least 9 timepoints; got {n_timepoints}. "
                              "Pad them with signal.length_policy='pad' and signal.length=9.")
        self.in_chans = in_chans
        self.n_kernels = max(84, n_kernels)
        self.max_dilations_per_kernel = max_dilations_per_kernel
        self.seed = seed
        self.n_jobs = n_jobs
        self.num_features = self.n_kernels // 84 * 84
        for name in _MINIROCKET_BUFFERS:
            dtype = torch.float32 if name == "biases" else torch.int32
            self.register_buffer(name, torch.zeros(0, dtype=dtype))
        self._transformer = None

    @property
    def is_fitted(self) -> bool:
        return self.biases.numel() > 0

    def fit(self, X: np.ndarray) -> MiniRocketFeatures:
        """Fit dilations and biases on training cases ``(n, C, T)``; returns ``self``."""
        from aeon.transformations.collection.convolution_based import MiniRocket

        X = np.ascontiguousarray(X, dtype=np.float32)
        transformer = MiniRocket(self.n_kernels, self.max_dilations_per_kernel, n_jobs=self.n_jobs,
                                 random_state=self.seed).fit(X)
        for name, array in zip(_MINIROCKET_BUFFERS, transformer.parameters, strict=True):
            setattr(self, name, torch.from_numpy(np.array(array)))
        self._transformer = transformer
        return self

    def _aeon(self):
        """The aeon transformer, rebuilt from the buffers after loading."""
        if self._transformer is None:
            from aeon.transformations.collection.convolution_based import MiniRocket

            transformer = MiniRocket(self.n_kernels, self.max_dilations_per_kernel, n_jobs=self.n_jobs)
            arrays = [getattr(self, name).cpu().numpy() for name in _MINIROCKET_BUFFERS]
            transformer.parameters = tuple(np.ascontiguousarray(a) for a in arrays)
            transformer.n_kernels_ = self.n_kernels
            transformer._n_jobs = self.n_jobs
            transformer.is_fitted = True
            self._transformer = transformer
        return self._transformer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_fitted:
            raise ConfigError("This MiniRocket featurizer is not fitted; call fit(X) on training "
                              "cases first (headless training does).")
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        features = self._aeon().transform(array)
        return torch.as_tensor(np.asarray(features, dtype=np.float32), device=x.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The fitted arrays' sizes depend on the training data: take them from the saved state.
        for name in _MINIROCKET_BUFFERS:
            if prefix + name in state_dict:
                saved = state_dict[prefix + name]
                setattr(self, name, torch.empty(saved.shape, dtype=saved.dtype))
        self._transformer = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register_model("minirocket", modality="signal",
                description="MiniRocket features (aeon) for headless mode; fitted, no training")
def minirocket(n_classes: int = 0, pretrained: bool = False, in_chans: int | None = None,
               n_timepoints: int | None = None, **kwargs):
    """MiniRocket featurizer; ``pretrained`` is ignored (it is fitted on the training cases)."""
    _featurizer_only("minirocket", n_classes)
    return MiniRocketFeatures(1 if in_chans is None else in_chans, n_timepoints, **kwargs)


def gramian_images(series: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``(N, 3, size, size)`` of series ``(N, T)``: Gramian angular summation field,
    Gramian angular difference field and the distance map ``|x_i - x_j|``, all in [-1, 1]."""
    x = series[:, None, :]
    if x.shape[-1] != size:
        x = nn.functional.interpolate(x, size=size, mode="linear", align_corners=True)
    x = x[:, 0]
    low, high = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    x = ((2 * x - high - low) / (high - low).clamp_min(1e-8)).clamp(-1, 1)
    sine = (1 - x * x).clamp_min(0).sqrt()
    gasf = x[:, :, None] * x[:, None, :] - sine[:, :, None] * sine[:, None, :]
    gadf = sine[:, :, None] * x[:, None, :] - x[:, :, None] * sine[:, None, :]
    distance = (x[:, :, None] - x[:, None, :]).abs() - 1
    return torch.stack([gasf, gadf, distance], dim=1)


def spectrogram_images(series: torch.Tensor, size: int) -> torch.Tensor:
    """Log-magnitude spectrograms of series ``(N, T)`` as images ``(N, 3, size, size)`` in [-1, 1]."""
    n_timepoints = series.shape[-1]
    n_fft = max(8, min(64, n_timepoints // 4 * 2))
    spec = torch.stft(series, n_fft=n_fft, hop_length=max(1, n_fft // 4), return_complex=True,
                      window=torch.hann_window(n_fft, device=series.device), center=True)
    image = spec.abs().log1p()[:, None]
    image = nn.functional.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    low = image.amin(dim=(2, 3), keepdim=True)
    high = image.amax(dim=(2, 3), keepdim=True)
    image = 2 * (image - low) / (high - low).clamp_min(1e-8) - 1
    return image.expand(-1, 3, -1, -1)


class SignalImageFeatures(nn.Module):
    """Signal-as-image transfer: every channel rendered as an image, through a frozen image network.

    Args:
        in_chans: Signal channels; the feature vector is ``in_chans * backbone features``.
        n_timepoints: Input length (informational).
        render: ``"gaf"`` (Gramian angular fields + distance map) or ``"spectrogram"``.
        image_size: Side of the rendered images.
        backbone: Registry name of the pretrained image network.
        pretrained: Load the backbone's pretrained weights.
        chunk: Images per backbone call (bounds memory).
    """

    is_featurizer = True
    onnx_exportable = False

    def __init__(self, in_chans: int = 1, n_timepoints: int | None = None, render: str = "gaf",
                 image_size: int = 128, backbone: str = "efficientnet_lite0", pretrained: bool = False,
                 chunk: int = 64):
        super().__init__()
        if render not in ("gaf", "spectrogram"):
            raise ConfigError(f"The 'render' option must be 'gaf' or 'spectrogram'. Got {render!r}.")
        self.in_chans = in_chans
        self.render = render
        self.image_size = image_size
        self.chunk = chunk
        self.backbone = build_model(backbone, n_classes=0, pretrained=pretrained).eval()
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        self.num_features = in_chans * int(self.backbone.num_features)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """The rendered images ``(B * C, 3, S, S)`` of signals ``(B, C, T)``."""
        series = x.reshape(-1, x.shape[-1]).float()
        draw = gramian_images if self.render == "gaf" else spectrogram_images
        return draw(series, self.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        images = self.images(x)
        features = []
        for begin in range(0, len(images), self.chunk):
            part = images[begin:begin + self.chunk].contiguous(memory_format=torch.channels_last)
            features.append(self.backbone(part))
        pooled = torch.cat(features) if features else images.new_zeros((0, self.num_features // self.in_chans))
        return pooled.reshape(batch, -1)


@register_model("signal_image", modality="signal", has_pretrained=True,
                description="Signal-as-image transfer: GAF/spectrogram images into frozen EfficientNet-Lite0")
def signal_image(n_classes: int = 0, pretrained: bool = False, in_chans: int | None = None,
                 n_timepoints: int | None = None, **kwargs):
    """Signal-as-image featurizer over a frozen pretrained image network."""
    _featurizer_only("signal_image", n_classes)
    return SignalImageFeatures(1 if in_chans is None else in_chans, n_timepoints,
                               pretrained=pretrained, **kwargs)
