"""Experiment tracking and a model registry on MLflow.

Every ``train``/``compare`` run is recorded in an MLflow store: the local default (``mlflow.db``
and ``mlartifacts/`` in ``$SIGCLASS_TRACKING_DIR`` or the working folder), or any tracking URI
(``--tracking-uri``, ``MLFLOW_TRACKING_URI``). ``--no-track`` (``tracking.enabled: false``) or
``SIGCLASS_TRACKING=off`` turns it off. Nothing here imports MLflow until it is used.

API::

    from sigclass.tracking import start_run, tracked_parent, tracking_run

    # A parent run with a child per trial (runs opened inside nest by themselves):
    with start_run("study-1", config=cfg, tags={"sigclass.kind": "tune"}) as parent:
        for trial in trials:
            with start_run(f"trial-{trial.number}", config=cfg) as child:
                child.log_params(trial.params)
                sigclass.train(data, config=cfg, ...)  # its run becomes a child of ``child``
                child.log_metrics({"val_accuracy": 0.9}, step=3)
                trainer_callbacks = [child.callback()]  # per-epoch metrics, step = epoch

    # A parent run kept in a folder (reopened when the work resumes):
    with tracked_parent(cfg, "runs/study", "study", kind="tune") as parent: ...

    # What sigclass.train does around one run folder:
    with tracking_run(cfg, run_dir, dataset) as record:
        result = ...  # training with record.callbacks()
        record.finish(result)

    # Registry
    from sigclass.tracking import register_run, promote, list_versions, download_model
    version = register_run("runs/headless", "fridge")        # run folder or MLflow run id
    promote("fridge", version.version, "champion")
    sigclass.load("models:/fridge@champion")                  # also models:/fridge/1

Runs, parents and children end ``FINISHED``, ``FAILED`` on an error (what they logged is kept)
or ``KILLED`` on Ctrl-C. With tracking off, ``start_run`` yields a run whose methods do nothing.
"""

from __future__ import annotations

from .logger import DisabledRun, MlflowCallback, TrackedRun, current_run, start_run
from .record import RunRecorder, tracked_parent, tracking_run
from .registry import download_model, list_versions, promote, register_run
from .store import TrackingSettings, check_store, resolve_settings, resolve_uri

__all__ = [
    "DisabledRun", "MlflowCallback", "RunRecorder", "TrackedRun", "TrackingSettings",
    "check_store", "current_run", "download_model", "list_versions", "promote", "register_run",
    "resolve_settings", "resolve_uri", "start_run", "tracked_parent", "tracking_run",
]
