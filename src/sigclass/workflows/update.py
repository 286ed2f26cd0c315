"""A new class in seconds: refit only the head of a headless model on old and new items.

``sigclass update RUN NEW_DATA --out RUN2`` keeps the frozen featurizer of the headless model in
``RUN`` and refits what depends on its head (the head, its prediction-set threshold, the
calibration figures and the drift reference) on the features of ``RUN``'s training items, read
back from the feature cache its training filled, plus those of the items of ``NEW_DATA``: a new
class, or more examples of old ones. ``RUN``'s split is kept, so its test items are tested again;
the new items are split into train/val/test themselves (stratified, with the run's sizes and
seed), so a new class is tested too. ``RUN2`` is a run folder like any other (see
:mod:`sigclass.workflows.train`), with ``update.json``: what was added, what it changed and the
accuracy on ``RUN``'s test items before and after. With tracking on, it is a new MLflow run, and
a new version of every registered model that holds ``RUN``'s model (or of ``register``).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import write_json
from ..artifacts import ENSEMBLE, read_model_json
from ..config import RunConfig, load_config
from ..data.additions import allow_single_class
from ..data.split import Split, make_split
from ..exceptions import ArtifactError, ConfigError, DataError, TrackingError
from ..modalities import modality_of
from ..predictor import Predictor
from ..tracking import resolve_settings
from ..tracking.registry import register_run, registered_names
from .execute import RunResult
from .fit import fit_head_parts, head_parts
from .prepare import dataset_for, load_dataset
from .train import tracked_execute

logger = logging.getLogger(__name__)

__all__ = ["UPDATE_FILE", "UpdateResult", "run_dataset", "update"]

UPDATE_FILE = "update.json"  # in a run folder made by update: its base run and the items added
# what an update may change: nothing the featurizer or the saved split depends on
UPDATABLE = ("tracking", "cam_examples", "audit", "coverage", "head", "head_params", "cv_folds",
             "device", "backend", "cache_dir")
_HEAD_KEYS = ("head", "cv_folds", "best_params", "cv_accuracy", "class_weights",
              "class_weights_reason")


@dataclass
class UpdateResult(RunResult):
    """A :class:`~sigclass.workflows.execute.RunResult` with ``summary``: the contents of
    ``update.json``."""

    summary: dict[str, Any] = field(default_factory=dict)


def update(run: str | Path, new_data, out: str | Path, progress: bool = True,
           register: str | None = None, **overrides: Any) -> UpdateResult:
    """Refit the head of the headless model of ``run`` on its training items and ``new_data``.

    Args:
        run: The run folder of a headless model (made by ``sigclass train`` or ``update``).
        new_data: The items to add: a source as for ``sigclass train`` (one class is enough),
            or a dataset object of the model's modality.
        out: The new run folder; it must not exist or be empty.
        progress: Show progress bars.
        register: Register the new model under this name too (tracking on); the names that
            hold ``run``'s model get a new version anyway.
        **overrides: Settings of ``run``'s config to change, among :data:`UPDATABLE` (dotted
            keys allowed, e.g. ``{"tracking.enabled": False}``).

    Returns:
        An :class:`UpdateResult`.

    Raises:
        ArtifactError: ``run`` is not a run folder of a saved model.
        ConfigError: The model is not headless, ``out`` holds files, or an override is not
            among :data:`UPDATABLE`.
        DataError: ``new_data`` is of another modality or shape than the model.
    """
    base_dir = Path(run)
    cfg, predictor = _base_run(base_dir, overrides)
    run_dir = _check_out(out, base_dir)
    if register and not resolve_settings(cfg.tracking, cfg.data).enabled:
        raise ConfigError(f"--register '{register}' needs tracking, which is off for this update; "
                          "drop --no-track (or tracking.enabled: false), or drop --register.")
    joined, old_split, split, summary = _joined(base_dir, new_data, cfg, predictor)
    featurizer = modality_of(joined).saved_featurizer(predictor, cfg, progress)
    summary["old_test_accuracy_before"] = _accuracy(base_dir, old_split.test)
    new = Predictor(featurizer.network_, joined.classes, featurizer.data_config_,
                    modality=joined.modality, mode="headless", device=cfg.device,
                    backend=cfg.backend, engine=featurizer.engine(),
                    info={"update": {"base_run": str(base_dir.resolve()), "added": summary["added"]}})
    old_head = predictor.info.get("head") or {}
    kept = {k: v for k, v in old_head.items() if k not in _HEAD_KEYS}  # what the featurizer chose

    def refit(parts):
        fit_part, val = head_parts(joined, parts)
        return fit_head_parts(cfg, new, lambda part: featurizer.transform(part.model_inputs()),
                              fit_part, val, kept, len(parts["train"]))

    names = _registry_names(base_dir, register, cfg, summary)  # before the work: fail early
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / UPDATE_FILE, summary)  # recorded with the run; completed below
    tags = {"sigclass.kind": "update", "sigclass.base_run": str(base_dir.resolve())}
    result = tracked_execute(run_dir, cfg, joined, split, progress, (), None, refit, tags)
    summary["old_test_accuracy_after"] = _accuracy(run_dir, old_split.test)
    summary["accuracy"] = result.metrics.get("accuracy")
    summary["update_seconds"] = result.train_seconds
    summary["registered"] = _register(run_dir, names)
    write_json(run_dir / UPDATE_FILE, summary)
    return UpdateResult(result.dir, result.predictor, result.metrics, result.val_metrics,
                        result.config, result.history, result.train_seconds, summary)


def _joined(base_dir: Path, new_data, cfg: RunConfig, predictor: Predictor):
    """``(joined dataset, old split, joined split, summary)``: the base run's items and the
    new ones, checked against the model."""
    added = _read_added(new_data, cfg, predictor)
    base_data = run_dataset(base_dir, cfg)
    old_split = Split.load(base_dir / "split.json")
    old_split.indices(base_data)  # every id present and unchanged, or a clear error
    prefix = _prefix(base_dir, base_data.ids)
    joined = modality_of(base_data).join(base_data, added, prefix, _source(new_data))
    split = _joined_split(old_split, added, prefix, cfg)
    return joined, old_split, split, _summary(base_dir, new_data, prefix, base_data, added, split)


def run_dataset(run_dir: str | Path, cfg: RunConfig | None = None):
    """The dataset a run folder's split refers to: its config's data, and the items that
    ``update`` added (``update.json``), each under its id prefix."""
    run_dir = Path(run_dir)
    if cfg is None:
        cfg = RunConfig.from_dict(load_config(run_dir / "config.yaml")).validate()
    dataset = dataset_for(cfg)
    for entry in _read_update(run_dir).get("additions", []):
        with allow_single_class():
            added = load_dataset(entry["data"], dataset.modality, None, cfg.on_bad_file, 1, cfg.signal,
                                 max_file_mb=cfg.max_file_mb, follow_symlinks=cfg.follow_symlinks)
        dataset = modality_of(dataset).join(dataset, added, entry["prefix"], entry["data"])
    return dataset


def _base_run(base_dir: Path, overrides: dict[str, Any]) -> tuple[RunConfig, Predictor]:
    """The run's config (with ``overrides``) and its headless model, or a clear refusal."""
    missing = [name for name in ("config.yaml", "split.json", "model/model.json")
               if not (base_dir / name).is_file()]
    if missing:
        raise ArtifactError(
            f"'{base_dir}' is not a sigclass run folder: it has no {', '.join(missing)}. Update "
            "needs the run's config, split and model; pass the folder `sigclass train --out` made.")
    bad = sorted(k for k in overrides if k.split(".")[0] not in UPDATABLE)
    if bad:
        raise ConfigError(f"An update cannot change {', '.join(repr(k) for k in bad)}: the saved "
                          f"featurizer and split depend on it. It may change "
                          f"{', '.join(repr(k) for k in UPDATABLE)}; train a new model for the rest.")
    cfg = RunConfig.from_dict(load_config(base_dir / "config.yaml")).updated(overrides).validate()
    if read_model_json(base_dir / "model").get("kind") == ENSEMBLE:
        raise ConfigError(f"'{base_dir}' holds an ensemble of models; update refits the head of "
                          "one headless model: update a headless member's run, then build the "
                          "ensemble again.")
    predictor = Predictor.load(base_dir / "model", device=cfg.device)
    if predictor.mode != "headless" or predictor.head is None:
        raise ConfigError(
            f"'{base_dir}' holds a {predictor.mode} model; update refits only the head of a "
            "headless model (a frozen featurizer and a scikit-learn head). Train a new model on "
            f"the old and new data together (`sigclass train DATA --mode {predictor.mode}`), or "
            "start from a headless run (`--mode headless`).")
    return cfg, predictor


def _check_out(out: str | Path | None, base_dir: Path) -> Path:
    if out is None:
        raise ConfigError("An update writes a new run folder: pass --out RUN2.")
    run_dir = Path(out)
    if run_dir.resolve() == base_dir.resolve():
        raise ConfigError(f"--out '{run_dir}' is the run being updated; the update writes a new "
                          "run folder beside it, so the old model stays: choose another --out.")
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ConfigError(f"Output folder '{run_dir}' already exists and is not empty; nothing was "
                          "written to it. Choose a new --out, or empty that folder first.")
    return run_dir


def _source(new_data) -> str:
    return str(new_data) if isinstance(new_data, str | Path) else getattr(new_data, "source", "") or "new data"


def _read_added(new_data, cfg: RunConfig, predictor: Predictor):
    """The dataset of ``new_data`` (one class is enough), checked against the model's modality."""
    if isinstance(new_data, str | Path):
        with allow_single_class():
            added = load_dataset(new_data, "auto", None, cfg.on_bad_file, 1, cfg.signal,
                                 max_file_mb=cfg.max_file_mb, follow_symlinks=cfg.follow_symlinks)
    else:
        added = new_data
    if added.modality != predictor.modality:
        raise DataError(f"NEW_DATA '{_source(new_data)}' holds {added.modality} data, but the model "
                        f"takes {predictor.modality} data; add {predictor.modality} items of the "
                        "new class, or train a separate model for this data.")
    return added


def _read_update(run_dir: Path) -> dict[str, Any]:
    path = run_dir / UPDATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"'{path}' is not valid JSON ({exc}); restore it from the run.") from None


def _prefix(base_dir: Path, ids: list[str]) -> str:
    """The id prefix of this update's items: ``added1/``, ``added2/``... after the base run's."""
    n = len(_read_update(base_dir).get("additions", [])) + 1
    while any(i.startswith(f"added{n}/") for i in ids):
        n += 1
    return f"added{n}/"


def _joined_split(old: Split, added, prefix: str, cfg: RunConfig) -> Split:
    """The old split, and the new items split into train/val/test with the run's sizes."""
    drawn = make_split(added, old.val_size, old.test_size, cfg.seed)
    parts = {name: old.part(name) + [prefix + i for i in drawn.part(name)]
             for name in ("train", "val", "test")}
    hashes = {**old.hashes, **{prefix + k: v for k, v in drawn.hashes.items()}}
    sources = {name: f"{old.sources.get(name, 'drawn at random')}, and the new items' own split"
               for name in ("train", "val", "test")}
    return Split(parts["train"], parts["val"], parts["test"], old.seed, old.val_size, old.test_size,
                 hashes, old.grouped or drawn.grouped, sources)


def _summary(base_dir: Path, new_data, prefix: str, base_data, added, split: Split) -> dict[str, Any]:
    """What the update adds: new classes, more examples of old ones, confusable names."""
    old_classes = list(base_data.classes)
    counts = {str(c): int(n) for c, n in zip(*np.unique(added.labels.astype(str), return_counts=True),
                                              strict=True)}
    new_classes = [c for c in counts if c not in old_classes]
    norm = {_normal(c): c for c in old_classes}
    confusable = {c: norm[_normal(c)] for c in new_classes if _normal(c) in norm}
    known = set(base_data.content_hashes)
    duplicates = sum(h in known for h in added.content_hashes)
    notes = [f"'{c}' is a new class, though it looks like the old class '{o}'; name its folder "
             f"'{o}' to add examples of that class instead" for c, o in confusable.items()]
    extended = [c for c in counts if c in old_classes]
    if extended:
        notes.append(f"more examples of old class(es) {', '.join(extended)}")
    if duplicates:
        notes.append(f"{duplicates} new item(s) are copies of items the model was trained on")
    entry = {"data": _source(new_data), "prefix": prefix, "n_items": len(added), "counts": counts}
    return {
        "base_run": str(base_dir.resolve()), "added": entry,
        "additions": [*_read_update(base_dir).get("additions", []), entry],
        "classes_before": old_classes, "classes_after": sorted(set(old_classes) | set(counts)),
        "new_classes": new_classes, "more_examples_of": extended, "confusable_names": confusable,
        "duplicates_of_training_items": duplicates, "notes": notes,
        "split_counts": {n: len(split.part(n)) for n in ("train", "val", "test")},
        "new_items_split": {n: sum(i.startswith(prefix) for i in split.part(n))
                            for n in ("train", "val", "test")},
        "started": time.time(),
    }


def _normal(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _accuracy(run_dir: Path, ids: list[str]) -> float | None:
    """The accuracy of a run's model on the items ``ids`` of its test part, read from the
    run's ``predictions.csv`` (``None`` without one)."""
    wanted = set(ids)
    try:
        with open(run_dir / "predictions.csv", newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["id"] in wanted]
    except (OSError, KeyError):
        return None
    if not rows:
        return None
    return float(np.mean([row["label"] == row["predicted"] for row in rows]))


def _registry_names(base_dir: Path, name: str | None, cfg: RunConfig,
                    summary: dict[str, Any]) -> list[str]:
    """The registered models that get the new model as a version: those that hold the base
    run's model, and ``name``; none with tracking off."""
    if not resolve_settings(cfg.tracking, cfg.data).enabled:
        return []
    try:
        names = set(registered_names(base_dir))
    except TrackingError as exc:  # the base run's store is gone: register what was asked only
        logger.warning("Cannot read the registry of the base run: %s", exc)
        summary["notes"].append(f"the base run's registered models are unknown ({exc})")
        names = set()
    return sorted(names | ({name} if name else set()))


def _register(run_dir: Path, names: list[str]) -> list[dict]:
    done = []
    for model_name in names:
        version = register_run(run_dir, model_name)
        logger.info("Registered %s as version %s of '%s'", run_dir, version.version, model_name)
        done.append({"name": model_name, "version": int(version.version)})
    return done
