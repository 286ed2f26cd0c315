"""More featurizers for headless signal models: catch22 and MultiROCKET-Hydra, both from aeon.

Like MiniRocket (:mod:`.signal_features`), each is an ``nn.Module`` mapping standardized signals
``(B, C, T)`` to a feature matrix ``(B, num_features)`` for a scikit-learn head, and is saved like
every network (fitted state in buffers, ``state_dict`` in safetensors), without pickle.

- ``catch22``: the 22 canonical time-series characteristics (Lubba et al. 2019) of every channel,
  aeon's ``Catch22``. Nothing is fitted. The non-deep baseline of the signal leaderboard, with a
  random-forest head as in the catch22 classifier.
- ``multirocket_hydra``: MultiROCKET (Tan et al. 2022) and Hydra (Dempster et al. 2023) features
  side by side, aeon's ``MultiRocket`` and Hydra's kernels, as in aeon's
  ``MultiRocketHydraClassifier`` whose ridge head becomes ours. MultiROCKET's fitted dilations,
  channel choices and biases and Hydra's random kernels and channel picks are buffers. Hydra's
  counts are square-rooted (the first step of aeon's sparse scaler; the head standardizes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..exceptions import ConfigError
from .registry import register_model
from .signal_features import _featurizer_only

_MULTIROCKET_ARRAYS = ("n_channels_per_combination", "channel_indices", "dilations",
                       "n_features_per_dilation", "biases")
_UNIVARIATE_ARRAYS = ("dilations", "n_features_per_dilation", "biases")


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


class Catch22Features(nn.Module):
    """catch22 features (aeon's ``Catch22``) of every channel: ``22 * in_chans`` features.

    Args:
        in_chans: Input channels.
        n_timepoints: Input length (informational).
        catch24: Add each channel's mean and standard deviation (24 features per channel).
        n_jobs: Parallel jobs of the transform.
    """

    is_featurizer = True
    onnx_exportable = False

    def __init__(self, in_chans: int = 1, n_timepoints: int | None = None, catch24: bool = False,
                 n_jobs: int = 1):
        super().__init__()
        self.in_chans = in_chans
        self.catch24 = catch24
        self.n_jobs = n_jobs
        self.num_features = (24 if catch24 else 22) * in_chans
        self._transformer = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._transformer is None:
            from aeon.transformations.collection.feature_based import Catch22

            self._transformer = Catch22(catch24=self.catch24, replace_nans=True, n_jobs=self.n_jobs)
        # aeon's numba code for catch22 takes float64 series.
        features = self._transformer.fit_transform(_numpy(x).astype(np.float64))
        return torch.as_tensor(np.asarray(features, dtype=np.float32), device=x.device)


@register_model("catch22", modality="signal",
                description="catch22 features (aeon) for headless mode; the non-deep signal baseline")
def catch22(n_classes: int = 0, pretrained: bool = False, in_chans: int | None = None,
            n_timepoints: int | None = None, **kwargs):
    """catch22 featurizer; ``pretrained`` is ignored (nothing is learned)."""
    _featurizer_only("catch22", n_classes)
    return Catch22Features(1 if in_chans is None else in_chans, n_timepoints, **kwargs)


class MultiRocketHydraFeatures(nn.Module):
    """MultiROCKET + Hydra features (aeon's implementations) with the fitted state in buffers.

    Args:
        in_chans: Input channels.
        n_timepoints: Input length (at least 9); fixes Hydra's dilations.
        n_kernels: MultiROCKET kernels (rounded down to a multiple of 84); 8 features each
            (4 poolings of the series and of its first difference).
        max_dilations_per_kernel: MultiROCKET's dilation limit.
        hydra_kernels: Hydra kernels per group.
        hydra_groups: Hydra groups.
        hydra_max_channels: Most channels one Hydra kernel sums over.
        seed: Seed of the fit.
        n_jobs: Threads of MultiROCKET's numba transform.
    """

    is_featurizer = True
    onnx_exportable = False

    def __init__(self, in_chans: int = 1, n_timepoints: int | None = None, n_kernels: int = 6250,
                 max_dilations_per_kernel: int = 32, hydra_kernels: int = 8, hydra_groups: int = 64,
                 hydra_max_channels: int = 8, seed: int = 0, n_jobs: int = 1):
        super().__init__()
        if n_timepoints is None or n_timepoints < 10:
            raise ConfigError(f"MultiROCKET-Hydra needs series of at least 10 timepoints; got "
                              f"{n_timepoints}. Pad them with signal.length_policy='pad' and "
                              "signal.length=10.")
        self.in_chans = in_chans
        self.n_timepoints = n_timepoints
        self.n_kernels = max(84, n_kernels) // 84 * 84
        self.max_dilations_per_kernel = max_dilations_per_kernel
        self.hydra_kernels = hydra_kernels
        self.hydra_groups = hydra_groups
        self.hydra_max_channels = hydra_max_channels
        self.seed = seed
        self.n_jobs = n_jobs
        n_dilations = int(np.log2((n_timepoints - 1) / 8)) + 1
        divisor = min(2, hydra_groups)
        self.n_hydra_features = n_dilations * divisor * 2 * (hydra_groups // divisor) * hydra_kernels
        self.num_features = 8 * self.n_kernels + self.n_hydra_features
        for prefix in ("mr", "mr_diff"):
            for name in _MULTIROCKET_ARRAYS:
                dtype = torch.float32 if name == "biases" else torch.int32
                self.register_buffer(f"{prefix}_{name}", torch.zeros(0, dtype=dtype))
        self.register_buffer("hydra_weights", torch.zeros(0))
        self.register_buffer("hydra_channels", torch.zeros(0, dtype=torch.int64))
        self._multirocket = None
        self._hydra = None

    @property
    def is_fitted(self) -> bool:
        return self.mr_biases.numel() > 0

    def _names(self) -> tuple[str, ...]:
        return _UNIVARIATE_ARRAYS if self.in_chans == 1 else _MULTIROCKET_ARRAYS

    def fit(self, X: np.ndarray) -> MultiRocketHydraFeatures:
        """Fit MultiROCKET's dilations and biases on training cases ``(n, C, T)`` and draw Hydra's
        kernels (seeded; the global random state is left as it was); returns ``self``."""
        from aeon.transformations.collection.convolution_based import MultiRocket

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.shape[1:] != (self.in_chans, self.n_timepoints):
            raise ConfigError(f"MultiROCKET-Hydra was built for cases of shape ({self.in_chans}, "
                              f"{self.n_timepoints}); got {X.shape[1:]}.")
        state = np.random.get_state()
        try:
            multirocket = MultiRocket(self.n_kernels, self.max_dilations_per_kernel, n_jobs=self.n_jobs,
                                      random_state=self.seed).fit(X)
        finally:
            np.random.set_state(state)
        for prefix, arrays in (("mr", multirocket.parameter), ("mr_diff", multirocket.parameter1)):
            for name, array in zip(self._names(), arrays, strict=True):
                setattr(self, f"{prefix}_{name}", torch.from_numpy(np.array(array)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            hydra = self._new_hydra()
        # Stored as matrices: inference moves 4D/5D tensors to channels_last.
        self.hydra_weights = hydra.W.reshape(-1, hydra.W.shape[-1]).clone()
        channels = torch.stack([torch.as_tensor(i) for i in hydra.idx]).to(torch.int64)
        self.hydra_channels = channels.reshape(-1, channels.shape[-1])
        self._multirocket, self._hydra = multirocket, hydra
        return self

    def _new_hydra(self):
        # aeon's Hydra module; its public transformer sets torch's global seed and thread count.
        from aeon.transformations.collection.convolution_based._hydra import _HydraInternal

        return _HydraInternal(self.n_timepoints, self.in_chans, k=self.hydra_kernels,
                              g=self.hydra_groups, max_num_channels=self.hydra_max_channels)

    def _aeon(self):
        """The aeon transformers, rebuilt from the buffers after loading."""
        if self._multirocket is None:
            from aeon.transformations.collection.convolution_based import MultiRocket

            multirocket = MultiRocket(self.n_kernels, self.max_dilations_per_kernel, n_jobs=self.n_jobs,
                                      random_state=self.seed)
            for attribute, prefix in (("parameter", "mr"), ("parameter1", "mr_diff")):
                arrays = tuple(np.ascontiguousarray(getattr(self, f"{prefix}_{name}").cpu().numpy())
                               for name in self._names())
                setattr(multirocket, attribute, arrays)
            multirocket.random_state_ = self.seed
            multirocket._n_jobs = self.n_jobs
            multirocket.is_fitted = True
            with torch.random.fork_rng(devices=[]):
                hydra = self._new_hydra()  # the shapes; the values come from the buffers
            hydra.W = self.hydra_weights.cpu().float().reshape(hydra.W.shape).contiguous()
            shape = (len(hydra.idx), *hydra.idx[0].shape)
            hydra.idx = list(self.hydra_channels.cpu().reshape(shape))
            self._multirocket, self._hydra = multirocket, hydra
        return self._multirocket, self._hydra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_fitted:
            raise ConfigError("This MultiROCKET-Hydra featurizer is not fitted; call fit(X) on "
                              "training cases first (headless training does).")
        multirocket, hydra = self._aeon()
        array = _numpy(x)
        rocket = np.asarray(multirocket.transform(array), dtype=np.float32)
        counts = hydra.batch(torch.from_numpy(array)).clamp(0).sqrt().numpy()
        features = np.concatenate([rocket, counts.astype(np.float32)], axis=1)
        return torch.as_tensor(features, device=x.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The fitted arrays' sizes depend on the training data: take them from the saved state.
        for name, _ in self.named_buffers(recurse=False):
            if prefix + name in state_dict:
                saved = state_dict[prefix + name]
                setattr(self, name, torch.empty(saved.shape, dtype=saved.dtype))
        self._multirocket = self._hydra = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register_model("multirocket_hydra", modality="signal",
                description="MultiROCKET + Hydra features (aeon) for headless mode; fitted, no training")
def multirocket_hydra(n_classes: int = 0, pretrained: bool = False, in_chans: int | None = None,
                      n_timepoints: int | None = None, **kwargs):
    """MultiROCKET-Hydra featurizer; ``pretrained`` is ignored (it is fitted on the training cases)."""
    _featurizer_only("multirocket_hydra", n_classes)
    return MultiRocketHydraFeatures(1 if in_chans is None else in_chans, n_timepoints, **kwargs)
