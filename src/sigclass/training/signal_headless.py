"""Headless mode for signals: a featurizer fitted on the training cases, then a scikit-learn head.

Unlike the frozen image featurizer, a signal featurizer may learn from the training part:
MiniRocket and MultiROCKET fit their dilations and biases there; catch22 computes fixed
characteristics and signal-as-image transfer only renders images and runs a frozen pretrained
network. Either way the fitted featurizer is a registry network, saved
with the model without pickle, and :class:`SignalFeaturizer` is a scikit-learn transformer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..exceptions import ConfigError
from ..inference import infer

logger = logging.getLogger(__name__)

FEATURIZERS = ("minirocket", "multirocket_hydra", "catch22", "signal_image")
SEEDED = ("minirocket", "multirocket_hydra")  # featurizers fitted with a seed


def check_signal_mode(mode: str, model: str | None) -> None:
    """Refuse mode/model pairs that cannot work on signals, saying what to use instead."""
    if mode == "finetune":
        raise ConfigError(
            "Mode 'finetune' needs a pretrained network, and there are no pretrained 1D networks. "
            "Use --mode scratch (e.g. --model fcn) to train a signal network, or --mode headless "
            "(minirocket, multirocket_hydra, catch22, or signal_image for transfer from a pretrained "
            "image network)."
        )
    if model is None:
        return
    from ..models import model_entry

    entry = model_entry(model)
    if entry is None or entry.modality != "signal":
        from ..models import list_models

        raise ConfigError(f"'{model}' is not a signal network. Signal networks: "
                          f"{', '.join(list_models(modality='signal'))}.")
    if mode == "headless" and model not in FEATURIZERS:
        raise ConfigError(f"Headless mode on signals needs a featurizer: one of "
                          f"{', '.join(repr(f) for f in FEATURIZERS)}. Got '{model}'; train it "
                          "with --mode scratch.")
    if mode == "scratch" and model in FEATURIZERS:
        raise ConfigError(f"'{model}' is a featurizer for --mode headless, not a network to train "
                          "with --mode scratch.")


def make_signal_featurizer(cfg, progress: bool = False) -> SignalFeaturizer:
    """The (unfitted) featurizer of a headless signal run."""
    check_signal_mode("headless", cfg.model)
    model_args = dict(cfg.model_args)
    if cfg.model in SEEDED:
        model_args.setdefault("seed", cfg.seed)
    return SignalFeaturizer(cfg.model, cfg.pretrained, cfg.weights, model_args,
                            cfg.train.forward_batch_size, cfg.backend, cfg.device, progress)


class SignalFeaturizer(TransformerMixin, BaseEstimator):
    """Signals ``(n, C, T)`` → one feature vector per case (MiniRocket, MultiROCKET-Hydra,
    catch22 or signal-as-image).

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
        """Fit on training cases: a :class:`~sigclass.data.signals.SignalDataset` or an array
        ``(n, C, T)``; ``y`` is ignored."""
        from ..data.signals import SignalPreprocessor, signal_data_config, standardize
        from ..models import create_model

        started = time.perf_counter()
        array = X.X if hasattr(X, "X") else np.asarray(X, dtype=np.float32)
        if array.ndim != 3:
            raise ConfigError(f"SignalFeaturizer.fit takes cases (n_cases, n_channels, n_timepoints); "
                              f"got shape {array.shape}.")
        self.data_config_ = signal_data_config(X, np.arange(len(array)))
        self.preprocessor_ = SignalPreprocessor(self.data_config_)
        network = create_model(self.model, n_classes=0, pretrained=self.pretrained,
                               in_chans=int(array.shape[1]), weights=self.weights,
                               n_timepoints=int(array.shape[2]), **(self.model_args or {}))
        if not getattr(network, "is_featurizer", False):
            raise ConfigError(f"'{self.model}' is not a signal featurizer; use one of {FEATURIZERS}.")
        if hasattr(network, "fit"):
            network.fit(standardize(array, self.data_config_))
        self.network_ = network.eval()
        self.n_features_out_ = int(network.num_features)
        self.engine_ = None
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def engine(self):
        """The inference engine (PyTorch for networks that cannot be exported to ONNX)."""
        if self.engine_ is None:
            from ..inference import make_engine

            self.engine_ = make_engine(self.network_, self.preprocessor_.item_shape, self.backend,
                                       self.device)
        return self.engine_

    def transform(self, X) -> np.ndarray:
        """Feature matrix ``(n_cases, n_features_out_)``."""
        if not hasattr(self, "network_"):
            raise ConfigError("SignalFeaturizer is not fitted; call fit on training cases first.")
        items = self.preprocessor_.as_list(X.X if hasattr(X, "X") else X)
        out = np.zeros((len(items), self.n_features_out_), dtype=np.float32)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="features", unit="case", leave=False)
        for begin in range(0, len(items), self.batch_size):
            batch = self.preprocessor_(items[begin:begin + self.batch_size])
            out[begin:begin + len(batch)] = infer(self.engine(), batch)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"feature{i}" for i in range(self.n_features_out_)], dtype=object)
