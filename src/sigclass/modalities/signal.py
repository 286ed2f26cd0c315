"""Signals: multichannel time series from NPZ, CSV/Parquet, ``.ts`` files and aeon's datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Entry, RunConfig
from ..data.file_checks import DEFAULT_MAX_FILE_MB
from ..data.signal_layout import cases_from_frame
from ..data.signal_parts import join_signal_datasets, merge_parts, split_files
from ..data.signal_preprocess import SignalPreprocessor, signal_data_config
from ..data.signals import SignalDataset, load_signals, read_signal_inputs
from ..exceptions import ConfigError, DataError
from ..models import create_model, list_models, model_entry
from ..training.schedule import Budget
from ..training.signal_featurizer import FEATURIZERS, SEEDED, SignalFeaturizer
from .base import Modality
from .drawing import render_channels, render_signal
from .signal_lean import LeanSignal

SIGNAL_FILES = (".npz", ".ts", ".parquet", ".pq")
NAMED_PREFIXES = ("aeon", "sktime", "ucr")


class SignalModality(LeanSignal, Modality):
    """Sensor recordings: one shape, ``(n_cases, n_channels, n_timepoints)``; uploads are read as
    :class:`~sigclass.modalities.signal_lean.LeanSignal` reads them."""

    modes = ("headless", "scratch")  # there are no pretrained 1D networks to fine-tune
    default_models = {"headless": "minirocket", "scratch": "fcn"}
    budget = Budget(steps=1500, minutes=2.0)
    map_ndim = 1
    explains_channels = True
    tune_heads = ("ridge", "logreg", "linear_svm")

    def claims(self, source: str) -> bool:
        """Signal files, named signal datasets (``aeon:NAME``) and folders of split-named
        signal files; a CSV file whose header has no ``path`` column (an image manifest has)."""
        if source.lower().split(":", 1)[0] in NAMED_PREFIXES:
            return True
        path = Path(source)
        if path.suffix.lower() in SIGNAL_FILES:
            return True
        if path.suffix.lower() == ".csv" and path.is_file():
            header = path.open(encoding="utf-8-sig").readline().lower().replace(" ", "").split(",")
            return "path" not in header
        if path.is_dir():
            try:
                return bool(split_files(path))
            except DataError:
                return True  # several files for one part: load_signals names them
        return False

    def load(self, source, root=None, on_bad_file: str = "error", min_per_class: int = 1,
             options=None, *, max_file_mb: float = DEFAULT_MAX_FILE_MB,
             follow_symlinks: bool = False) -> SignalDataset:
        return load_signals(str(source), on_bad_file=on_bad_file, min_per_class=min_per_class,
                            options=options, max_file_mb=max_file_mb,
                            follow_symlinks=follow_symlinks)

    def merge_parts(self, parts, sources, where) -> SignalDataset:
        return merge_parts(parts, sources, where)

    def read_files(self, files, data_config) -> dict[str, Any]:
        return read_signal_inputs(files, data_config)

    def preprocessor(self, data_config) -> SignalPreprocessor:
        return SignalPreprocessor(data_config)

    def check_mode(self, mode: str, model: str | None) -> None:
        if mode == "finetune":
            raise ConfigError(
                "Mode 'finetune' needs a pretrained network, and there are no pretrained 1D "
                "networks. Use --mode scratch (e.g. --model fcn) to train a signal network, or "
                "--mode headless (minirocket, multirocket_hydra, catch22, or signal_image for "
                "transfer from a pretrained image network)."
            )
        super().check_mode(mode, model)
        if model is None:
            return
        entry = model_entry(model)
        if entry is None or entry.modality != self.name:
            raise ConfigError(f"'{model}' is not a signal network. Signal networks: "
                              f"{', '.join(list_models(modality=self.name))}.")
        if mode == "headless" and model not in FEATURIZERS:
            raise ConfigError(f"Headless mode on signals needs a featurizer: one of "
                              f"{', '.join(repr(f) for f in FEATURIZERS)}. Got '{model}'; train it "
                              "with --mode scratch.")
        if mode == "scratch" and model in FEATURIZERS:
            raise ConfigError(f"'{model}' is a featurizer for --mode headless, not a network to "
                              "train with --mode scratch.")

    def network(self, cfg: RunConfig, dataset, train_indices):
        data_config = signal_data_config(dataset, train_indices)
        network = create_model(cfg.model, n_classes=len(dataset.classes), pretrained=cfg.pretrained,
                               in_chans=data_config["n_channels"], weights=cfg.weights,
                               n_timepoints=data_config["n_timepoints"], **dict(cfg.model_args))
        return network, data_config

    def training_set(self, dataset, data_config, cfg: RunConfig):
        if cfg.masks:
            raise ConfigError("The 'masks' option blanks areas of images; signal data takes no masks.")
        return dataset.to_torch(data_config, cfg.signal_augment)

    def featurizer(self, cfg: RunConfig, progress: bool = False) -> SignalFeaturizer:
        self.check_mode("headless", cfg.model)
        model_args = dict(cfg.model_args)
        if cfg.model in SEEDED:
            model_args.setdefault("seed", cfg.seed)
        return SignalFeaturizer(cfg.model, cfg.pretrained, cfg.weights, model_args,
                                cfg.train.forward_batch_size, cfg.backend, cfg.device, progress)

    def fit_featurizer(self, featurizer: SignalFeaturizer, part) -> SignalFeaturizer:
        # Unlike a frozen image network, MiniRocket is fitted, on the training cases only.
        return featurizer.fit(part)

    def saved_featurizer(self, predictor, cfg: RunConfig, progress: bool = False) -> SignalFeaturizer:
        return SignalFeaturizer.from_network(predictor.network, predictor.data_config, cfg.model,
                                             cfg.train.forward_batch_size, cfg.backend, cfg.device,
                                             progress)

    def join(self, base, added, prefix: str, where: str):
        return join_signal_datasets(base, added, prefix, where)

    def default_entries(self) -> list[Entry]:
        return default_entries()

    def audit_features(self, dataset, model: str, cache_dir=None):
        return SignalFeaturizer("minirocket").fit(dataset).transform(dataset)

    def audit_feature_name(self, model: str) -> str:
        return "minirocket"

    def item_paths(self, dataset) -> list[str]:
        return list(dataset.ids)

    def thumbnail(self, dataset, index: int, draw: bool = True) -> bytes | None:
        return render_channels(dataset.X[index], dataset.channel_names) if draw else None

    def decode_frame(self, frame, predictor):
        n_channels, n_timepoints = predictor.preprocessor.item_shape
        return cases_from_frame(frame, n_channels, n_timepoints,
                                predictor.data_config.get("channel_names"))

    def render(self, explanation, item, alpha: float = 0.45, classes=None, channel_names=None) -> bytes:
        return render_signal(explanation, item, classes, channel_names)


def default_entries() -> list[Entry]:
    """The contestants of ``sigclass compare`` on signals: 1D CNNs (FCN, ResNet, Inception, the
    lab brief's CNN), recurrent nets (LSTM, GRU), MiniRocket, MultiROCKET-Hydra, catch22 + random
    forest (the non-deep baseline) and signal-as-image transfer.

    Networks train with the adaptive defaults of :class:`~sigclass.config.TrainConfig` (an
    epoch budget from a number of optimisation steps, capped by minutes; early stopping on
    the smoothed validation loss; a batch size that gives an epoch at least 4 steps); options
    the user sets win (``--epochs``, ``--batch-size``, ``--max-minutes``).
    """
    networks = [("fcn", "fcn"), ("resnet1d", "resnet1d"), ("inception", "inception"),
                ("cnn1d", "simple_cnn1d"), ("lstm", "lstm"), ("gru", "gru")]
    return [
        *[Entry(name, "scratch", model) for name, model in networks],
        Entry("minirocket", "headless", "minirocket"),
        Entry("multirocket_hydra", "headless", "multirocket_hydra"),
        Entry("catch22_rf", "headless", "catch22", {"head": "random_forest"}),
        Entry("signal_image", "headless", "signal_image"),
    ]
