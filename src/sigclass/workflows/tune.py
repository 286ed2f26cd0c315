"""Hyperparameter search with Optuna: ``sigclass tune DATA --trials N``.

Every trial is one :func:`sigclass.train` run on one fixed split (``<out>/split.json``) with
settings drawn for the mode:

- ``headless``: the head type and its regularization (``C`` of logistic regression and SVMs,
  ``alpha`` of ridge); the objective is the head's cross-validated accuracy on the training
  and validation parts (headless learns from both).
- ``finetune``: learning rate, backbone learning-rate ratio, batch size, augmentation
  strength, frozen-backbone epochs, label smoothing.
- ``scratch`` (images and signals): learning rate, batch size, weight decay, augmentation
  strength (images) and the network's width, depth and dropout (``model_args``).

For networks the objective is the best validation value of ``train.monitor`` (``auto``: the
smoothed validation loss, ``val_loss_ema``); it is reported
to Optuna after every epoch, and a trial far below the others at the same epoch is pruned.
The test part is never looked at to choose.

Workers share a study through its storage: SQLite by default (``<out>/study.db``, workers on
one machine), or a PostgreSQL/MySQL URL for workers on several machines. Start
``sigclass tune`` as many times as you want workers; together they run ``--trials`` trials.
A worker that dies leaves its trial to be failed (heartbeat) and retried by the others; running
the command again continues the study. With tracking on, the study is an MLflow parent run
and each trial a child run. The best trial's configuration is written to ``<out>/best.yaml``:
``sigclass train --config best.yaml`` trains it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._utils import write_json
from ..config import RunConfig, save_config
from ..data.split import Split
from ..exceptions import ConfigError, SigclassError
from ..modalities import modality_of
from ..tracking import start_run, tracked_parent
from ..training.callbacks import Callback
from .prepare import dataset_for, resolve_defaults, resolve_split
from .train import train

logger = logging.getLogger(__name__)

# Width/depth/dropout choices of the registry's small networks (``model_args``).
ARCHITECTURE_SPACES: dict[str, dict[str, list]] = {
    "simple_cnn": {"width": [16, 32, 64], "drop_rate": [0.0, 0.25, 0.5]},
    "simple_cnn_gap": {"width": [16, 32, 64], "drop_rate": [0.0, 0.25, 0.5]},
    "vgg_like_1": {"drop_rate": [0.0, 0.25, 0.5]},
    "vgg_like_2": {"drop_rate": [0.0, 0.25, 0.5]},
    "vgg_like_3": {"drop_rate": [0.0, 0.25, 0.5]},
    "fcn": {"width": [32, 64, 128], "depth": [2, 3, 4], "drop_rate": [0.0, 0.2]},
    "resnet1d": {"width": [16, 32, 64], "depth": [2, 3, 4]},
    "inception": {"width": [16, 32], "depth": [3, 6]},
    "simple_cnn1d": {"width": [16, 32, 64], "depth": [1, 2, 3], "drop_rate": [0.0, 0.25]},
    "lstm": {"width": [32, 64, 128], "depth": [1, 2]},
    "gru": {"width": [32, 64, 128], "depth": [1, 2]},
    "bilstm": {"width": [32, 64, 128], "depth": [1, 2]},
    "lstm_fcn": {"width": [64, 128], "depth": [2, 3]},
}


@dataclass
class TuneResult:
    """What a search produced (this worker's view of the shared study).

    Attributes:
        study: Study name.
        storage: Storage URL.
        metric: What the objective measures (``cv_accuracy``, ``val_accuracy``, ...).
        best_value: The best trial's objective.
        best_params: The best trial's drawn settings.
        best_trial: Its number.
        best_config: ``best.yaml``, loadable by ``sigclass train --config``.
        best_run_dir: The best trial's run folder.
        counts: Trials per state (``COMPLETE``, ``PRUNED``, ``FAIL``, ...).
    """

    study: str
    storage: str
    metric: str
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    best_config: Path | None
    best_run_dir: Path | None
    counts: dict[str, int] = field(default_factory=dict)


class PruningCallback(Callback):
    """Reports the monitored validation metric to an Optuna trial after every epoch and stops
    the trial (``optuna.TrialPruned``) when the pruner judges it hopeless."""

    def __init__(self, trial, monitor: str):
        self.trial = trial
        self.monitor = monitor

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        import optuna

        epoch = int(logs["epoch"])
        self.trial.report(float(logs[self.monitor]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor}={logs[self.monitor]:.4f} at epoch {epoch}")


class _Surplus(Exception):
    """A trial started by one worker after the others had already started the last one."""


def suggest(trial, cfg: RunConfig, n_train: int) -> dict[str, Any]:
    """Draw a trial's settings for ``cfg.mode`` and modality; returns config overrides."""
    modality = modality_of(cfg)
    if cfg.mode == "headless":
        head = trial.suggest_categorical("head", modality.tune_heads)
        if head == "ridge":
            params = {"alpha": trial.suggest_float("alpha", 1e-3, 1e3, log=True)}
        else:
            params = {"C": trial.suggest_float("C", 1e-4, 1e2, log=True)}
        return {"head": head, "head_params": params}
    sizes = [b for b in (8, 16, 32, 64) if b <= max(8, n_train // 2)]
    values: dict[str, Any] = {"train.batch_size": trial.suggest_categorical("batch_size", sizes)}
    if cfg.mode == "finetune":
        values["train.lr"] = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        values["train.backbone_lr_mult"] = trial.suggest_float("backbone_lr_mult", 0.01, 1.0, log=True)
        epochs = cfg.train.epochs if isinstance(cfg.train.epochs, int) else 4  # "auto": at least 20
        values["train.freeze_epochs"] = trial.suggest_int("freeze_epochs", 0, max(0, min(3, epochs - 1)))
        values["train.label_smoothing"] = trial.suggest_float("label_smoothing", 0.0, 0.2)
    else:
        values["train.lr"] = trial.suggest_float("lr", 3e-4, 3e-2, log=True)
        values["train.weight_decay"] = trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True)
        for key, choices in ARCHITECTURE_SPACES.get(cfg.model, {}).items():
            values[f"model_args.{key}"] = trial.suggest_categorical(key, choices)
    if modality.tunes_augmentation:
        values.update(modality.augment_overrides(trial.suggest_float("augment", 0.0, 1.0)))
    return values


def objective_metric(cfg: RunConfig) -> tuple[str, str]:
    """``(metric name, "maximize" | "minimize")`` of the objective."""
    if cfg.mode == "headless":
        return "cv_accuracy", "maximize"
    monitor = "val_loss_ema" if cfg.train.monitor == "auto" else cfg.train.monitor
    return monitor, "minimize" if monitor in ("val_loss", "val_loss_ema") else "maximize"


def objective_value(result, cfg: RunConfig) -> float:
    """The trial's objective read from its run: never a test metric."""
    if cfg.mode == "headless":
        return float(result.predictor.info["head"]["cv_accuracy"])
    metric, direction = objective_metric(cfg)
    values = [h[metric] for h in result.history]
    return float(min(values) if direction == "minimize" else max(values))


def open_storage(url: str, attempts: int = 3):
    """An Optuna RDB storage with heartbeats, so trials of a dead worker are failed and retried.

    Workers that start together race to create the database tables: on SQLite a lock file
    beside the database lets one create them; on a server the losers retry and find them made.
    """
    import optuna
    from filelock import FileLock

    path = _sqlite_path(url)
    lock = FileLock(str(path) + ".lock") if path is not None else contextlib.nullcontext()
    for attempt in range(attempts):
        try:
            with lock:
                return _open_storage(url)
        except ImportError as exc:
            raise ConfigError(f"Cannot open the study storage {_safe_url(url)!r}: "
                              f"{str(exc).rstrip('.')}. Install the database driver of the URL: "
                              "for postgresql:// `pip install \"sigclass[postgres]\"` (psycopg 3), "
                              "for postgresql+psycopg2:// `pip install psycopg2-binary`.") from None
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors of any kind
            if isinstance(exc, optuna.exceptions.OptunaError) or attempt < attempts - 1:
                if attempt < attempts - 1:
                    time.sleep(1.0 + attempt)
                    continue
                raise
            raise ConfigError(f"Cannot open the study storage {_safe_url(url)!r}: {exc}. Check "
                              "the URL (sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB) and "
                              "that the database is reachable.") from None
    raise AssertionError("unreachable")


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _open_storage(url: str):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):  # workers wait for each other's writes instead of failing
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
        return RDBStorage(url, heartbeat_interval=20, grace_period=90,
                          heartbeat_stale_trial_callback=retry, **kwargs)


def tune(
    data,
    out: str | Path = "runs/tune",
    trials: int = 20,
    storage: str | None = None,
    study_name: str | None = None,
    timeout_minutes: float | None = None,
    config: RunConfig | None = None,
    mode: str | None = None,
    model: str | None = None,
    pruning: bool = True,
    sampler_seed: int | None = None,
    progress: bool = False,
    **overrides: Any,
) -> TuneResult:
    """Search the settings of ``mode`` with Optuna, as one worker of a shared study.

    Args:
        data: A dataset source (folder, manifest, signal file, named dataset) or dataset object.
        out: Study folder: ``split.json``, ``study.db`` (default storage), ``trials/``,
            ``best.yaml`` and ``study.json``.
        trials: Trials of the whole study (all workers together), failed ones not counted.
        storage: Optuna storage URL; ``None`` is ``sqlite:///<out>/study.db``.
        study_name: Study name; ``None`` is ``<mode>-<model>``.
        timeout_minutes: This worker starts no trial after this many minutes.
        config: Base configuration; the drawn settings are applied on top of it.
        mode: ``headless``, ``finetune`` or ``scratch`` (overrides ``config.mode``).
        model: Network name (overrides ``config.model``).
        pruning: Stop poor network trials early (median pruner).
        sampler_seed: Seed of the TPE sampler (give each worker its own, or leave ``None``).
        progress: Show the training progress of each trial.
        **overrides: Further config overrides (dotted keys allowed).

    Returns:
        A :class:`TuneResult`.
    """
    import optuna

    if trials < 1:
        raise ConfigError(f"The 'trials' option must be at least 1. Got {trials}.")
    values = {k: v for k, v in {"mode": mode, "model": model}.items() if v is not None}
    cfg = (config or RunConfig()).updated({**values, **overrides})
    if isinstance(data, str | Path):
        local = Path(data).expanduser()  # absolute, so best.yaml works from any folder
        cfg = cfg.updated({"data": str(local.resolve()) if local.exists() else str(data)}).validate()
        dataset = dataset_for(cfg)
    else:
        dataset = data
        cfg = cfg.updated({"data": getattr(data, "source", "") or cfg.data}).validate()
    cfg = resolve_defaults(cfg, dataset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split, split_path = _study_split(out, cfg, dataset)
    cfg = cfg.updated({"split": str(split_path.resolve())})
    metric, direction = objective_metric(cfg)
    name = study_name or f"{cfg.mode}-{cfg.model}"
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if pruning
              else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=name, storage=open_storage(url), direction=direction,
                                sampler=optuna.samplers.TPESampler(seed=sampler_seed),
                                pruner=pruner, load_if_exists=True)
    _check_same_search(study, cfg, metric)
    n_train = len(split.part("train"))
    objective = _Objective(study, cfg, dataset, split, out / "trials" / name, trials, metric,
                           n_train, progress)
    deadline = None if timeout_minutes is None else time.monotonic() + 60 * timeout_minutes
    with _tracking_parent(cfg, out, name) as parent:
        parent.set_tags({"sigclass.study": name, "sigclass.storage": _safe_url(url)})
        _work(study, objective, trials, deadline)
        result = _summarize(study, out, name, url, metric)
        if result.best_value is not None:
            parent.log_metrics({f"best_{metric}": result.best_value})
    return result


class _Objective:
    """One trial: draw settings, train one run, return the validation objective."""

    def __init__(self, study, cfg: RunConfig, dataset, split, trials_dir: Path, n_trials: int,
                 metric: str, n_train: int, progress: bool):
        self.study, self.cfg, self.dataset, self.split = study, cfg, dataset, split
        self.trials_dir, self.n_trials, self.metric = trials_dir, n_trials, metric
        self.n_train, self.progress = n_train, progress
        self.failures = 0

    def __call__(self, trial) -> float:
        import optuna

        self._check_not_surplus(trial)
        cfg = self.cfg.updated(suggest(trial, self.cfg, self.n_train))
        run_dir = self.trials_dir / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        callbacks = (PruningCallback(trial, self.metric),) if cfg.mode != "headless" else ()
        started = time.perf_counter()
        pruned = None
        tags = {"sigclass.kind": "trial", "sigclass.trial": trial.number,
                "sigclass.study": self.study.study_name}
        with start_run(f"trial-{trial.number}", config=cfg, tags=tags) as child:
            child.log_params(trial.params)
            try:
                # a trial's maps help nobody choose; `train --config best.yaml` writes them
                result = train(self.dataset, split=self.split, out=run_dir,
                               config=cfg.updated({"cam_examples": 0}), progress=self.progress,
                               callbacks=callbacks)
            except optuna.TrialPruned as exc:
                child.set_tags({"sigclass.trial_state": "pruned"})
                pruned = exc
            else:
                value = objective_value(result, cfg)
                child.log_metrics({self.metric: value})
                child.set_tags({"sigclass.trial_state": "complete"})
        seconds = time.perf_counter() - started
        if pruned is not None:
            logger.info("trial %d pruned after %.1f s: %s", trial.number, seconds, pruned)
            raise pruned
        logger.info("trial %d: %s %.4f in %.1f s  %s", trial.number, self.metric, value, seconds,
                    trial.params)
        return value

    def _check_not_surplus(self, trial) -> None:
        """Only the first ``n_trials`` trials that did not fail run; later ones end at once."""
        from optuna.trial import TrialState

        earlier = [t for t in self.study.get_trials(deepcopy=False)
                   if t.number < trial.number and t.state != TrialState.FAIL]
        if len(earlier) >= self.n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"the study already has {self.n_trials} trials")


def _work(study, objective: _Objective, n_trials: int, deadline: float | None) -> None:
    """Run trials until the study holds ``n_trials`` that did not fail, or time is up."""
    from optuna.trial import TrialState

    catch = (SigclassError, _Surplus, _out_of_memory_error())
    while deadline is None or time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        if sum(t.state != TrialState.FAIL for t in trials) >= n_trials:
            break
        failed_before = sum(t.state == TrialState.FAIL for t in trials)
        study.optimize(objective, n_trials=1, catch=catch, gc_after_trial=True)
        last = study.get_trials(deepcopy=False)
        if sum(t.state == TrialState.FAIL and not t.user_attrs.get("surplus") for t in last) > failed_before:
            objective.failures += 1
            if objective.failures >= max(3, n_trials):
                raise ConfigError(
                    f"{objective.failures} trials of study {study.study_name!r} failed; see the "
                    "errors above and the run.json of the trial folders, and fix the data or config."
                )


def _out_of_memory_error():
    import torch

    return torch.OutOfMemoryError


def _study_split(out: Path, cfg: RunConfig, dataset):
    """The split shared by every trial and worker: loaded if present, else drawn and saved."""
    path = out / "split.json"
    # workers starting together draw the same split from the same seed; the data's own parts
    # (split folders, --val-dir/--test-dir) and near-duplicate groups are kept as in train
    split = resolve_split(None if cfg.split or not path.is_file() else Split.load(path), cfg, dataset)
    if not path.is_file():
        split.save(path)
    return split, path


def _check_same_search(study, cfg: RunConfig, metric: str) -> None:
    """A reloaded study must search the same mode, model and data as this worker."""
    identity = {"mode": cfg.mode, "model": cfg.model, "modality": cfg.modality, "metric": metric}
    saved = study.user_attrs.get("sigclass")
    if saved is None:
        study.set_user_attr("sigclass", identity)
        return
    if saved != identity:
        raise ConfigError(
            f"Study {study.study_name!r} searches {saved}, not {identity}. Use another --study "
            "name or the same mode and model."
        )


@contextlib.contextmanager
def _tracking_parent(cfg: RunConfig, out: Path, name: str):
    """The study's MLflow parent run, shared by workers that use the same folder."""
    from filelock import FileLock

    with contextlib.ExitStack() as stack:
        with FileLock(str(out / ".tracking.lock")):  # one parent even when workers start together
            parent = stack.enter_context(tracked_parent(cfg, out, f"tune-{name}", kind="tune"))
        yield parent


def _summarize(study, out: Path, name: str, url: str, metric: str) -> TuneResult:
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    best_config = None
    if best is not None:
        best_config = save_config(RunConfig.from_dict(best.user_attrs["config"]), out / "best.yaml")
    write_json(out / "study.json", {
        "study": name, "storage": _safe_url(url), "metric": metric,
        "direction": study.direction.name.lower(), "counts": counts,
        "best": None if best is None else {"trial": best.number, "value": best.value,
                                          "params": best.params,
                                          "run_dir": best.user_attrs.get("run_dir")},
        "trials": [{"trial": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                    "seconds": t.duration.total_seconds() if t.duration else None,
                    "run_dir": t.user_attrs.get("run_dir")} for t in trials],
    })
    return TuneResult(
        name, _safe_url(url), metric, None if best is None else float(best.value),
        {} if best is None else dict(best.params), None if best is None else best.number,
        best_config, None if best is None else Path(best.user_attrs["run_dir"]), counts,
    )


def _safe_url(url: str) -> str:
    """The storage URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url
