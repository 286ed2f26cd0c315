"""Recording one training run folder in MLflow: what :func:`sigclass.train` logs, and when.

On entry (before training): the store is checked, the run opened (or reopened on ``--resume``)
and tagged with mode, model, data, dataset fingerprint, package versions and device; the resolved
config is logged as parameters and the dataset as a run input. During training the Trainer
callback logs every epoch. At the end: test metrics (``test_*``), validation metrics of the
restored best epoch (``best_val_*``), every file of the run folder except ``model/`` and
``checkpoints/`` as artifacts, and the model as an MLflow pyfunc model under ``model``. A run
that fails is marked ``FAILED`` with its metrics and the files written so far kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .._utils import environment_info, write_json
from ..config import RunConfig, load_config
from ..exceptions import TrackingError
from .logger import SKIPPED, TRACKING_FILE, DisabledRun, TrackedRun, start_run
from .store import (
    TrackingSettings,
    artifact_root_for,
    experiment_name,
    resolve_settings,
    resolve_uri,
)

logger = logging.getLogger(__name__)


class RunRecorder:
    """What a training run holds while it is recorded: the run and its logging steps."""

    def __init__(self, run: TrackedRun, run_dir: Path):
        self.run = run
        self.run_dir = Path(run_dir)

    @property
    def run_id(self) -> str | None:
        return self.run.run_id

    def callbacks(self) -> tuple:
        """Trainer callbacks that log per-epoch metrics (none when tracking is off)."""
        return (self.run.callback(),) if self.run.enabled else ()

    def finish(self, result) -> None:
        """Log the final metrics, the run folder's files and the model of a finished run."""
        if not self.run.enabled:
            return
        self.run.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
        self.run.log_metrics({f"best_val_{k}": v for k, v in (result.val_metrics or {}).items()})
        info = getattr(result.predictor, "info", {})
        self.run.set_tags({"sigclass.status": "finished",
                           "sigclass.split_fingerprint": info.get("split_fingerprint")})
        self.run.log_artifacts(self.run_dir, skip=SKIPPED)
        if (self.run_dir / "model").is_dir():
            self.run.log_model(self.run_dir / "model")

    def keep_partial(self) -> None:
        """Log the files a failed run wrote (config, split, data report, history, run.json)."""
        if not self.run.enabled:
            return
        try:
            self.run.log_artifacts(self.run_dir, skip=SKIPPED)
        except Exception:  # noqa: BLE001 - the training error matters more than this one
            logger.warning("Could not log the files of the failed run %s", self.run_dir, exc_info=True)


@contextlib.contextmanager
def tracking_run(config, run_dir: str | Path, dataset=None, parent: TrackedRun | str | None = None,
                 nested: bool = True) -> Iterator[RunRecorder]:
    """Record the training run in ``run_dir`` in MLflow (see the module docstring).

    Args:
        config: The resolved :class:`~sigclass.config.RunConfig`.
        run_dir: The run folder; ``tracking.json`` in it remembers the MLflow run for resuming.
        dataset: The dataset (its fingerprint, size and classes are logged).
        parent: Parent run or run id; by default the run opened around this one, if any.
        nested: Attach to the enclosing :func:`~sigclass.tracking.start_run` run.

    Yields:
        A :class:`RunRecorder`: pass ``callbacks()`` to the Trainer, call ``finish(result)``.
    """
    run_dir = Path(run_dir)
    settings = resolve_settings(config.tracking, config.data)
    if not settings.enabled:
        yield RunRecorder(DisabledRun(settings), run_dir)
        return
    previous = saved_run_id(run_dir, settings)
    tags = run_tags(config, run_dir, dataset)
    with start_run(run_dir.name, settings=settings, parent=parent, nested=nested, tags=tags,
                   run_id=previous) as run:
        recorder = RunRecorder(run, run_dir)
        if run.enabled:
            save_run_id(run_dir, run)
            if not run.resumed:
                run.log_params(config.to_dict())
                log_dataset(run, dataset, config.data)
        try:
            yield recorder
        except BaseException:
            recorder.keep_partial()
            raise


def run_tags(config, run_dir: Path, dataset) -> dict[str, Any]:
    """Tags of a training run: what was trained on what, where, with which versions."""
    env = environment_info(config.device)
    tags = {"sigclass.kind": "train", "sigclass.mode": config.mode, "sigclass.model": config.model,
            "sigclass.modality": config.modality, "sigclass.data": config.data,
            "sigclass.run_dir": str(run_dir.resolve()), "sigclass.device": env["device"],
            "sigclass.platform": env["platform"]}
    tags.update({f"sigclass.version.{k}": v for k, v in env["versions"].items()})
    if dataset is not None:
        tags["sigclass.dataset_fingerprint"] = dataset.fingerprint()
    return tags


def log_dataset(run: TrackedRun, dataset, source: str) -> None:
    """Record the dataset as a run input: name, fingerprint (digest), size and classes."""
    if dataset is None:
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    fingerprint = dataset.fingerprint()
    profile = {"n_items": len(dataset), "classes": list(getattr(dataset, "classes", []))}
    entity = Dataset(name=Path(str(source)).name or str(source), digest=fingerprint[:36],
                     source_type="local", source=json.dumps({"uri": str(source)}),
                     profile=json.dumps(profile, default=str))
    context = InputTag(key="mlflow.data.context", value="train")
    run._retry(run.client.log_inputs, run.run_id, datasets=[DatasetInput(entity, tags=[context])])


def saved_run_id(folder: Path, settings: TrackingSettings) -> str | None:
    """The MLflow run recorded for ``folder`` in the same store, if any."""
    try:
        saved = json.loads((Path(folder) / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return None
    return saved.get("run_id") if saved.get("tracking_uri") == settings.uri else None


def save_run_id(folder: Path, run: TrackedRun) -> None:
    """Remember in ``folder`` which MLflow run records it (for resume and ``register``)."""
    write_json(Path(folder) / TRACKING_FILE, {
        "run_id": run.run_id, "experiment_id": run.experiment_id,
        "experiment": run.settings.experiment, "tracking_uri": run.settings.uri,
    })


@contextlib.contextmanager
def tracked_parent(config, folder: str | Path, name: str, kind: str) -> Iterator[TrackedRun]:
    """A parent run for a folder of runs (a comparison, a study), reopened when it resumes.

    Runs opened inside it (``sigclass.train`` calls, :func:`~sigclass.tracking.start_run`)
    become its children.
    """
    folder = Path(folder)
    settings = resolve_settings(getattr(config, "tracking", None), getattr(config, "data", None))
    tags = {"sigclass.kind": kind, "sigclass.run_dir": str(folder.resolve())}
    with start_run(name, settings=settings, nested=True, tags=tags,
                   run_id=saved_run_id(folder, settings)) as run:
        if run.enabled:
            save_run_id(folder, run)
        yield run


def log_run_folder(run_dir: str | Path, uri: str | None = None) -> str:
    """Record a finished run folder trained without tracking (``--no-track``); returns the run id.

    Its config becomes the parameters, ``history.json`` the per-epoch metrics, ``metrics.json``
    the test metrics; its files and model are logged as :func:`tracking_run` would have.
    """
    run_dir = Path(run_dir)
    try:
        state = json.loads((run_dir / "run.json").read_text())
        status = state.get("status")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        config = RunConfig.from_dict(load_config(run_dir / "config.yaml"))
        info = json.loads((run_dir / "model" / "model.json").read_text()).get("info", {})
    except (OSError, ValueError) as exc:
        raise TrackingError(f"'{run_dir}' is not a finished run folder ({exc}); train it to the "
                            "end (or --resume it) before registering it.") from None
    if status != "finished":
        raise TrackingError(f"Run '{run_dir}' has status {status!r}; --resume it to the end first.")
    history_file = run_dir / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    uri = resolve_uri(uri)  # asked for explicitly: recorded even where tracking is off by default
    settings = TrackingSettings(True, uri, config.tracking.experiment or experiment_name(config.data),
                                artifact_root_for(uri))
    tags = {**run_tags(config, run_dir, None), "sigclass.logged_after_training": "true",
            "sigclass.dataset_fingerprint": info.get("dataset_fingerprint")}
    if state.get("task") == "detection":  # as sigclass.workflows.detect tags its runs
        tags.update({"sigclass.task": "detection", "sigclass.mode": "detection",
                     "sigclass.model": info.get("backbone"), "sigclass.arch": info.get("arch")})
    with start_run(run_dir.name, settings=settings, nested=False, tags=tags) as run:
        run.log_params(config.to_dict())
        for logs in history:
            run.log_metrics({k: v for k, v in logs.items() if k != "epoch"}, step=int(logs["epoch"]))
        result = SimpleNamespace(metrics=metrics, val_metrics={}, predictor=SimpleNamespace(info=info))
        save_run_id(run_dir, run)
        RunRecorder(run, run_dir).finish(result)
    return run.run_id


def describe_run(folder) -> str | None:
    """One line naming the MLflow run that records ``folder``, if one does."""
    try:
        saved = json.loads((Path(folder) / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return None
    return (f"MLflow run: {saved['run_id']} (experiment {saved['experiment']}, "
            f"{saved['tracking_uri']}); `sigclass ui` shows it")
