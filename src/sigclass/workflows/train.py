"""Training runs: data → split → model → train (any mode) → evaluate → save, in one folder.

A run folder holds ``config.yaml`` (resolved config), ``split.json``, ``data_report.json`` (counts,
skipped and ignored files), ``metrics.json`` (test metrics; ``val/`` holds the validation ones),
the confusion matrix (PNG, JSON), ``predictions.csv``, ``history.json`` and ``curves.png`` for
trained networks, ``cam/`` (class activation maps of the best and worst test predictions, with
``report.html``), ``checkpoints/last.pt`` while training, ``model/`` (the self-contained model)
and ``run.json`` with the status and timings.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..config import RunConfig, load_config
from ..data.split import Split
from ..exceptions import ArtifactError, ConfigError
from ..tracking import tracking_run
from ..training import distributed
from .execute import RunResult, execute
from .prepare import dataset_for, resolve_defaults, resolve_split

logger = logging.getLogger(__name__)

__all__ = ["RunResult", "train", "tracked_execute"]


def train(
    data,
    split: Split | str | Path | None = None,
    mode: str | None = None,
    model: str | None = None,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: tuple = (),
    **overrides: Any,
) -> RunResult:
    """Train, evaluate and save one model.

    Args:
        data: A dataset object, or a source for :func:`~sigclass.workflows.prepare.load_dataset`.
        split: A :class:`Split`, a split file, or ``None`` to draw one (saved in the run).
        mode: ``headless``, ``finetune`` or ``scratch`` (overrides ``config.mode``).
        model: Network name (overrides ``config.model``); ``None`` picks the mode's default.
        out: Run folder; ``None`` makes ``runs/<mode>-<model>-<time>``.
        config: Base configuration; ``overrides`` (dotted keys allowed) are applied on top.
        resume: Continue the interrupted run in ``out`` (its saved config and split are used).
        progress: Show progress bars.
        callbacks: Extra training-loop callbacks (networks only).

    Returns:
        A :class:`RunResult`.
    """
    if resume:
        return _resume(out, data, progress, callbacks)
    values = {k: v for k, v in {"mode": mode, "model": model}.items() if v is not None}
    cfg = (config or RunConfig()).updated({**values, **overrides})
    if not isinstance(data, str | Path):
        cfg = cfg.updated({"data": getattr(data, "source", "") or cfg.data})
    else:
        cfg = cfg.updated({"data": str(data)})
    cfg.validate()
    with distributed.process_group(cfg.device):  # under torchrun: join the other processes
        dataset = data if not isinstance(data, str | Path) else dataset_for(cfg)
        cfg = resolve_defaults(cfg, dataset)
        run_dir = _new_run_dir(out, cfg)
        split = resolve_split(split, cfg, dataset)
        return tracked_execute(run_dir, cfg, dataset, split, progress, callbacks, resume_from=None)


def _new_run_dir(out, cfg: RunConfig) -> Path:
    if out is None:
        out = Path("runs") / f"{cfg.mode}-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(distributed.broadcast_object(str(out)))  # one folder for all processes
    if not distributed.is_main_process():
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"Run folder '{run_dir}' already exists and is not empty. Use --resume to continue it, "
            "or choose another --out."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _resume(out, data, progress: bool, callbacks: tuple) -> RunResult:
    if out is None:
        raise ConfigError("--resume needs the run folder (--out) of the run to continue.")
    run_dir = Path(out)
    if not (run_dir / "config.yaml").is_file():
        raise ArtifactError(f"Cannot resume '{run_dir}': it has no config.yaml; it is not a run folder.")
    cfg = RunConfig.from_dict(load_config(run_dir / "config.yaml")).validate()
    with distributed.process_group(cfg.device):
        if _read_status(run_dir).get("status") == "finished":
            logger.info("Run '%s' already finished; loading it", run_dir)
        dataset = data if not isinstance(data, str | Path | None) else dataset_for(cfg)
        split = Split.load(run_dir / "split.json")
        split.indices(dataset)
        checkpoint = run_dir / "checkpoints" / "last.pt"
        return tracked_execute(run_dir, cfg, dataset, split, progress, callbacks,
                               resume_from=checkpoint if checkpoint.is_file() else None)


def _read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def tracked_execute(run_dir: Path, cfg: RunConfig, dataset, split: Split, progress: bool, callbacks,
                    resume_from, fit=None, tags: dict[str, str] | None = None) -> RunResult:
    """:func:`~sigclass.workflows.execute.execute` (``fit`` passed on) recorded in MLflow
    (unless tracking is off), with ``tags`` on the MLflow run; the store is checked first."""
    if not distributed.is_main_process():  # one MLflow run per distributed run: rank 0's
        return execute(run_dir, cfg, dataset, split, progress, callbacks, resume_from, fit)
    with tracking_run(cfg, run_dir, dataset) as record:
        if tags and record.run.enabled:
            record.run.set_tags(tags)
        result = execute(run_dir, cfg, dataset, split, progress, (*callbacks, *record.callbacks()),
                         resume_from, fit)
        record.finish(result)
    return result
