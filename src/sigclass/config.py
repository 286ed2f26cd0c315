"""Run configuration: dataclass defaults, then a YAML file, then command-line overrides.

The resolved configuration is saved with every run (``config.yaml``) and can be fed back with
``--config`` to reproduce it.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._utils import write_text
from .choices import (
    BACKENDS,
    BAD_FILE_POLICIES,
    HEADS,
    LEAK_POLICIES,
    MODALITIES,
    MODES,
    MONITORS,
    NEAR_DUPLICATES,
    OOD_METHODS,
    POOLINGS,
    RESIZE_MODES,
    TTA_CHOICES,
    choice_problem,
    raise_problems,
)
from .data.file_checks import DEFAULT_MAX_FILE_MB
from .data.image_augment import AugmentConfig
from .data.signal_augment import SignalAugmentConfig
from .data.signal_options import SignalConfig
from .data.split import size_problems
from .exceptions import ConfigError

__all__ = ["Entry", "RunConfig", "SignalConfig", "TrackingConfig", "TrainConfig", "load_config",
           "save_config"]


@dataclass
class TrainConfig:
    """Settings of the network training loop (modes ``finetune`` and ``scratch``).

    The defaults adapt to the data (see :mod:`sigclass.training.schedule`); a number given by
    the user (``--epochs 30``) always wins over ``"auto"``.

    - Epoch budget: ``epochs="auto"`` plans ``steps`` optimisation steps (1,500 for signal
      networks, 400 for image networks) at ``batch_size``, clamped to
      ``[min_epochs, max_epochs]``. ``max_minutes="auto"`` then caps the wall clock (2 minutes for
      signals, 5 for images): once the first epochs are timed, a plan that would overrun is
      shortened and the learning-rate schedule rescaled to end on time. With a fixed number of
      epochs, ``max_minutes="auto"`` sets no cap. The plan is printed and saved in the run's
      ``run.json`` (``epochs_planned``).
    - Early stopping: ``patience="auto"`` is a quarter of the planned epochs (at least 5), counted
      on the monitored value; no stop before ``min_epochs``.
    - Model selection (``monitor="auto"``): the smoothed validation loss (exponential moving
      average over epochs, factor ``loss_smoothing``) decides both early stopping and the epoch
      restored. When the validation part is tiny (under 30 items, or under 5 of some class), one
      item flips its accuracy and its loss barely ranks neighbouring epochs, so the weights at
      the end of the schedule are kept; if early stopping ended training, the epoch of the best
      smoothed validation loss is restored. A named ``monitor`` restores its best epoch.
    - Class weights: ``class_weights="auto"`` weights the loss (in ``headless`` mode the head's
      samples) by the square root of inverse class frequency when the largest training class
      has more than 1.5 times the items of the smallest; what was applied is in the run summary.

    Attributes:
        epochs: Epochs to train: a number, or ``"auto"`` (from ``steps``).
        steps: Optimisation steps of an ``"auto"`` epoch budget; ``None``: 1,500 for signal
            networks, 400 for image networks.
        min_epochs: Fewest epochs of an ``"auto"`` budget, and no early stop before it.
        max_epochs: Most epochs of an ``"auto"`` budget.
        batch_size: Items per optimisation step, or ``"auto"``: 32, made smaller on small
            training parts so that an epoch has at least 4 steps (never under 8 items).
        lr: Peak learning rate of the head (and of the whole network in ``scratch`` mode).
        backbone_lr_mult: The backbone's learning rate relative to ``lr`` once it is unfrozen.
        freeze_epochs: ``finetune`` only: first epochs train the new head with the backbone frozen.
        warmup_epochs: Linear warm-up length before the cosine decay.
        weight_decay: AdamW weight decay.
        label_smoothing: Cross-entropy label smoothing.
        class_weights: ``"auto"`` (the square root of inverse class frequency when classes are
            skewed), ``"sqrt"`` (that, always), ``true`` (inverse class frequency, always; in
            ``headless`` mode the head's ``class_weight="balanced"``) or ``false``.
        patience: Early stopping: epochs without improvement of ``monitor`` before stopping
            (0: off), or ``"auto"``.
        monitor: ``auto`` (smoothed validation loss, see above), ``val_loss``, ``val_accuracy``
            or ``val_f1``. Ties go to the lower validation loss (to the higher accuracy when a
            loss is monitored).
        loss_smoothing: Weight of the newest epoch in the moving average of the validation loss.
        max_minutes: Training budget in minutes, ``None`` (none) or ``"auto"`` (see above).
        clip_grad_norm: Largest norm of the gradient of one step (larger ones are scaled down):
            a number, ``None`` (no clipping) or ``"auto"``: the network's own
            ``clip_grad_norm`` (1.0 for the recurrent networks, whose gradients can explode
            over long series; none for the others).
        ema: An exponential moving average of the weights, validated each epoch and kept at the
            end instead of the last step's weights: its largest decay (a number in (0, 1); the
            decay grows with the steps, ``1 - (1 + step) ** -0.75``, up to it), ``None`` (off)
            or ``"auto"``: 0.999 in ``finetune`` mode, off in ``scratch`` mode.
        num_workers: DataLoader workers; ``None`` picks by CPU count.
    """

    epochs: int | str = "auto"
    steps: int | None = None
    min_epochs: int = 20
    max_epochs: int = 1000
    batch_size: int | str = "auto"
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    freeze_epochs: int = 1
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    class_weights: bool | str = "auto"
    patience: int | str = "auto"
    monitor: str = "auto"
    loss_smoothing: float = 0.3
    max_minutes: float | str | None = "auto"
    clip_grad_norm: float | str | None = "auto"
    ema: float | str | None = "auto"
    num_workers: int | None = None

    @property
    def forward_batch_size(self) -> int:
        """Items per forward pass when nothing is trained (feature extraction)."""
        return 32 if self.batch_size == "auto" else int(self.batch_size)

    def problems(self) -> list[str]:
        """What is wrong with the values, one message per option (empty when all are valid)."""
        out = []

        def check(name, value, ok, want):
            if not ok:
                out.append(f"The 'train.{name}' option must be {want}. Got {value!r}.")

        def number(value, low, integer=False):
            kinds = (int,) if integer else (int, float)
            return isinstance(value, kinds) and not isinstance(value, bool) and value >= low

        check("epochs", self.epochs, self.epochs == "auto" or number(self.epochs, 1, True),
              "'auto' or a whole number of at least 1")
        check("steps", self.steps, self.steps is None or number(self.steps, 1, True),
              "null (the default) or a whole number of at least 1")
        check("min_epochs", self.min_epochs, number(self.min_epochs, 1, True), "a whole number of at least 1")
        check("max_epochs", self.max_epochs, number(self.max_epochs, 1, True)
              and self.max_epochs >= self.min_epochs, "a whole number of at least 'train.min_epochs'")
        check("batch_size", self.batch_size, self.batch_size == "auto" or number(self.batch_size, 1, True),
              "'auto' or a whole number of at least 1")
        check("patience", self.patience, self.patience == "auto" or number(self.patience, 0, True),
              "'auto' or a whole number of epochs (0: no early stopping)")
        check("max_minutes", self.max_minutes, self.max_minutes in (None, "auto")
              or (number(self.max_minutes, 0) and self.max_minutes > 0), "'auto', null or a positive number")
        check("clip_grad_norm", self.clip_grad_norm, self.clip_grad_norm in (None, "auto")
              or (number(self.clip_grad_norm, 0) and self.clip_grad_norm > 0),
              "'auto', null or a positive number")
        check("ema", self.ema, self.ema in (None, "auto") or (number(self.ema, 0) and 0 < self.ema < 1),
              "'auto', null or a decay in (0, 1)")
        check("class_weights", self.class_weights, self.class_weights in ("auto", "balanced", "sqrt")
              or isinstance(self.class_weights, bool), "'auto', true, 'sqrt' or false")
        check("loss_smoothing", self.loss_smoothing, number(self.loss_smoothing, 0)
              and 0 < self.loss_smoothing <= 1, "a number in (0, 1]")
        return out


@dataclass
class TrackingConfig:
    """Where runs are recorded (MLflow); see :mod:`sigclass.tracking`.

    Attributes:
        enabled: Record the run in an MLflow store.
        uri: Tracking URI; ``None`` takes ``MLFLOW_TRACKING_URI``, else the local default store
            (``mlflow.db`` and ``mlartifacts/`` in ``SIGCLASS_TRACKING_DIR`` or the working folder).
        experiment: Experiment name; ``None`` names it after the data.
    """

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None


@dataclass
class RunConfig:
    """Everything that defines a training run.

    Attributes:
        data: Data source: an image folder, a CSV manifest, a signal file or a named dataset.
        modality: ``image``, ``signal`` or ``auto`` (detected from ``data``).
        root: Dataset root for a manifest (defaults to the manifest's folder).
        on_bad_file: ``error`` stops on the first load with every bad file listed; ``skip``
            leaves bad files out and lists them in the run report.
        max_file_mb: Largest data file read, in megabytes; a larger file is a bad file, refused
            from its size before it is opened. Only regular files are read (never a pipe, a
            device or a socket).
        follow_symlinks: Read symbolic links whose target lies outside the dataset root (a
            folder's, or a manifest's ``root``); refused as bad files by default.
        split: A split file to reuse; when unset a new split is drawn with ``seed``.
        val_dir: A source (folder, manifest, signal file) whose items are the validation part;
            ``data`` is then the training pool.
        test_dir: A source whose items are the held-out test part (never trained on).
        near_duplicates: How near-duplicate images are found: ``phash`` (perceptual hash within
            2 bits: re-encoded and resized copies), ``dhash``, or ``off``. Each group is kept in
            one part of a drawn split; signals compare z-normalized cases.
        on_leak: Near-duplicates on both sides of a split: ``warn`` (report and warn),
            ``error`` (stop) or ``ignore`` (report only).
        audit: Add a label-error audit (``label_audit``: the items whose given label is most
            likely wrong, see :mod:`sigclass.audit`) to the run's ``data_report.json``; images use
            the default headless backbone's cached features, signals MiniRocket, computed once per
            dataset and process.
        val_size: Fraction of items for validation.
        test_size: Fraction of items held out for testing.
        seed: Seed of the split, weight initialisation and data order.
        mode: ``headless``, ``finetune`` or ``scratch``.
        model: Network name; ``None`` picks the mode's default.
        pretrained: Start from pretrained weights (``headless`` and ``finetune``).
        weights: A local weights file for the network (any timm architecture).
        image_size: Square input size; ``None`` keeps the network's own.
        resize: ``center_crop`` (as in pretraining), ``squash`` (whole image, nothing cut off) or
            ``letterbox`` (whole image padded to a square, aspect kept); ``None`` follows the network's pretrained config.
        crop_pct: Centre-crop fraction for ``center_crop``; ``None`` takes the network's own.
        tta: Test-time augmentation of images: the views whose outputs are averaged, ``none``,
            ``hflip`` (the mirror), ``flips`` (the four flips) or ``dihedral`` (flips and quarter
            turns); ``auto``: in ``headless`` mode the featurizer picks ``none``, ``hflip`` or
            ``flips`` by cross-validated accuracy on a sample of the training items (ELPV: 75.0
            to 78.7 %), networks use ``none``. ``true`` is ``hflip``.
        pooling: The pooled features of ``headless`` mode: ``final`` (the mean of the last
            feature map), ``stages`` (mean and max of the last three stage maps and of the final
            map) or ``auto`` (``stages`` where the backbone has stage maps; ELPV: 75.0 to 78.4 %).
        head: Classic ML head of ``headless`` mode; ``auto`` is logistic regression, or ridge
            for features wider than 5,000 (MiniRocket), where logistic regression is slow.
        head_params: Fixed settings of the head instead of its cross-validated search, e.g.
            ``{C: 0.1}`` (logreg, SVMs) or ``{alpha: 1.0}`` (ridge); set by ``sigclass tune``.
        cv_folds: Cross-validation folds used to choose the head's regularization.
        coverage: The probability that a prediction set holds the true class (split conformal
            prediction, see :mod:`sigclass.evaluation.conformal`), between 0 and 1 exclusive.
            Networks are calibrated on the validation part, headless heads on out-of-fold
            probabilities of the training items (or on a validation part set aside by the user).
        ood: The out-of-distribution score that tells inputs far from the training data
            (:mod:`sigclass.evaluation.ood`): ``knn`` (distance to the ``ood_k``-th nearest
            training item on L2-normalized pooled features, the default), ``mahalanobis``
            (class-conditional, shared covariance) or ``off``. Its threshold passes 95 % of
            the validation part.
        ood_k: The neighbour of ``knn`` whose distance is the score (capped by the training
            items).
        backend: Inference backend of the featurizer: ``auto``, ``torch`` or ``onnx``.
        cache_dir: Feature cache folder (default ``~/.cache/sigclass``).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        model_args: Extra architecture options passed to the network builder.
        masks: Images, ``finetune``/``scratch``: a folder of mask files mirroring the dataset
            (``masks/<class>/<stem>.png``, white = area blanked during training); see
            :mod:`sigclass.explain.guided`.
        cam_examples: After training, the class activation maps of this many most confident
            correct test predictions and as many worst mistakes go to ``cam/`` in the run folder
            (and to its tracked run); 0 turns it off. Skipped, with a log line, for models without
            a map (MiniRocket, signal-as-image, non-linear headless heads).
        augment: Training augmentation of images.
        signal: How signal files are read (windowing, unequal lengths, columns).
        signal_augment: Training augmentation of signals.
        train: Training-loop settings.
        tracking: Where the run is recorded (MLflow).
    """

    data: str = ""
    modality: str = "auto"
    root: str | None = None
    on_bad_file: str = "error"
    max_file_mb: float = DEFAULT_MAX_FILE_MB
    follow_symlinks: bool = False
    split: str | None = None
    val_dir: str | None = None
    test_dir: str | None = None
    near_duplicates: str = "phash"
    on_leak: str = "warn"
    audit: bool = True
    val_size: float = 0.15
    test_size: float = 0.2
    seed: int = 0
    mode: str = "headless"
    model: str | None = None
    pretrained: bool = True
    weights: str | None = None
    image_size: int | None = None
    resize: str | None = None
    crop_pct: float | None = None
    tta: str | bool = "auto"
    pooling: str = "auto"
    head: str = "auto"
    head_params: dict[str, Any] = field(default_factory=dict)
    cv_folds: int = 5
    coverage: float = 0.9
    ood: str = "knn"
    ood_k: int = 5
    backend: str = "auto"
    cache_dir: str | None = None
    device: str = "auto"
    model_args: dict[str, Any] = field(default_factory=dict)
    masks: str | None = None
    cam_examples: int = 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    signal: SignalConfig = field(default_factory=SignalConfig)
    signal_augment: SignalAugmentConfig = field(default_factory=SignalAugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> RunConfig:
        """Check every value with a fixed set of choices or a range; returns ``self``.

        Raises:
            ConfigError: Naming every invalid option at once.
        """
        choices = [("mode", self.mode, MODES), ("head", self.head, HEADS),
                   ("on_bad_file", self.on_bad_file, BAD_FILE_POLICIES),
                   ("modality", self.modality, ("auto", *MODALITIES)),
                   ("backend", self.backend, BACKENDS),
                   ("pooling", self.pooling, POOLINGS),
                   ("near_duplicates", self.near_duplicates, NEAR_DUPLICATES),
                   ("on_leak", self.on_leak, LEAK_POLICIES),
                   ("ood", self.ood, OOD_METHODS),
                   ("resize", self.resize, (*RESIZE_MODES, None)),
                   ("train.monitor", self.train.monitor, MONITORS)]
        problems = [choice_problem(name, value, options) for name, value, options in choices]
        if not isinstance(self.tta, bool) and self.tta is not None:  # true: hflip, false: none
            problems.append(choice_problem("tta", self.tta, TTA_CHOICES))
        problems += self.train.problems() + self.signal.problems() + size_problems(self.val_size, self.test_size)
        if self.masks and self.mode == "headless":
            problems.append("The 'masks' option blanks areas while a network trains; headless "
                            "mode trains none. Use --mode finetune or scratch with --masks.")
        if self.cam_examples < 0:
            problems.append(f"The 'cam_examples' option must be 0 (off) or more. Got {self.cam_examples}.")
        if not (isinstance(self.max_file_mb, int | float) and self.max_file_mb > 0):
            problems.append(f"The 'max_file_mb' option must be a positive number of megabytes. "
                            f"Got {self.max_file_mb!r}.")
        if self.cv_folds < 2:
            problems.append(f"The 'cv_folds' option must be at least 2. Got {self.cv_folds}.")
        if not (isinstance(self.coverage, int | float) and not isinstance(self.coverage, bool)
                and 0 < self.coverage < 1):
            problems.append(f"The 'coverage' option must be a probability between 0 and 1 "
                            f"(exclusive), e.g. 0.9. Got {self.coverage!r}.")
        if isinstance(self.ood_k, bool) or not isinstance(self.ood_k, int) or not 1 <= self.ood_k <= 1000:
            problems.append(f"The 'ood_k' option must be a whole number from 1 to 1000. Got {self.ood_k!r}.")
        raise_problems(problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build a config from nested values; unknown keys are errors naming close matches."""
        return _build(cls, values or {}, prefix="")

    def updated(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with ``overrides`` applied; keys may be dotted (``train.lr``)."""
        values = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(values, key, value)
        return RunConfig.from_dict(values)


@dataclass
class Entry:
    """One contestant of ``sigclass compare``: a name, a mode, a model and config overrides of its
    own.

    The overrides are the entry's defaults: an option the user set (a value other than
    :class:`RunConfig`'s default) wins over them, so ``--epochs`` reaches every entry.
    ``run_last`` marks a reference baseline: under a time limit it runs after the networks, and
    only if the time left is at least what the longest headless entry took.
    """

    name: str
    mode: str
    model: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    run_last: bool = False


def _build(cls, values: dict[str, Any], prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f" Did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""
            raise ConfigError(f"Unknown configuration key '{prefix}{key}'.{hint}")
        sub = _nested_type(fields[key])
        if sub is not None and isinstance(value, dict):
            value = _build(sub, value, prefix=f"{prefix}{key}.")
        kwargs[key] = value
    return cls(**kwargs)


def _nested_type(f: dataclasses.Field):
    default_factory = f.default_factory  # type: ignore[misc]
    if default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(default_factory):
        return default_factory
    return None


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = values
    for parent in parents:
        if parent in ("model_args", "head_params"):
            node = node.setdefault(parent, {})
            continue
        if not isinstance(node.get(parent), dict):
            raise ConfigError(f"Unknown configuration key '{key}'.")
        node = node[parent]
    node[leaf] = value


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into nested values."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"Config file '{path}' does not exist.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of options, got {type(values).__name__}.")
    return values


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    import yaml

    return write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
