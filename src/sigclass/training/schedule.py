"""The training plan of a network: epoch budget, early-stopping patience, model selection and
class weights, resolved from :class:`~sigclass.config.TrainConfig` and the data.

The rules (also in the ``TrainConfig`` docstring):

- ``epochs="auto"``: ``steps`` optimisation steps (1,500 for signal networks, 400 for image
  networks) divided by the steps of one epoch, clamped to ``[min_epochs, max_epochs]``; the wall
  clock (``max_minutes``, by default 2 minutes for signals and 5 for images) shortens the plan
  once the first epochs are timed, so the learning-rate schedule still ends on time.
- ``patience="auto"``: a quarter of the planned epochs (at least 5); no stop before
  ``min_epochs``.
- ``monitor="auto"``: early stopping and selection follow the smoothed (exponential moving
  average) validation loss. A tiny validation part (under 30 items, or under 5 of some class)
  measures too coarsely to pick an epoch: the weights at the end of the schedule are kept, or,
  when early stopping ended training, those of the best smoothed validation loss.
- ``batch_size="auto"``: 32, smaller on small training parts so that an epoch has at least 4
  steps (never under 8 items).
- ``class_weights="auto"``: the loss is weighted by the square root of inverse class frequency
  when the largest class of the training part has more than 1.5 times the items of the smallest.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from .._utils import resolve_device

AUTO_BATCH = 32
MIN_AUTO_BATCH = 8
MIN_STEPS_PER_EPOCH = 4
SKEW_RATIO = 1.5
TINY_VAL_ITEMS = 30
TINY_VAL_PER_CLASS = 5
# ema="auto" when fine-tuning: the largest decay of the moving average of the weights.
FINETUNE_EMA_DECAY = 0.999
EMA_WARMUP_POWER = 0.75  # the decay of step t is min(decay, 1 - (1 + t) ** -0.75): short runs average fewer steps


@dataclass(frozen=True)
class Budget:
    """What ``epochs="auto"`` spends: a number of optimisation steps, capped by minutes.

    Each modality declares its own (``Modality.budget``): small signal networks take 1,500 steps
    in 2 minutes, image networks 400 steps in 5.
    """

    steps: int = 1500
    minutes: float = 2.0


@dataclass
class Plan:
    """The resolved training plan of one run (saved in the run summary).

    Attributes:
        epochs_planned: Epochs of the learning-rate schedule (may shrink to fit ``max_minutes``).
        epochs_source: How it was set: ``"user"`` or ``"auto: N steps / M per epoch"``.
        patience: Early-stopping patience in epochs (0: off).
        min_epochs: No early stop before this epoch.
        max_minutes: Wall-clock budget of training, or ``None``.
        monitor: The selection criterion: ``val_loss_ema``, ``val_loss``, ``val_accuracy`` or
            ``val_f1``.
        selection: ``"last"`` (final weights unless stopped early) or ``"best"``.
        tiny_val: The validation part counted as tiny.
        class_weights: The loss weight of each class, or ``None`` (plain loss).
        class_weights_reason: Why they were or were not applied.
        clip_grad_norm: Largest gradient norm of a step, or ``None`` (no clipping).
        ema_decay: Largest decay of the moving average of the weights, or ``None`` (none).
    """

    epochs_planned: int
    epochs_source: str
    patience: int
    min_epochs: int
    max_minutes: float | None
    monitor: str
    selection: str
    tiny_val: bool
    class_weights: list[float] | None
    class_weights_reason: str
    clip_grad_norm: float | None = None
    ema_decay: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def is_tiny(val_targets, n_classes: int) -> bool:
    """A validation part under 30 items, or with under 5 items of some class."""
    counts = np.bincount(np.asarray(val_targets, dtype=int), minlength=n_classes)
    return len(val_targets) < TINY_VAL_ITEMS or int(counts.min()) < TINY_VAL_PER_CLASS


def class_weight_vector(setting, targets, n_classes: int) -> tuple[list[float] | None, str]:
    """Loss weights per class under ``setting``, and the reason.

    ``true``/``"balanced"``: inverse class frequency; ``"sqrt"``: its square root; ``"auto"``:
    the square root when the largest class has more than 1.5 times the items of the smallest,
    else none. The square root is the default because full inverse weights cost most of the
    accuracy on ELPV (fine-tuned in 5 CPU minutes: 51.2 % accuracy / 48.0 % balanced, against
    72.3 / 49.3 with the square root; ``bench/bench_class_weights.py``).
    """
    counts = np.bincount(np.asarray(targets, dtype=int), minlength=n_classes).astype(np.float64)
    ratio = counts.max() / max(counts.min(), 1.0)
    if setting is False or setting is None:
        return None, "off (class_weights=false)"
    if setting == "auto" and ratio <= SKEW_RATIO:
        return None, f"not needed: largest/smallest class {ratio:.2f} <= {SKEW_RATIO}"
    weights = counts.sum() / (n_classes * np.maximum(counts, 1.0))
    why = "requested" if setting != "auto" else f"auto: largest/smallest class {ratio:.2f} > {SKEW_RATIO}"
    if setting in ("auto", "sqrt"):
        return ([round(float(w), 4) for w in np.sqrt(weights)],
                f"square root of inverse class frequency ({why})")
    return [round(float(w), 4) for w in weights], f"inverse class frequency ({why})"


def head_class_weight(setting, labels) -> tuple[str | dict | None, str]:
    """The ``class_weight`` of a classic head under ``setting``, and why.

    ``true``/``"balanced"`` gives inverse class frequency; ``"auto"`` on skewed classes and
    ``"sqrt"`` give its square root, which on frozen features keeps most of the accuracy that
    full inverse weights cost (measured in ``bench/bench_headless_heads.py``) while lifting the
    rare classes.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    weights, reason = class_weight_vector(setting, np.repeat(np.arange(len(counts)), counts), len(counts))
    if weights is None:
        return None, reason
    if setting in ("auto", "sqrt"):
        return ({c.item() if hasattr(c, "item") else c: float(w)
                 for c, w in zip(classes, weights, strict=True)}, reason)
    return "balanced", reason


def resolve_batch_size(setting, n_train: int) -> int:
    """The batch size of ``setting`` (a number, or ``"auto"``) for ``n_train`` training items.

    ``"auto"`` is 32, made smaller so that an epoch has at least 4 optimisation steps, but never
    under 8 items: a training part of 30 items at batch 32 gives one step an epoch, and a
    2-minute budget then buys a few hundred steps (measured on ArrowHead in
    ``bench/bench_defaults.py``).
    """
    if setting != "auto":
        return int(setting)
    return max(MIN_AUTO_BATCH, min(AUTO_BATCH, math.ceil(n_train / MIN_STEPS_PER_EPOCH)))


def budget_minutes(config, default: float | None) -> float | None:
    """The wall-clock budget of a ``TrainConfig``: its ``max_minutes``, where ``"auto"`` is
    ``default`` when the epochs are ``"auto"`` too, and no cap when the user set the epochs."""
    if config.max_minutes == "auto":
        return default if config.epochs == "auto" else None
    return None if config.max_minutes is None else float(config.max_minutes)


def make_plan(config, steps_per_epoch: int, budget: Budget, val_targets, train_targets,
              n_classes: int, network_clip: float | None = None, mode: str = "scratch") -> Plan:
    """Resolve ``config`` (a ``TrainConfig``) with the ``budget`` of the data's modality;
    ``network_clip`` is the network's own gradient-norm clip (``clip_grad_norm="auto"``) and
    ``mode`` the training mode (``ema="auto"``: :data:`FINETUNE_EMA_DECAY` when fine-tuning)."""
    if config.epochs == "auto":
        steps = config.steps or budget.steps
        epochs = min(max(math.ceil(steps / steps_per_epoch), config.min_epochs), config.max_epochs)
        source = f"auto: {steps} steps / {steps_per_epoch} per epoch, in [{config.min_epochs}, {config.max_epochs}]"
    else:
        epochs, source = int(config.epochs), "user"
    max_minutes = budget_minutes(config, budget.minutes)
    patience = config.patience
    if patience == "auto":
        patience = max(5, math.ceil(0.25 * epochs))
    tiny = is_tiny(val_targets, n_classes)
    monitor = "val_loss_ema" if config.monitor == "auto" else config.monitor
    selection = "last" if config.monitor == "auto" and tiny else "best"
    weights, reason = class_weight_vector(config.class_weights, train_targets, n_classes)
    clip = network_clip if config.clip_grad_norm == "auto" else config.clip_grad_norm
    ema = config.ema
    if ema == "auto":
        ema = FINETUNE_EMA_DECAY if mode == "finetune" else None
    return Plan(epochs, source, int(patience), min(config.min_epochs, epochs), max_minutes, monitor,
                selection, tiny, weights, reason, None if clip is None else float(clip),
                None if ema is None else float(ema))


def fit_to_budget(plan: Plan, epoch_seconds: list[float], elapsed: float) -> int | None:
    """A shorter number of epochs when the timed epochs say the plan overruns ``max_minutes``.

    The first epoch (warm-up of the kernels and loaders) is left out of the estimate once there
    are others. Returns the new number of epochs, or ``None`` to keep the plan.
    """
    if plan.max_minutes is None or not epoch_seconds:
        return None
    timed = epoch_seconds[1:] or epoch_seconds
    per_epoch = float(np.median(timed))
    done = len(epoch_seconds)
    left = 60.0 * plan.max_minutes - elapsed
    fits = done + max(0, int(left / max(per_epoch, 1e-6)))
    if fits >= plan.epochs_planned:
        return None
    return max(done, fits)


MIN_AUTO_IMAGE_SIZE = 128  # below this, fine detail and the pretrained filters' scale are lost
IMAGE_SIZE_MULTIPLE = 32
EPOCH_OVERHEAD = 1.3  # an epoch: the timed steps, plus decoding, augmentation and validation


def budget_image_size(native: int, step_seconds: float, steps_per_epoch: int, budget_minutes: float,
                      target_epochs: int, min_size: int = MIN_AUTO_IMAGE_SIZE) -> tuple[int, str]:
    """The largest input size at which ``target_epochs`` fit in ``budget_minutes``.

    ``step_seconds`` is one optimisation step timed at the ``native`` size; the cost of a step
    grows with the pixels, so the size shrinks by the square root of the missing time, in
    multiples of 32, never under ``min_size`` (:data:`MIN_AUTO_IMAGE_SIZE` by default) nor over
    ``native``. Measured on ELPV on 2 CPU cores: EfficientNet-Lite0 at its 224 px fits 2 epochs in a 5-minute budget;
    at 128 px about 9.

    Returns:
        ``(size, reason)``.
    """
    epoch_seconds = EPOCH_OVERHEAD * step_seconds * steps_per_epoch
    fits = 60.0 * budget_minutes / max(epoch_seconds, 1e-9)
    if fits >= target_epochs:
        return native, (f"the network's {native} px: {fits:.0f} epochs fit in {budget_minutes:g} "
                        f"min (needs {target_epochs})")
    size = native * math.sqrt(fits / target_epochs)
    size = min(native, max(min_size, int(size // IMAGE_SIZE_MULTIPLE * IMAGE_SIZE_MULTIPLE)))
    return size, (f"{size} px instead of the network's {native}: {fits:.1f} epochs of "
                  f"{epoch_seconds:.0f} s would fit in {budget_minutes:g} min at {native} px, "
                  f"{target_epochs} are planned")


def time_training_step(network, input_shape: tuple[int, ...], batch_size: int, device=None,
                       repeats: int = 2) -> float:
    """Seconds of one optimisation step (forward, backward, AdamW) of a copy of ``network`` on a
    random batch: the median of ``repeats`` after one warm-up step. ``network`` is untouched."""
    import torch

    device = resolve_device(device)
    probe = copy.deepcopy(network).to(device).train()
    if len(input_shape) == 3:
        probe = probe.to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, *input_shape, device=device)
    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return time_steps(probe, lambda: probe(x).float().logsumexp(1).mean(), device, repeats)


def time_steps(probe, loss_of, device, repeats: int = 2) -> float:
    """The median seconds of ``repeats`` optimisation steps (AdamW on the trainable parameters
    of ``probe``, the loss from ``loss_of()``) after one warm-up step."""
    import torch

    optimizer = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], lr=1e-5)
    seconds = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_of()
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds[1:]))
