"""MLflow runs: open, log, nest and close them; the Trainer callback that logs every epoch.

All logging goes through an explicit ``MlflowClient`` bound to one run id, never MLflow's global
"active run", so nested runs (a comparison and its entries, a study and its trials) and several
processes sharing one store stay independent.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..training.callbacks import Callback
from .store import TrackingSettings, check_store, get_client, get_experiment_id, resolve_settings

logger = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"  # in a run folder: which MLflow run records it
SKIPPED = ("model", "checkpoints")  # run-folder entries not logged as plain artifacts
_CURRENT: contextvars.ContextVar[TrackedRun | None] = contextvars.ContextVar("sigclass_run",
                                                                              default=None)


class TrackedRun:
    """One MLflow run, logged to through a client.

    Attributes:
        run_id: The MLflow run id (``None`` when tracking is off).
        settings: The resolved store settings.
        enabled: Whether anything is recorded.
        resumed: The run existed before (reopened to continue it).
    """

    enabled = True

    def __init__(self, client, run_id: str, settings: TrackingSettings, experiment_id: str,
                 resumed: bool = False):
        self.client = client
        self.run_id = run_id
        self.settings = settings
        self.experiment_id = experiment_id
        self.resumed = resumed

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (nested dicts are flattened with dots; values cut to 6,000 chars)."""
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(safe_key(k), str(v)[:6000]) for k, v in flat.items()]
        for begin in range(0, len(items), 100):
            self._retry(self.client.log_batch, self.run_id, params=items[begin:begin + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the finite numeric entries of ``metrics`` (nested dicts flattened) at ``step``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(safe_key(k), float(v), now, step or 0) for k, v in flatten(metrics).items()
                 if _is_number(v)]
        for begin in range(0, len(items), 500):
            self._retry(self.client.log_batch, self.run_id, metrics=items[begin:begin + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values as strings)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None]
        if items:
            self._retry(self.client.log_batch, self.run_id, tags=items)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None,
                      skip: tuple[str, ...] = ()) -> None:
        """Log the files of ``folder`` (top-level entries named in ``skip`` left out)."""
        folder = Path(folder)
        if not folder.is_dir():
            return
        for entry in sorted(folder.iterdir()):
            if entry.name in skip or entry.name.startswith("."):
                continue
            target = "/".join(p for p in (artifact_path, entry.name if entry.is_dir() else None) if p)
            if entry.is_dir():
                self.client.log_artifacts(self.run_id, str(entry), target or None)
            else:
                self.client.log_artifact(self.run_id, str(entry), artifact_path)

    def log_model(self, model_dir: str | Path, artifact_path: str = "model") -> None:
        """Log a sigclass model folder as an MLflow pyfunc model (safetensors + JSON inside)."""
        from .pyfunc import save_pyfunc  # imports mlflow.pyfunc: only when a model is logged

        with tempfile.TemporaryDirectory(prefix="sigclass-pyfunc-") as tmp:
            save_pyfunc(model_dir, Path(tmp) / artifact_path)
            self.client.log_artifacts(self.run_id, str(Path(tmp) / artifact_path), artifact_path)
        self.set_tags({"sigclass.model_artifact": artifact_path})

    def callback(self) -> Callback:
        """A Trainer callback that logs each epoch's metrics to this run (step = epoch)."""
        return MlflowCallback(self)

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        self._retry(self.client.set_terminated, self.run_id, status)

    @staticmethod
    def _retry(call, *args, attempts: int = 8, **kwargs):
        """SQLite stores shared by several processes answer "database is locked" under load."""
        for attempt in range(attempts):
            try:
                return call(*args, **kwargs)
            except Exception as exc:
                if "locked" not in str(exc).lower() or attempt == attempts - 1:
                    raise
                time.sleep(0.2 * 2**attempt)
        return None


class DisabledRun(TrackedRun):
    """Stands in for a run when tracking is off: every method does nothing."""

    enabled = False

    def __init__(self, settings: TrackingSettings | None = None):
        self.client = None
        self.run_id = None
        self.settings = settings
        self.experiment_id = None
        self.resumed = False

    def log_params(self, params) -> None: ...

    def log_metrics(self, metrics, step=None) -> None: ...

    def set_tags(self, tags) -> None: ...

    def log_artifacts(self, folder, artifact_path=None, skip=()) -> None: ...

    def log_model(self, model_dir, artifact_path="model") -> None: ...

    def callback(self) -> Callback:
        return Callback()

    def end(self, status: str = "FINISHED") -> None: ...


class MlflowCallback(Callback):
    """Logs every epoch's training and validation metrics with ``step`` = epoch number."""

    def __init__(self, run: TrackedRun):
        self.run = run

    def on_train_begin(self, trainer) -> None:
        """A resumed run: log the restored epochs the interrupted process did not get to log."""
        history = getattr(trainer, "history_", None)
        if not (self.run.resumed and history and getattr(trainer, "is_main_process", True)):
            return
        logged = {m.step for m in self.run.client.get_metric_history(self.run.run_id, "val_loss")}
        for logs in history:
            if int(logs["epoch"]) not in logged:
                self.on_epoch_end(trainer, logs)

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        if getattr(trainer, "is_main_process", True):
            self.run.log_metrics({k: v for k, v in logs.items() if k != "epoch"},
                                 step=int(logs["epoch"]))


def current_run() -> TrackedRun | None:
    """The innermost run opened by :func:`start_run` in this context, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def start_run(
    name: str | None = None,
    config: Any = None,
    settings: TrackingSettings | None = None,
    parent: TrackedRun | str | None = None,
    nested: bool = True,
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> Iterator[TrackedRun]:
    """Open an MLflow run; it ends ``FINISHED``, ``FAILED`` on an error, ``KILLED`` on Ctrl-C.

    Args:
        name: Run name shown in the UI.
        config: A :class:`~sigclass.config.RunConfig` whose ``tracking`` section (and ``data``,
            for the experiment name) picks the store; ignored when ``settings`` is given.
        settings: Resolved settings (see :func:`~sigclass.tracking.store.resolve_settings`).
        parent: Parent run (or its id); ``None`` with ``nested`` takes the run opened around this
            one by another ``start_run``, so trials and comparison entries nest by themselves.
        nested: Attach to the enclosing run when ``parent`` is ``None``.
        tags: Extra run tags.
        run_id: Reopen this run (a resumed run) instead of creating one.

    Yields:
        A :class:`TrackedRun`, or a :class:`DisabledRun` when tracking is off.
    """
    if settings is None:
        settings = resolve_settings(getattr(config, "tracking", None), getattr(config, "data", None))
    if not settings.enabled:
        yield DisabledRun(settings)
        return
    if parent is None and nested:
        parent = current_run()
    parent_id = parent.run_id if isinstance(parent, TrackedRun) else parent
    run = open_run(settings, name, parent_id, tags, run_id)
    token = _CURRENT.set(run)
    try:
        yield run
    except BaseException as exc:
        # Ctrl-C and pruned trials (optuna.TrialPruned) stopped on purpose: KILLED, not FAILED.
        stopped = isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TrialPruned"
        run.end("KILLED" if stopped else "FAILED")
        raise
    finally:
        _CURRENT.reset(token)
    run.end("FINISHED")


def open_run(settings: TrackingSettings, name: str | None = None, parent_id: str | None = None,
             tags: Mapping[str, Any] | None = None, run_id: str | None = None) -> TrackedRun:
    """Check the store, then create (or reopen) a run; close it with :meth:`TrackedRun.end`."""
    check_store(settings.uri)
    client = get_client(settings.uri)
    if run_id is not None:
        existing = _existing_run(client, run_id)
        if existing is not None:
            client.update_run(run_id, status="RUNNING")
            return TrackedRun(client, run_id, settings, existing.info.experiment_id, resumed=True)
        logger.warning("MLflow run %s is not in %s; recording the resumed run as a new one",
                       run_id, settings.uri)
    experiment_id = get_experiment_id(client, settings.experiment, settings.artifact_root)
    all_tags = {"mlflow.source.name": "sigclass", "mlflow.source.type": "LOCAL",
                **({"mlflow.parentRunId": parent_id} if parent_id else {}), **(tags or {})}
    created = TrackedRun._retry(client.create_run, experiment_id, run_name=name,
                                tags={k: str(v) for k, v in all_tags.items() if v is not None})
    return TrackedRun(client, created.info.run_id, settings, experiment_id)


def _existing_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` → ``{"train.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def safe_key(key: str) -> str:
    """A metric or parameter name MLflow accepts: class names may hold any character."""
    key = re.sub(r"[^\w.\- :]", "_", str(key)).replace("..", "._")
    return key.strip(". ") or "_"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
