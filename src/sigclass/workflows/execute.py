"""One run's work in its folder: the records, the training, the evaluation, the model, the maps."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import environment_info, seed_everything, sha256_json, write_json
from ..config import RunConfig, save_config
from ..data.split import Split
from ..evaluation.calibration import calibration_metrics
from ..evaluation.conformal import coverage_metrics
from ..evaluation.drift import reference_scores
from ..evaluation.metrics import evaluate
from ..evaluation.plots import plot_reliability
from ..exceptions import ExplainError
from ..explain.report import explain_report
from ..modalities import modality_of
from ..training import distributed
from .audit import audit_section
from .fit import fit_headless, fit_network
from .fit_ood import ood_test_metrics
from .prepare import split_summary

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a training run produced.

    Attributes:
        dir: The run folder.
        predictor: The trained model.
        metrics: Test metrics.
        val_metrics: Validation metrics.
        config: The resolved configuration.
        history: Per-epoch metrics (networks only).
        train_seconds: Wall-clock training time (featurization included for headless).
    """

    dir: Path
    predictor: Any
    metrics: dict[str, Any]
    val_metrics: dict[str, Any]
    config: RunConfig
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


def execute(run_dir: Path, cfg: RunConfig, dataset, split: Split, progress: bool, callbacks,
            resume_from, fit=None) -> RunResult:
    """Train the model of ``cfg`` on ``split``, evaluate it and write the run folder.

    ``fit(parts)``, when given, replaces the training of ``cfg.mode`` (``sigclass update``
    refits a saved model's head): it returns ``(predictor, history, summary)`` as
    :func:`~sigclass.workflows.fit.fit_headless` does."""
    if not distributed.is_main_process():
        return _execute_follower(run_dir, cfg, dataset, split, callbacks, resume_from)
    seed_everything(cfg.seed)
    save_config(cfg, run_dir / "config.yaml")
    split.save(run_dir / "split.json")
    write_json(run_dir / "data_report.json", data_report(cfg, dataset, split))
    write_json(run_dir / "run.json", {"status": "running", "started": time.time()})
    parts = split.indices(dataset)
    started = time.perf_counter()
    try:
        if fit is not None:
            predictor, history, extra = fit(parts)
        elif cfg.mode == "headless":
            predictor, history, extra = fit_headless(cfg, dataset, parts, progress)
        else:
            predictor, history, extra = fit_network(cfg, dataset, parts, run_dir, progress,
                                                    callbacks, resume_from)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        write_json(run_dir / "run.json", {"status": status, "error": repr(exc)})
        raise
    train_seconds = time.perf_counter() - started
    val_metrics = {}
    if len(parts["val"]) and cfg.mode != "headless":  # headless learns from the validation part
        val_metrics = evaluate(predictor, dataset, parts["val"], run_dir / "val")
    metrics, proba = evaluate(predictor, dataset, parts["test"], run_dir, progress=progress,
                              return_proba=True)
    metrics["train_seconds"] = train_seconds
    metrics["calibration"] = _calibration(predictor, dataset, parts["test"], proba, run_dir)
    metrics["conformal"] = _conformal(predictor, dataset, parts["test"], proba)
    metrics["ood"] = ood_test_metrics(predictor, dataset, parts["test"])
    write_json(run_dir / "metrics.json", metrics)
    predictor.drift_reference = _drift_reference(predictor, dataset, parts["test"], proba)
    predictor.info.update(_model_info(cfg, dataset, split, metrics, extra))
    predictor.save(run_dir / "model")
    if cfg.cam_examples:
        extra["cam_examples"] = write_cam_examples(predictor, dataset, parts["test"], proba,
                                                   run_dir / "cam", cfg.cam_examples,
                                                   metrics["calibration"])
    write_json(run_dir / "run.json", {"status": "finished", "train_seconds": train_seconds,
                                      "finished": time.time(), **environment_info(cfg.device),
                                      **extra})
    return RunResult(run_dir, predictor, metrics, val_metrics, cfg, history, train_seconds)


def _calibration(predictor, dataset, test, proba, run_dir: Path) -> dict[str, Any] | None:
    """ECE and Brier score on the test part (a network's before and after temperature scaling)
    and the reliability diagram ``calibration.png``."""
    if not len(test):
        return None
    index = {c: i for i, c in enumerate(predictor.classes)}
    y = np.array([index[c] for c in dataset.subset(test).labels])
    temperature = None if predictor.head is not None else predictor.temperature
    plot_reliability(proba, y, run_dir / "calibration.png", temperature)
    return calibration_metrics(proba, y, temperature)


def _drift_reference(predictor, dataset, test, proba) -> dict[str, Any] | None:
    """The test part's drift scores, which the service compares its recent inputs with."""
    if not len(test):
        return None
    return reference_scores(predictor, dataset.subset(test).model_inputs(), proba)


def _conformal(predictor, dataset, test, proba) -> dict[str, Any] | None:
    """Empirical coverage and mean size of the prediction sets on the test part, overall and
    per class."""
    if not len(test) or predictor.conformal is None:
        return None
    index = {c: i for i, c in enumerate(predictor.classes)}
    y = np.array([index[c] for c in dataset.subset(test).labels])
    return coverage_metrics(proba, y, predictor.classes, predictor.conformal)


def data_report(cfg: RunConfig, dataset, split: Split) -> dict[str, Any]:
    """``data_report.json``: the dataset's counts and problems, the split and, with
    ``cfg.audit``, the label audit."""
    report = dataset.report()
    report["split_counts"] = {name: len(split.part(name)) for name in ("train", "val", "test")}
    report["split_sources"] = split_summary(split, getattr(dataset, "predefined", None))
    if "near_duplicates" in split.checks:
        report["near_duplicates"] = split.checks["near_duplicates"]
    report["not_in_split"] = split.unused(dataset)
    if cfg.audit:
        # the features of the default headless backbone, cached by a default headless run (a
        # comparison runs it first), so every entry of a comparison shares one audit
        report["label_audit"] = audit_section(dataset, modality_of(dataset).default_model("headless"),
                                              cfg.cache_dir)
    return report


def write_cam_examples(predictor, dataset, indices, proba, out: Path, n_each: int,
                       calibration: dict[str, Any] | None = None) -> str:
    """The maps of the test part's most confident correct predictions and worst mistakes, after
    the test part's calibration and reliability diagram (``calibration.png`` of the run).

    A finished model is never lost to its pictures: a model without a map is skipped with a log
    line, and any other failure is logged and recorded in ``run.json``.

    Returns:
        ``"cam/report.html"``, or why there are none.
    """
    if not len(indices):
        return "none: the split has no test part"
    try:
        page = explain_report(predictor, dataset, indices, out, n_each=n_each, proba=proba,
                              calibration=calibration,
                              calibration_png="../calibration.png" if calibration else None)
    except ExplainError as exc:
        logger.info("No class activation maps for this model: %s", exc)
        return f"none: {exc}"
    except Exception as exc:  # noqa: BLE001 - the trained model is saved; report and go on
        logger.warning("Writing the class activation map examples failed: %r", exc, exc_info=True)
        return f"failed: {exc!r}"
    return page.relative_to(out.parent).as_posix()


def _execute_follower(run_dir: Path, cfg: RunConfig, dataset, split: Split, callbacks,
                      resume_from) -> RunResult:
    """A process other than rank 0 of a distributed run: it trains its shard and writes nothing.

    Headless mode has no training loop to share, so rank 0 does all of it alone.
    """
    seed_everything(cfg.seed)
    if cfg.mode == "headless":
        logger.info("Headless mode runs on rank 0 only; rank %d has nothing to do",
                    distributed.rank())
        return RunResult(run_dir, None, {}, {}, cfg)
    started = time.perf_counter()
    predictor, history, _ = fit_network(cfg, dataset, split.indices(dataset), run_dir,
                                        False, callbacks, resume_from)
    return RunResult(run_dir, predictor, {}, {}, cfg, history, time.perf_counter() - started)


def _model_info(cfg: RunConfig, dataset, split: Split, metrics: dict, extra: dict) -> dict[str, Any]:
    return {
        "model": cfg.model, "mode": cfg.mode, "data": cfg.data,
        "dataset_fingerprint": dataset.fingerprint(),
        "split_fingerprint": sha256_json(split.to_dict()),
        "test_metrics": {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "f1_macro")},
        **extra,
    }
