"""Training callbacks: progress, early stopping, time budget, checkpoints.

A callback overrides any of ``on_train_begin``, ``on_epoch_begin``, ``on_batch_end``,
``on_epoch_end`` and ``on_train_end``; each receives the :class:`~sigclass.training.Trainer`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, trainer) -> None: ...

    def on_epoch_begin(self, trainer, epoch: int) -> None: ...

    def on_batch_end(self, trainer, step: dict[str, Any], training: bool) -> None: ...

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar per epoch and a one-line summary of each epoch."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar = None

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        total = trainer.steps_per_epoch + trainer.val_steps
        self._bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{trainer.plan_.epochs_planned}",
                         unit="batch", leave=False)

    def on_batch_end(self, trainer, step: dict[str, Any], training: bool) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if training:
                self._bar.set_postfix(loss=f"{float(step['loss']):.3f}")

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled:
            from tqdm.auto import tqdm

            best = " *" if trainer.is_best else ""
            tqdm.write(
                f"epoch {logs['epoch']:>3}  train loss {logs['train_loss']:.4f} acc {logs['train_accuracy']:.3f}"
                f"  val loss {logs['val_loss']:.4f} acc {logs['val_accuracy']:.3f} f1 {logs['val_f1']:.3f}"
                f"  {logs['train_items_per_s']:.0f} items/s{best}"
            )


class EarlyStopping(Callback):
    """Stop when the monitored validation value has not improved for ``patience`` epochs, but
    never before epoch ``min_epochs``."""

    def __init__(self, patience: int, min_epochs: int | None = None):
        self.patience = patience
        self.min_epochs = min_epochs

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        plan = getattr(trainer, "plan_", None)  # a plan shortened to fit the clock lowers it
        floor = min(x for x in (self.min_epochs, plan.min_epochs if plan else None, 10**9) if x is not None)
        if (self.patience > 0 and logs["epoch"] >= floor
                and trainer.epochs_since_best >= self.patience):
            logger.info("Early stopping at epoch %d: %s has not improved for %d epochs", logs["epoch"],
                        trainer.plan_.monitor, self.patience)
            trainer.stop_training = True
            trainer.stopped_early_ = True


class TimeBudget(Callback):
    """Stop after the epoch that crosses ``max_minutes`` of training time."""

    def __init__(self, max_minutes: float | None):
        self.max_minutes = max_minutes
        self._start = 0.0

    def on_train_begin(self, trainer) -> None:
        self._start = time.monotonic() - trainer.elapsed_before_resume

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        if self.max_minutes is not None and time.monotonic() - self._start >= 60 * self.max_minutes:
            logger.info("Stopping: training budget of %.1f minutes used", self.max_minutes)
            trainer.stop_training = True


class Checkpoint(Callback):
    """Write the full training state after every epoch, atomically, so ``--resume`` can go on.

    The file ``<folder>/last.pt`` holds network, optimizer, scheduler, history, the best weights
    so far and the random state. It is written with ``torch.save`` and read back with
    ``torch.load(weights_only=True)``, which cannot execute code.
    """

    FILENAME = "last.pt"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def path(self) -> Path:
        return self.folder / self.FILENAME

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        if trainer.is_main_process:
            trainer.save_checkpoint(self.path)
