"""Training a torchvision detector with the sigclass :class:`~sigclass.training.Trainer`.

:class:`DetectionTrainer` keeps the Trainer's loop (``fit`` → ``run_epoch`` → ``train_step``),
its callbacks (early stopping, time budget, checkpoints, any extra one such as tracking) and its
checkpoint format, and replaces the classification-specific steps: a training step sums the
detector's own losses; validation predicts boxes and scores them by COCO mAP
(:mod:`sigclass.evaluation.detection`). The selected epoch is the one of best validation
mAP@[.5:.95]. Its ``val_loss`` is ``1 - mAP@[.5:.95]``, so the loss-based rules read alike.

AdamW with warm-up and cosine decay, the backbone at ``backbone_lr_mult`` of the heads' rate;
bfloat16 autocast on CUDA. With ``epochs="auto"``, training is capped at
:data:`DEFAULT_MINUTES` (``max_minutes="auto"``) and the schedule shrinks to end within it, as
for classifiers (:func:`~sigclass.training.schedule.fit_to_budget`).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

from .._utils import resolve_device
from .callbacks import Callback, Checkpoint, EarlyStopping, TimeBudget
from .schedule import Plan, budget_minutes, time_steps
from .trainer import Trainer, WarmupCosine

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 24
DEFAULT_LR = 3e-4
#: ``max_minutes="auto"`` with ``epochs="auto"``: the training budget of a detector.
DEFAULT_MINUTES = 20.0
#: Epochs the automatic image size leaves room for within the budget.
TARGET_EPOCHS = 6
#: The smallest automatic shorter side: below it, small objects shrink to a few pixels.
MIN_AUTO_SIZE = 256


class DetectionProgress(Callback):
    """One log line per epoch: the training losses and the validation mAP."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            best = " *" if trainer.is_best else ""
            tqdm.write(f"epoch {logs['epoch']:>3}  train loss {logs['train_loss']:.4f}  val mAP "
                       f"{logs['val_map']:.3f} mAP@0.5 {logs['val_map_50']:.3f}  "
                       f"{logs['epoch_seconds']:.0f} s{best}")


class DetectionTrainer(Trainer):
    """Trains a torchvision detector on :class:`~sigclass.data.detection_torch.BoxDataset` s.

    Takes the :class:`~sigclass.training.Trainer` arguments. ``config.epochs="auto"`` means
    :data:`DEFAULT_EPOCHS`; ``config.max_minutes`` caps the training time (``"auto"``:
    :data:`DEFAULT_MINUTES` when the epochs are automatic, no cap when they are given);
    ``config.lr`` is the heads' learning rate (``DEFAULT_LR`` when left at the classification
    default).
    """

    def _setup(self, train_set, val_set) -> None:
        import torch

        cfg = self.config
        self.world_size_ = 1
        self.device_ = resolve_device(self.device)
        self.network = self.network.to(self.device_)
        self.forward_module_ = self.network
        self.channels_last_ = False
        backbone = [p for p in self.network.backbone.body.parameters() if p.requires_grad]
        ids = {id(p) for p in backbone}
        heads = [p for p in self.network.parameters() if p.requires_grad and id(p) not in ids]
        lr = DEFAULT_LR if cfg.lr == 1e-3 else cfg.lr
        self.optimizer_ = torch.optim.AdamW(
            [{"params": backbone, "lr": lr, "name": "backbone"},
             {"params": heads, "lr": lr, "name": "head"}], weight_decay=1e-4)
        self.global_batch_size_ = self.batch_size_ = (
            4 if cfg.batch_size == "auto" else int(cfg.batch_size))
        self.steps_per_epoch = max(1, len(train_set) // self.batch_size_)
        epochs = DEFAULT_EPOCHS if cfg.epochs == "auto" else int(cfg.epochs)
        max_minutes = detection_minutes(cfg)
        patience = max(5, math.ceil(0.25 * epochs)) if cfg.patience == "auto" else int(cfg.patience)
        self.plan_ = Plan(epochs, "user" if cfg.epochs != "auto" else f"detection default {epochs}",
                          patience, min(epochs, 5), max_minutes, "val_map", "best", False, None,
                          "not used by detection")
        total = self.steps_per_epoch * epochs
        warmup = min(200, int(round(cfg.warmup_epochs * self.steps_per_epoch)))
        self.scheduler_ = torch.optim.lr_scheduler.LambdaLR(self.optimizer_, WarmupCosine(warmup, total))
        self.history_: list[dict[str, float]] = []
        self.best_epoch_, self.best_score_, self.best_tiebreak_ = 0, -math.inf, -math.inf
        self.best_state_: dict | None = None
        self.loss_ema_: float | None = None
        self.is_best = self.stop_training = self.stopped_early_ = False
        self.replica_digests_: list[str] = []
        self.elapsed_before_resume = 0.0
        self.callbacks_ = [DetectionProgress(self.progress), EarlyStopping(self.plan_.patience),
                           TimeBudget(self.plan_.max_minutes)]
        if self.checkpoint_dir is not None:
            self.callbacks_.append(Checkpoint(self.checkpoint_dir))
        self.callbacks_ += self.extra_callbacks
        self.classes_ = list(train_set.classes)

    def describe_plan(self) -> str:
        plan = self.plan_
        budget = f", at most {plan.max_minutes:g} min" if plan.max_minutes else ""
        return (f"{plan.epochs_planned} epochs ({plan.epochs_source}){budget}, batch "
                f"{self.batch_size_}, on {self.device_.type}; early stopping after {plan.patience} "
                "epochs without a better val mAP; keeps the best val mAP@[.5:.95]")

    def run_epoch(self, dataset, epoch: int, training: bool) -> dict[str, float]:
        """Training: the mean of each loss term; validation: COCO mAP (and ``1 - mAP`` as loss)."""
        import torch

        loader = self._loader(dataset, epoch, training)
        if not training:
            metrics = self.evaluate(loader, dataset.classes)
            return {"loss": 1.0 - metrics["map"], "map": metrics["map"], "map_50": metrics["map_50"]}
        self._set_stage(epoch)
        torch.manual_seed(self.seed * 100_003 + epoch)
        sums: dict[str, float] = {}
        seen = 0
        for images, targets in loader:
            step = self.train_step(images, targets)
            n = len(images)
            seen += n
            for key, value in step["losses"].items():
                sums[key] = sums.get(key, 0.0) + value * n
            sums["loss"] = sums.get("loss", 0.0) + float(step["loss"]) * n
            self._call("on_batch_end", step, training)
        return {key: value / max(1, seen) for key, value in sums.items()}

    def train_step(self, images, targets) -> dict[str, Any]:
        """One optimisation step on the sum of the detector's losses."""
        import torch

        images, targets = self._to_device(images, targets)
        with torch.autocast(self.device_.type, dtype=torch.bfloat16, enabled=self.device_.type == "cuda"):
            losses = self.network(images, targets)
        loss = sum(value.float() for value in losses.values())
        if not torch.isfinite(loss):
            logger.warning("Skipping a batch with a non-finite loss (%s)", float(loss))
            self.optimizer_.zero_grad(set_to_none=True)
            return {"loss": torch.tensor(0.0), "losses": {}, "y_pred": None}
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 10.0)
        self.optimizer_.step()
        self.scheduler_.step()
        return {"loss": loss.detach(), "losses": {k: float(v.detach()) for k, v in losses.items()},
                "y_pred": None}

    def validation_step(self, images, targets) -> dict[str, Any]:
        """The detections of a batch (no loss: torchvision detectors give none in eval mode)."""
        import torch

        images, _ = self._to_device(images, [])
        with torch.inference_mode(), torch.autocast(
                self.device_.type, dtype=torch.bfloat16, enabled=self.device_.type == "cuda"):
            detections = self.network(images)
        return {"loss": None, "y_pred": [{k: v.float().cpu() for k, v in d.items()} for d in detections]}

    def evaluate(self, loader, classes: list[str]) -> dict:
        """COCO metrics of the network on ``loader``'s batches."""
        from ..evaluation.detection import detection_metrics

        self.network.eval()
        predictions, truth = [], []
        for images, targets in loader:
            step = self.validation_step(images, targets)
            predictions += [{k: v.numpy() for k, v in d.items()} for d in step["y_pred"]]
            truth += [{k: v.numpy() for k, v in t.items()} for t in targets]
            self._call("on_batch_end", step, False)
        return detection_metrics(predictions, truth, classes)

    def _to_device(self, images, targets):
        images = [image.to(self.device_, non_blocking=True) for image in images]
        targets = [{k: v.to(self.device_) for k, v in t.items()} for t in targets]
        return images, targets

    def _loader(self, dataset, epoch: int, training: bool):
        import torch
        from torch.utils.data import DataLoader, RandomSampler

        from ..data.detection_torch import collate_boxes

        workers = self.config.num_workers
        if workers is None:
            workers = 0
        sampler = None
        if training:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            sampler = RandomSampler(dataset, generator=generator)
        return DataLoader(dataset, batch_size=self.batch_size_, sampler=sampler,
                          num_workers=workers, collate_fn=collate_boxes,
                          pin_memory=self.device_.type == "cuda")

    def _set_stage(self, epoch: int) -> None:
        """Detection trains every unfrozen layer from the start (batch norms stay frozen)."""
        self.network.train()

    def _track_best(self, logs: dict[str, float]) -> None:
        score, tiebreak = logs["val_map"], logs["val_map_50"]
        self.is_best = (score, tiebreak) > (self.best_score_, self.best_tiebreak_)
        if self.is_best:
            self.best_score_, self.best_tiebreak_ = score, tiebreak
            self.best_epoch_ = logs["epoch"]
            self.best_state_ = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}


def detection_minutes(config) -> float | None:
    """The training budget in minutes of a ``TrainConfig`` for a detector, or ``None``."""
    return budget_minutes(config, DEFAULT_MINUTES)


def time_detection_step(network, images, targets, device=None, repeats: int = 2) -> float:
    """Seconds of one optimisation step of a copy of detector ``network`` on a real batch (the
    median of ``repeats`` after a warm-up step); ``network`` is untouched."""
    device = resolve_device(device)
    probe = copy.deepcopy(network).to(device).train()
    images = [image.to(device) for image in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    return time_steps(probe, lambda: sum(v.float() for v in probe(images, targets).values()), device,
                      repeats)
