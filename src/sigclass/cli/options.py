"""The run options shared by ``train``, ``compare`` and ``tune``, and how they resolve.

Configuration flows one way: dataclass defaults, then ``--config FILE`` (YAML), then flags
(``--set key=value`` reaches any key). The choices come from :mod:`sigclass.choices`, the
same tuples the configuration validates against.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..choices import (
    BACKENDS,
    BAD_FILE_POLICIES,
    HEADS,
    LEAK_POLICIES,
    LENGTH_POLICIES,
    MODALITIES,
    MODES,
    NEAR_DUPLICATES,
    OOD_METHODS,
    POOLINGS,
    RESIZE_MODES,
    TTA_CHOICES,
)
from ..config import RunConfig, load_config
from ..exceptions import ConfigError

# (flags, config key, argparse options) of the options shared by train, compare and tune.
RUN_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--mode",), "mode", {"choices": MODES, "help": "training mode (default: headless)"}),
    (("--model",), "model", {"help": "network name (see `sigclass networks`); default per mode"}),
    (("--epochs",), "train.epochs", {"type": int, "help": "training epochs (default: auto, from "
                                                 "a number of optimisation steps, capped by --max-minutes)"}),
    (("--batch-size",), "train.batch_size", {"type": int, "help": "batch size (default: auto, 32 or fewer so an epoch has 4 steps)"}),
    (("--lr",), "train.lr", {"type": float, "help": "peak learning rate of the head (default: 1e-3)"}),
    (("--max-minutes",), "train.max_minutes", {"type": float, "help": "training budget per model in minutes "
                                                     "(default with auto epochs: 2 for signals, 5 for images)"}),
    (("--class-weights",), "train.class_weights", {"action": "store_true", "help": "classes weigh "
                                                 "equally: loss (networks) or head (headless) weighted "
                                                 "by inverse class frequency (default: only when the "
                                                 "largest class has over 1.5x the smallest)"}),
    (("--patience",), "train.patience", {"type": int, "help": "early-stopping patience in epochs "
                                                 "(default: a quarter of the planned epochs)"}),
    (("--image-size",), "image_size", {"type": int, "help": "square input size (default: the network's)"}),
    (("--resize",), "resize", {"choices": RESIZE_MODES,
                               "help": "center_crop as in pretraining, squash the whole image, or "
                                       "letterbox (pad to a square, then resize)"}),
    (("--tta",), "tta", {"nargs": "?", "const": "hflip", "choices": TTA_CHOICES,
                         "help": "test-time views averaged: none, hflip (the mirror; plain --tta), "
                                 "flips (four flips), dihedral (flips and quarter turns) or auto "
                                 "(default: headless picks none/hflip/flips by cross-validation, "
                                 "networks none)"}),
    (("--pooling",), "pooling", {"choices": POOLINGS,
                                 "help": "headless features: final (mean of the last map), stages "
                                         "(mean and max of the last stages too) or auto (default: "
                                         "stages where the backbone has them)"}),
    (("--head",), "head", {"choices": HEADS, "help": "classic ML head of headless mode (default: auto, logreg; ridge above 5,000 features)"}),
    (("--coverage",), "coverage", {"type": float, "help": "probability that a prediction set "
                                   "holds the true class (conformal prediction; default: 0.9)"}),
    (("--ood",), "ood", {"choices": OOD_METHODS, "help": "score that flags inputs far from the "
                         "training data: knn (default), mahalanobis or off"}),
    (("--weights",), "weights", {"help": "local .safetensors/.pth weights for the network"}),
    (("--masks",), "masks", {"help": "images: folder of mask files mirroring the data "
                             "(<class>/<stem>.png, white = area blanked while training)"}),
    (("--cam-examples",), "cam_examples", {"type": int, "help": "maps of this many best and worst test "
                                           "predictions in the run's cam/ folder (default: 4; 0: off)"}),
    (("--no-pretrained",), "pretrained", {"action": "store_false", "help": "start from random weights"}),
    (("--split",), "split", {"help": "reuse this split file (e.g. another run's split.json)"}),
    (("--val-dir",), "val_dir", {"help": "a folder, manifest or signal file whose items are the "
                                 "validation part (DATA is then the training pool)"}),
    (("--test-dir",), "test_dir", {"help": "a folder, manifest or signal file whose items are the "
                                   "held-out test part (never trained on)"}),
    (("--on-leak",), "on_leak", {"choices": LEAK_POLICIES,
                                 "help": "near-duplicates on both sides of the split: warn (default), error or ignore"}),
    (("--no-audit",), "audit", {"action": "store_false",
                                "help": "leave the label-error audit out of data_report.json"}),
    (("--near-duplicates",), "near_duplicates", {"choices": NEAR_DUPLICATES,
                                                 "help": "how near-duplicate images are found (default: phash)"}),
    (("--val-size",), "val_size", {"type": float, "help": "validation fraction (default: 0.15)"}),
    (("--test-size",), "test_size", {"type": float, "help": "test fraction (default: 0.2)"}),
    (("--seed",), "seed", {"type": int, "help": "seed of split, initialisation and data order (default: 0)"}),
    (("--on-bad-file",), "on_bad_file", {"choices": BAD_FILE_POLICIES,
                                         "help": "stop on bad files (error, default) or leave them out (skip)"}),
    (("--max-file-mb",), "max_file_mb", {"type": float, "help": "largest data file read, in MB "
                                         "(default: 512); only regular files are read"}),
    (("--follow-symlinks",), "follow_symlinks", {"action": "store_true", "help": "read symbolic "
                                                 "links that leave the dataset root (default: refused)"}),
    (("--modality",), "modality", {"choices": ("auto", *MODALITIES), "help": "data modality (default: auto)"}),
    (("--root",), "root", {"help": "dataset root of a CSV manifest (default: its folder)"}),
    (("--device",), "device", {"help": "auto (CUDA when present), cpu or cuda"}),
    (("--backend",), "backend", {"choices": BACKENDS, "help": "featurizer inference backend"}),
    (("--cache-dir",), "cache_dir", {"help": "feature cache folder (default: ~/.cache/sigclass)"}),
    (("--window",), "signal.window", {"type": int, "help": "signals: cut recordings into windows of this length"}),
    (("--stride",), "signal.stride", {"type": int, "help": "signals: step between windows (default: --window)"}),
    (("--resample",), "signal.resample", {"help": "signals, long tables: one regular grid, e.g. 50Hz or 20ms"}),
    (("--max-gap",), "signal.max_gap", {"help": "signals with --resample: fill gaps up to this (e.g. 2s), split at longer"}),
    (("--length-policy",), "signal.length_policy", {"choices": LENGTH_POLICIES,
                                                    "help": "signals of unequal length: error (default), pad or truncate"}),
    (("--tracking-uri",), "tracking.uri", {"help": "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else mlflow.db here)"}),
    (("--experiment",), "tracking.experiment", {"help": "MLflow experiment (default: named after the data)"}),
    (("--no-track",), "tracking.enabled", {"action": "store_false", "help": "do not record the run in MLflow"}),
]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run options (override --config)")
    group.add_argument("--config", type=Path, help="YAML config file (e.g. a run's config.yaml)")
    for flags, key, options in RUN_OPTIONS:
        if "choices" not in options and "action" not in options:
            options = {"metavar": flags[0].lstrip("-").upper().replace("-", "_"), **options}
        group.add_argument(*flags, dest=f"cfg:{key}", default=argparse.SUPPRESS, **options)
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="set any config key, e.g. --set train.label_smoothing=0.0 (repeatable)")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults → ``--config`` → flags → ``--set``."""
    import yaml

    config = RunConfig.from_dict(load_config(args.config)) if getattr(args, "config", None) else RunConfig()
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}.")
        overrides[key.strip()] = yaml.safe_load(value)
    return config.updated(overrides)
