"""The training loop for networks (modes ``finetune`` and ``scratch``), images and signals alike.

``fit`` → ``run_epoch`` → ``train_step``; progress, early stopping, checkpoints and tracking are
callbacks. ``finetune`` trains the new head with the backbone frozen for ``freeze_epochs``, then
the whole network with the backbone at ``backbone_lr_mult`` times the head's learning rate.
AdamW, linear warm-up then cosine decay, label smoothing, class weights on skewed data; the
epoch budget, the early-stopping patience and the rule that picks the weights kept at the end are
resolved by :mod:`sigclass.training.schedule` (the :class:`Plan`, saved with the run).

Under ``torchrun`` (an initialized process group) the network is wrapped in
``DistributedDataParallel`` and each epoch is sharded by a ``DistributedSampler``;
``batch_size`` stays the global batch (each of N processes takes ``batch_size / N``), so the
learning-rate schedule is that of one process. Every process validates on the whole
validation set (identical weights give identical metrics), only rank 0 shows progress and
writes checkpoints, and a stop decided on any process (time budget) stops them all.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write, resolve_device
from ..config import TrainConfig
from ..exceptions import ArtifactError
from . import distributed
from .callbacks import Callback, Checkpoint, EarlyStopping, ProgressBar, TimeBudget
from .schedule import EMA_WARMUP_POWER, Budget, Plan, fit_to_budget, make_plan, resolve_batch_size

logger = logging.getLogger(__name__)


class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 1 %."""

    def __init__(self, warmup: int, total: int):
        self.warmup = max(0, int(warmup))
        self.total = max(1, int(total))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """Trains a classifier network on torch datasets of ``(tensor, class index)`` pairs.

    Args:
        network: A network following the registry contract (``get_classifier()``).
        config: Training settings.
        mode: ``"finetune"`` (frozen-then-unfrozen backbone, lower backbone lr) or ``"scratch"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        callbacks: Extra callbacks; progress, early stopping and the time budget are added.
        checkpoint_dir: Folder of ``last.pt``; ``None`` keeps no checkpoint on disk.
        seed: Seed of the data order and augmentation.
        progress: Show progress bars.
        budget: What ``epochs="auto"`` spends (the data's ``Modality.budget``; by default
            :class:`~sigclass.training.schedule.Budget`'s, sized for small signal networks).

    Attributes:
        plan_: The resolved :class:`~sigclass.training.schedule.Plan` (epochs, patience,
            selection rule, class weights).
        history_: One dict of metrics per finished epoch, with ``step`` (optimisation steps
            since the first epoch) and ``optimizer_step`` (AdamW's own count, which shows
            that a resumed run went on with its saved optimizer state).
        best_epoch_: 1-based epoch whose weights were restored.
        stopped_early_: Early stopping ended training before the planned epochs.
        replica_digests_: In a distributed run, each process's :func:`~sigclass.training.distributed.parameter_digest` at the
            end of training (all equal unless the gradients were not all-reduced).
        ema_: The moving average of the weights (``timm.utils.ModelEmaV3``), or ``None``.
    """

    ema_ = None  # set by _setup when the plan has an ema_decay

    def __init__(
        self,
        network,
        config: TrainConfig | None = None,
        mode: str = "finetune",
        device: str | None = "auto",
        callbacks: list[Callback] | tuple[Callback, ...] = (),
        checkpoint_dir: str | Path | None = None,
        seed: int = 0,
        progress: bool = True,
        budget: Budget | None = None,
    ):
        self.network = network
        self.budget = budget or Budget()
        self.config = config or TrainConfig()
        self.mode = mode
        self.device = device
        self.extra_callbacks = list(callbacks)
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.progress = progress

    # -- set-up -----------------------------------------------------------------------------------

    def _setup(self, train_set, val_set) -> None:
        import torch

        cfg = self.config
        self.world_size_ = distributed.world_size()
        self.device_ = resolve_device(self.device)
        if self.world_size_ > 1 and self.device_.type == "cuda":
            self.device_ = torch.device("cuda", distributed.local_rank())
        self.network = self.network.to(self.device_)
        self.forward_module_ = self.network
        self.wrapped_frozen_: bool | None = None
        self.channels_last_ = self._is_image_network(train_set)
        if self.channels_last_:
            self.network = self.network.to(memory_format=torch.channels_last)
        head_params = list(self.network.get_classifier().parameters())
        head_ids = {id(p) for p in head_params}
        backbone_params = [p for p in self.network.parameters() if id(p) not in head_ids]
        backbone_lr = cfg.lr * (cfg.backbone_lr_mult if self.mode == "finetune" else 1.0)
        groups = [
            {"params": backbone_params, "lr": backbone_lr, "name": "backbone"},
            {"params": head_params, "lr": cfg.lr, "name": "head"},
        ]
        self.optimizer_ = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
        self.global_batch_size_ = resolve_batch_size(cfg.batch_size, len(train_set))
        self.batch_size_ = max(1, -(-self.global_batch_size_ // self.world_size_))  # per process
        shard = -(-len(train_set) // self.world_size_)  # DistributedSampler pads to equal shards
        self.steps_per_epoch = max(1, shard // self.batch_size_ + (shard % self.batch_size_ > 1))
        self.plan_: Plan = make_plan(cfg, self.steps_per_epoch, self.budget, np.asarray(val_set.targets),
                                     np.asarray(train_set.targets), self._n_classes(),
                                     getattr(self.network, "clip_grad_norm", None), self.mode)
        self.ema_ = None  # the moving average of the weights: validated, and kept at the end
        if self.plan_.ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema_ = ModelEmaV3(self.network, decay=self.plan_.ema_decay, use_warmup=True,
                                   warmup_power=EMA_WARMUP_POWER)
        total = self.steps_per_epoch * self.plan_.epochs_planned
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.scheduler_ = torch.optim.lr_scheduler.LambdaLR(self.optimizer_, WarmupCosine(warmup, total))
        weight = None
        if self.plan_.class_weights is not None:
            weight = torch.tensor(self.plan_.class_weights, dtype=torch.float32).to(self.device_)
        self.criterion_ = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
        self.history_: list[dict[str, float]] = []
        self.best_epoch_ = 0
        self.best_score_ = -math.inf
        self.best_tiebreak_ = -math.inf
        self.best_state_: dict | None = None
        self.loss_ema_: float | None = None
        self.is_best = False
        self.stop_training = False
        self.stopped_early_ = False
        self.replica_digests_: list[str] = []
        self.elapsed_before_resume = 0.0
        self.callbacks_ = [ProgressBar(self.progress and self.is_main_process),
                           EarlyStopping(self.plan_.patience),
                           TimeBudget(self.plan_.max_minutes)]
        if self.checkpoint_dir is not None:
            self.callbacks_.append(Checkpoint(self.checkpoint_dir))
        self.callbacks_ += self.extra_callbacks

    def _n_classes(self) -> int:
        return int(self.network.get_classifier().out_features)

    @staticmethod
    def _is_image_network(dataset) -> bool:
        sample, _ = dataset[0]
        return sample.ndim == 3

    @property
    def is_main_process(self) -> bool:
        """Only the first process of a distributed run logs and writes files."""
        return distributed.is_main_process()

    @property
    def validated_network(self):
        """The weights that are validated and kept: the moving average when there is one."""
        return self.network if self.ema_ is None else self.ema_.module

    @property
    def epochs_since_best(self) -> int:
        return len(self.history_) - self.best_epoch_

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self, train_set, val_set, resume: str | Path | None = None) -> Trainer:
        """Train on ``train_set``, pick the best epoch on ``val_set``; returns ``self``.

        Args:
            train_set: Torch dataset of ``(tensor, target)`` with a ``targets`` array.
            val_set: Validation dataset of the same kind.
            resume: A ``last.pt`` checkpoint to continue from.
        """
        self._setup(train_set, val_set)
        self.val_steps = math.ceil(len(val_set) / self.batch_size_)
        start_epoch = self.load_checkpoint(resume) if resume is not None else 0
        if self.is_main_process:
            logger.info("Training plan: %s", self.describe_plan())
        self._call("on_train_begin")
        epoch = start_epoch
        while epoch < self.plan_.epochs_planned and not self.stop_training:
            self._call("on_epoch_begin", epoch)
            started = time.perf_counter()
            train_logs = self.run_epoch(train_set, epoch, training=True)
            train_time = time.perf_counter() - started
            val_logs = self.run_epoch(val_set, epoch, training=False)
            a = self.config.loss_smoothing
            ema = val_logs["loss"] if self.loss_ema_ is None else a * val_logs["loss"] + (1 - a) * self.loss_ema_
            self.loss_ema_ = ema
            logs = {
                "epoch": epoch + 1,
                **{f"train_{k}": v for k, v in train_logs.items()},
                **{f"val_{k}": v for k, v in val_logs.items()},
                "val_loss_ema": ema,
                "lr": float(self.optimizer_.param_groups[-1]["lr"]),
                "step": int(self.scheduler_.last_epoch),  # optimisation steps since epoch 1
                "optimizer_step": self._optimizer_steps(),  # AdamW's own count: resumed or not
                "epoch_seconds": time.perf_counter() - started,
                "train_items_per_s": len(train_set) / train_time if train_time > 0 else 0.0,
            }
            self.history_.append(logs)
            self._track_best(logs)
            self._call("on_epoch_end", logs)
            if self.world_size_ > 1:  # e.g. a time budget crossed on one process only
                self.stop_training = distributed.any_process(self.stop_training)
            self._fit_budget()
            epoch += 1
        self._call("on_train_end")
        if self.world_size_ > 1:  # DDP keeps the replicas identical; a difference is a bug
            self.replica_digests_ = distributed.all_gather_objects(
                distributed.parameter_digest(self.network))
            if len(set(self.replica_digests_)) > 1:
                logger.warning("The processes ended with different weights: %s", self.replica_digests_)
        self.forward_module_ = self.network  # drop the DDP wrapper (and its hold on the group)
        if self.plan_.selection == "last" and not self.stopped_early_:
            self.best_epoch_ = len(self.history_)  # the end of the schedule: keep the final weights
            if self.ema_ is not None:
                self.network.load_state_dict(self.ema_.module.state_dict())
        elif self.best_state_ is not None:
            self.network.load_state_dict(self.best_state_)
        self.network.eval()
        return self

    def describe_plan(self) -> str:
        """One line: epochs and where they come from, patience, selection, class weights."""
        plan = self.plan_
        budget = f", at most {plan.max_minutes:g} min" if plan.max_minutes else ""
        pick = ("the last epoch (tiny validation part; the best smoothed val loss if stopped early)"
                if plan.selection == "last" else f"the best {plan.monitor}")
        return (f"{plan.epochs_planned} epochs ({plan.epochs_source}){budget}, batch "
                f"{self.global_batch_size_}; early stopping on "
                f"{plan.monitor} after {plan.patience} epochs without improvement, not before epoch "
                f"{plan.min_epochs}; keeps {pick}; class weights: {plan.class_weights_reason}"
                + (f"; gradient norm clipped at {plan.clip_grad_norm:g}" if plan.clip_grad_norm else "")
                + (f"; validates and keeps a moving average of the weights (decay up to "
                   f"{plan.ema_decay:g})" if plan.ema_decay else ""))

    def summary(self) -> dict[str, Any]:
        """The plan and what happened, for the run summary (``run.json``); a distributed run adds
        each process's :func:`~sigclass.training.distributed.parameter_digest` at the end of training."""
        summary = {**self.plan_.to_dict(), "batch_size": self.global_batch_size_,
                   "epochs_run": len(self.history_), "best_epoch": self.best_epoch_,
                   "stopped_early": self.stopped_early_}
        if self.replica_digests_:
            summary["replica_digests"] = self.replica_digests_
        return summary

    def _optimizer_steps(self) -> int:
        """The largest step count in the optimizer's state (0 before the first step)."""
        return max((int(s["step"]) for s in self.optimizer_.state.values() if "step" in s), default=0)

    def _fit_budget(self) -> None:
        """Shorten the plan (and rescale the learning-rate schedule) to end within ``max_minutes``."""
        if self.config.epochs != "auto" or self.stop_training:
            return
        seconds = [h["epoch_seconds"] for h in self.history_]
        epochs = fit_to_budget(self.plan_, seconds, self.elapsed_before_resume + sum(seconds))
        if self.world_size_ > 1:  # every process keeps the same schedule: rank 0's
            epochs = distributed.broadcast_object(epochs)
        if epochs is None:
            return
        if epochs < 0.9 * self.plan_.epochs_planned or epochs <= len(self.history_):
            logger.info("Shortening the plan to %d epochs to end within %g minutes", epochs,
                        self.plan_.max_minutes)
            self.plan_.epochs_planned = epochs
            self.plan_.min_epochs = min(self.plan_.min_epochs, epochs)
            self.scheduler_.lr_lambdas[0].total = max(1, epochs * self.steps_per_epoch)

    def run_epoch(self, dataset, epoch: int, training: bool) -> dict[str, float]:
        """One pass over ``dataset``; returns mean loss, accuracy and macro F1."""
        import torch
        from sklearn.metrics import f1_score

        loader = self._loader(dataset, epoch, training)
        if training:
            self._set_stage(epoch)
            # Augmentation draws: resumable, and different on each process of a distributed run.
            torch.manual_seed(self.seed * 100_003 + epoch + 7_919 * distributed.rank())
        else:
            self.network.eval()
        total_loss, seen, predictions, targets = 0.0, 0, [], []
        for inputs, target in loader:
            step = self.train_step(inputs, target) if training else self.validation_step(inputs, target)
            n = len(target)
            total_loss += float(step["loss"]) * n
            seen += n
            predictions.append(step["y_pred"].argmax(1).cpu().numpy())
            targets.append(target.numpy())
            self._call("on_batch_end", step, training)
        y_pred, y_true = np.concatenate(predictions), np.concatenate(targets)
        if training and self.world_size_ > 1:  # training metrics over every process's shard
            shards = distributed.all_gather_objects((total_loss, seen, y_pred, y_true))
            total_loss, seen = sum(s[0] for s in shards), sum(s[1] for s in shards)
            y_pred = np.concatenate([s[2] for s in shards])
            y_true = np.concatenate([s[3] for s in shards])
        return {
            "loss": total_loss / max(1, seen),
            "accuracy": float((y_pred == y_true).mean()),
            "f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        }

    def train_step(self, inputs, target) -> dict[str, Any]:
        """One optimisation step; returns ``{"loss", "y_pred"}``."""
        import torch

        inputs, target = self._to_device(inputs, target)
        with torch.autocast(self.device_.type, dtype=torch.bfloat16, enabled=self.device_.type == "cuda"):
            logits = self.forward_module_(inputs)
            loss = self.criterion_(logits.float(), target)
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        if self.plan_.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.plan_.clip_grad_norm)
        self.optimizer_.step()
        self.scheduler_.step()
        if self.ema_ is not None:
            self.ema_.update(self.network, step=self.scheduler_.last_epoch)
        return {"loss": loss.detach(), "y_pred": logits.detach()}

    def validation_step(self, inputs, target) -> dict[str, Any]:
        """Forward pass without gradients; returns ``{"loss", "y_pred"}``."""
        import torch

        inputs, target = self._to_device(inputs, target)
        with torch.inference_mode(), torch.autocast(
            self.device_.type, dtype=torch.bfloat16, enabled=self.device_.type == "cuda"
        ):
            logits = self.validated_network(inputs)
            loss = self.criterion_(logits.float(), target)
        return {"loss": loss, "y_pred": logits}

    # -- helpers ----------------------------------------------------------------------------------

    def _to_device(self, inputs, target):
        import torch

        inputs = inputs.to(self.device_, non_blocking=True)
        if self.channels_last_:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, target.to(self.device_, non_blocking=True)

    def _loader(self, dataset, epoch: int, training: bool):
        import torch
        from torch.utils.data import DataLoader, RandomSampler

        workers = self.config.num_workers
        if workers is None:
            cpus = os.cpu_count() or 1
            workers = 0 if cpus <= 2 else min(4, cpus - 1)
        sampler, size = None, len(dataset)
        if training and self.world_size_ > 1:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(dataset, shuffle=True, seed=self.seed)
            sampler.set_epoch(epoch)
            size = len(sampler)
        elif training:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            sampler = RandomSampler(dataset, generator=generator)
        # A last batch of one item breaks batch norm; every shard has the same size, so every
        # process drops it alike.
        return DataLoader(
            dataset, batch_size=self.batch_size_, sampler=sampler, num_workers=workers,
            pin_memory=self.device_.type == "cuda",
            drop_last=training and size % self.batch_size_ == 1,
        )

    def _set_stage(self, epoch: int) -> None:
        """Freeze the backbone for the first ``freeze_epochs`` of ``finetune``."""
        frozen = self.mode == "finetune" and epoch < self.config.freeze_epochs
        head = self.network.get_classifier()
        head_ids = {id(p) for p in head.parameters()}
        for param in self.network.parameters():
            param.requires_grad_(not frozen or id(param) in head_ids)
        self.network.train()
        if frozen:  # keep the pretrained batch-norm statistics while only the head learns
            self.network.eval()
            head.train()
        if self.world_size_ > 1 and self.wrapped_frozen_ != frozen:
            self._wrap_distributed(frozen)

    def _wrap_distributed(self, frozen: bool) -> None:
        """(Re)wrap the network in DDP: it syncs the gradients of the parameters that train now."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device_.index] if self.device_.type == "cuda" else None
        self.forward_module_ = DistributedDataParallel(self.network, device_ids=device_ids)
        self.wrapped_frozen_ = frozen

    def _track_best(self, logs: dict[str, float]) -> None:
        """Best epoch: the highest monitored score; a tie goes to the lower validation loss.

        Accuracy on a small validation set ties often, and the earliest of tied epochs is usually
        the least trained (its probabilities still near uniform), so ties are broken by the loss
        (by the accuracy when the loss is monitored).
        """
        monitor = self.plan_.monitor
        if monitor in ("val_loss", "val_loss_ema"):
            score, tiebreak = -logs[monitor], logs["val_accuracy"]
        else:
            score, tiebreak = logs[monitor], -logs["val_loss"]
        self.is_best = (score, tiebreak) > (self.best_score_, self.best_tiebreak_)
        if self.is_best:
            self.best_score_, self.best_tiebreak_ = score, tiebreak
            self.best_epoch_ = logs["epoch"]
            self.best_state_ = {k: v.detach().cpu().clone()
                                for k, v in self.validated_network.state_dict().items()}

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks_:
            getattr(callback, hook)(self, *args)

    # -- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the whole training state atomically."""
        import torch

        state = {
            "epoch": len(self.history_),
            "network": self.network.state_dict(),
            "optimizer": self.optimizer_.state_dict(),
            "scheduler": self.scheduler_.state_dict(),
            "history": self.history_,
            "best_epoch": self.best_epoch_,
            "best_score": self.best_score_,
            "best_tiebreak": self.best_tiebreak_,
            "best_state": self.best_state_,
            "loss_ema": self.loss_ema_,
            "weights_ema": None if self.ema_ is None else self.ema_.module.state_dict(),
            "epochs_planned": self.plan_.epochs_planned,
            "min_epochs": self.plan_.min_epochs,
            "stopped_early": self.stopped_early_,
            "elapsed": sum(h["epoch_seconds"] for h in self.history_),
        }
        return atomic_write(Path(path), lambda p: torch.save(state, p))

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore the training state from ``path``; returns the epoch to continue from."""
        import torch

        try:
            state = torch.load(Path(path), map_location=self.device_, weights_only=True)
            self.network.load_state_dict(state["network"])
            self.optimizer_.load_state_dict(state["optimizer"])
            self.scheduler_.load_state_dict(state["scheduler"])
        except FileNotFoundError:
            raise ArtifactError(f"No checkpoint to resume from at '{path}'.") from None
        except Exception as exc:  # noqa: BLE001 - any decoding failure is a broken checkpoint
            raise ArtifactError(f"Cannot resume from checkpoint '{path}': {exc}") from None
        self.history_ = list(state["history"])
        self.best_epoch_ = int(state["best_epoch"])
        self.best_score_ = float(state["best_score"])
        self.best_tiebreak_ = float(state.get("best_tiebreak", -math.inf))
        self.best_state_ = copy.deepcopy(state["best_state"])
        self.elapsed_before_resume = float(state.get("elapsed", 0.0))
        self.loss_ema_ = state.get("loss_ema")
        if self.ema_ is not None:  # a checkpoint without one restarts the average from its weights
            self.ema_.module.load_state_dict(state.get("weights_ema") or state["network"])
        self.plan_.epochs_planned = int(state.get("epochs_planned", self.plan_.epochs_planned))
        self.plan_.min_epochs = int(state.get("min_epochs", self.plan_.min_epochs))
        self.stopped_early_ = bool(state.get("stopped_early", False))
        logger.info("Resuming from epoch %d of %d", state["epoch"], self.plan_.epochs_planned)
        if self.stopped_early_:
            self.stop_training = True
        return int(state["epoch"])
