"""Headless mode for signals: a featurizer fitted on the training cases, then a scikit-learn head.

Unlike the frozen image featurizer, a signal featurizer may learn from the training part:
MiniRocket and MultiROCKET fit their dilations and biases there; catch22 computes fixed
characteristics and signal-as-image transfer only renders images and runs a frozen pretrained
network. Either way the fitted featurizer is a registry network, saved with the model without
pickle, and :class:`SignalFeaturizer` is a scikit-learn transformer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..data.signal_preprocess import SignalPreprocessor, as_cases, signal_data_config, standardize
from ..exceptions import ConfigError, DataError, Problem
from ..inference import infer
from ..models import create_model
from .featurizer import BaseFeaturizer

logger = logging.getLogger(__name__)

FEATURIZERS = ("minirocket", "multirocket_hydra", "catch22", "signal_image")
SEEDED = ("minirocket", "multirocket_hydra")  # featurizers fitted with a seed


class SignalFeaturizer(BaseFeaturizer):
    """Signals → one feature vector per case (MiniRocket, MultiROCKET-Hydra, catch22 or
    signal-as-image).

    ``X`` is a :class:`~sigclass.data.signals.SignalDataset`, an array ``(n_cases, n_channels,
    n_timepoints)``, or ``(n_cases, n_timepoints)`` for one channel (aeon's convention; see
    :func:`~sigclass.data.signal_preprocess.as_cases`).

    Args:
        model: One of :data:`FEATURIZERS`.
        pretrained: Load pretrained image weights (``signal_image``).
        weights: Local weights file for the featurizer network.
        model_args: Options of the network (e.g. ``n_kernels``, ``render``, ``image_size``).
        batch_size: Cases per forward pass.
        backend: ``"auto"``, ``"torch"`` or ``"onnx"``; featurizers that cannot be exported run
            with PyTorch.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: Show a progress bar.

    Attributes:
        network_: The fitted featurizer network.
        data_config_: Its preprocessing (standardization fitted on ``fit``'s cases).
        n_features_in_: Values per case seen in ``fit`` (channels x timepoints).
        n_features_out_: Width of the feature vectors.
        fit_seconds_: Time spent fitting the featurizer.
    """

    def __init__(self, model: str = "minirocket", pretrained: bool = True, weights: str | None = None,
                 model_args: dict[str, Any] | None = None, batch_size: int = 64,
                 backend: str = "auto", device: str | None = "auto", progress: bool = False):
        self.model = model
        self.pretrained = pretrained
        self.weights = weights
        self.model_args = model_args
        self.batch_size = batch_size
        self.backend = backend
        self.device = device
        self.progress = progress

    def fit(self, X, y=None) -> SignalFeaturizer:
        """Fit on training cases; ``y`` is ignored."""
        started = time.perf_counter()
        array = as_cases(X)
        if not np.isfinite(array).all():
            raise DataError(Problem("input", "the training cases hold NaN or infinite values; "
                                    "fill or drop them before fitting the featurizer"))
        self.data_config_ = signal_data_config(X if hasattr(X, "X") else array, np.arange(len(array)))
        self.preprocessor_ = SignalPreprocessor(self.data_config_)
        network = create_model(self.model, n_classes=0, pretrained=self.pretrained,
                               in_chans=int(array.shape[1]), weights=self.weights,
                               n_timepoints=int(array.shape[2]), **(self.model_args or {}))
        if not getattr(network, "is_featurizer", False):
            raise ConfigError(f"'{self.model}' is not a signal featurizer; use one of {FEATURIZERS}.")
        if hasattr(network, "fit"):
            network.fit(standardize(array, self.data_config_))
        self.network_ = network.eval()
        self.n_features_in_ = int(array.shape[1] * array.shape[2])
        self.n_features_out_ = int(network.num_features)
        self.engine_ = None
        self.fit_seconds_ = time.perf_counter() - started
        return self

    @classmethod
    def from_network(cls, network, data_config: dict[str, Any], model: str, batch_size: int = 64,
                     backend: str = "auto", device: str | None = "auto",
                     progress: bool = False) -> SignalFeaturizer:
        """The fitted featurizer of a saved headless model: its fitted ``network`` and its
        preprocessing ``data_config``, as ``fit`` left them. ``model``: its featurizer name."""
        featurizer = cls(model, False, None, None, batch_size, backend, device, progress)
        featurizer.data_config_ = dict(data_config)
        featurizer.preprocessor_ = SignalPreprocessor(featurizer.data_config_)
        featurizer.network_ = network.eval()
        featurizer.n_features_in_ = int(data_config["n_channels"]) * int(data_config["n_timepoints"])
        featurizer.n_features_out_ = int(network.num_features)
        featurizer.engine_ = None
        featurizer.fit_seconds_ = 0.0
        return featurizer

    def transform(self, X) -> np.ndarray:
        """Feature matrix ``(n_cases, n_features_out_)``."""
        self._check_fitted()
        items = list(as_cases(X))
        out = np.zeros((len(items), self.n_features_out_), dtype=np.float32)
        bar = self._progress(len(items), "case")
        for begin in range(0, len(items), self.batch_size):
            batch = self.preprocessor_(items[begin:begin + self.batch_size])
            out[begin:begin + len(batch)] = infer(self.engine(), batch)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return out
