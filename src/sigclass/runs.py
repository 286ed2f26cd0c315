"""Training runs: data → split → model → train (any mode) → evaluate → save, in one folder.

A run folder holds ``config.yaml`` (resolved config), ``split.json``, ``data_report.json`` (counts,
skipped and ignored files), ``metrics.json`` (test metrics; ``val/`` holds the validation ones),
the confusion matrix (PNG, JSON), ``predictions.csv``, ``history.json`` and ``curves.png`` for
trained networks, ``cam/`` (class activation maps of the best and worst test predictions, with
``report.html``), ``checkpoints/last.pt`` while training, ``model/`` (the self-contained model)
and ``run.json`` with the status and timings.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._utils import environment_info, seed_everything, write_json
from .config import RunConfig, load_config, save_config
from .data.split import Split, make_split, min_class_size
from .exceptions import ArtifactError, ConfigError, DataError, Problem
from .scale import distributed

logger = logging.getLogger(__name__)

DEFAULT_MODELS = {
    ("image", "headless"): "efficientnet_lite2",
    ("image", "finetune"): "efficientnet_lite0",
    ("image", "scratch"): "simple_cnn_gap",
    ("signal", "headless"): "minirocket",
    ("signal", "scratch"): "fcn",
}  # there are no pretrained 1D networks: finetune on signals is refused with a suggestion


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


def load_dataset(source, modality: str = "auto", root=None, on_bad_file: str = "error",
                 min_per_class: int = 1, signal=None):
    """Load images or signals from a folder, a manifest, a file or a named dataset.

    ``signal`` holds the reading options of signal files (a ``SignalConfig`` or dict: windowing,
    length policy, column names).
    """
    from .data.sources import is_named_source, load_named

    text = str(source)
    if modality == "auto":
        modality = detect_modality(text)
    if modality == "signal":
        from .data.signals import load_signals

        return load_signals(text, on_bad_file=on_bad_file, min_per_class=min_per_class, options=signal)
    from .data.images import ImageDataset

    if is_named_source(text):
        return load_named(text, on_bad_file, min_per_class)
    path = Path(text).expanduser()
    if path.is_dir():
        return ImageDataset.from_folder(path, on_bad_file, min_per_class)
    if path.suffix.lower() == ".csv":
        return ImageDataset.from_manifest(path, root, on_bad_file, min_per_class)
    raise DataError(Problem(text, "not a folder of class subfolders, a CSV manifest or a named "
                            "dataset (elpv, elpv:binary); check the path"))


def detect_modality(source: str) -> str:
    """``signal`` for signal files and named signal datasets, else ``image``."""
    from .data.sources import is_named_source

    if is_named_source(source):
        return "image"
    lowered = source.lower()
    if lowered.split(":", 1)[0] in ("aeon", "sktime", "ucr"):
        return "signal"
    path = Path(source)
    if path.suffix.lower() in (".npz", ".ts", ".parquet", ".pq"):
        return "signal"
    if path.suffix.lower() == ".csv" and path.is_file():
        header = path.open(encoding="utf-8-sig").readline().lower().replace(" ", "").split(",")
        return "image" if "path" in header else "signal"
    if path.is_dir():
        from .data.signals import split_files

        try:
            return "signal" if split_files(path) else "image"
        except DataError:
            return "signal"  # several files for one part: load_signals names them
    return "image"


def load(path) -> Any:
    """Load a trained model from a run folder, a model folder or a ``models:/`` registry URI."""
    from .predictor import Predictor

    text = str(path)
    if text.startswith("models:/"):
        from .tracking.registry import download_model

        path = download_model(text)
    return Predictor.load(path)


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
        data: A dataset object, or a source for :func:`load_dataset`.
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
        dataset = data if not isinstance(data, str | Path) else _load_for(cfg)
        cfg = _resolve_defaults(cfg, dataset)
        run_dir = _new_run_dir(out, cfg)
        split = _resolve_split(split, cfg, dataset)
        return _tracked(run_dir, cfg, dataset, split, progress, callbacks, resume_from=None)


def _load_for(cfg: RunConfig):
    need = min_class_size(cfg.val_size, cfg.test_size)
    extra = {part: source for part, source in (("val", cfg.val_dir), ("test", cfg.test_dir)) if source}
    if not extra:
        return load_dataset(cfg.data, cfg.modality, cfg.root, cfg.on_bad_file, need, cfg.signal)
    return load_parts(cfg.data, extra, cfg.modality, cfg.root, cfg.on_bad_file, cfg.signal)


def load_parts(data, extra: dict[str, str], modality: str = "auto", root=None,
               on_bad_file: str = "error", signal=None):
    """The training pool ``data`` and the parts given apart (``{"val"|"test": source}``, as
    ``--val-dir``/``--test-dir``) as one dataset whose given parts are a predefined split."""
    train_set = load_dataset(data, modality, root, on_bad_file, 1 + ("val" not in extra), signal)
    if getattr(train_set, "predefined", None) is not None or getattr(train_set, "fixed_test", None):
        raise ConfigError(f"'{data}' already holds a split of its own (split folders, a 'split' "
                          "column or a benchmark's train/test files); drop --val-dir/--test-dir, "
                          "or point DATA at its training part only.")
    parts = {"train": train_set}
    for part, source in extra.items():
        parts[part] = load_dataset(source, train_set.modality, None, on_bad_file, 1, signal)
    sources = {"train": f"'{data}'", **{part: f"'{source}' (--{part}-dir)" for part, source in extra.items()}}
    if train_set.modality == "signal":
        from .data.signals import merge_parts
    else:
        from .data.image_parts import merge_image_parts as merge_parts
    return merge_parts(parts, sources, str(data))


def _resolve_defaults(cfg: RunConfig, dataset) -> RunConfig:
    if cfg.modality == "auto":
        cfg = cfg.updated({"modality": dataset.modality})
    if cfg.modality != dataset.modality:
        raise ConfigError(f"The 'modality' option says {cfg.modality!r} but the data is {dataset.modality!r}.")
    if cfg.modality == "signal":
        from .training.signal_headless import check_signal_mode

        check_signal_mode(cfg.mode, cfg.model)
    if cfg.model is None:
        cfg = cfg.updated({"model": DEFAULT_MODELS[(cfg.modality, cfg.mode)]})
    if cfg.mode == "scratch":
        cfg = cfg.updated({"pretrained": False})
    return cfg


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


def _resolve_split(split, cfg: RunConfig, dataset) -> Split:
    if split is None and cfg.split:
        split = cfg.split
    if isinstance(split, str | Path):
        split = Split.load(split)
    from .data.leakage import check_leakage, keep_together, near_duplicate_groups

    near = near_duplicate_groups(dataset, cfg.near_duplicates)
    kept: dict[str, int] = {}
    if split is None:
        split = make_split(dataset, cfg.val_size, cfg.test_size, cfg.seed,
                           fixed_test=getattr(dataset, "fixed_test", None))
        if not getattr(dataset, "predefined", None) and getattr(dataset, "fixed_test", None) is None:
            kept = keep_together(split, dataset, near)  # each near-duplicate group to one part
    split.indices(dataset)  # every id present and unchanged, or a clear error
    split.checks["near_duplicates"] = check_leakage(split, dataset, cfg.on_leak,
                                                    cfg.near_duplicates, groups=near)
    if split.checks["near_duplicates"] is not None:
        split.checks["near_duplicates"].update(kept)
    return split


def split_summary(split: Split, predefined=None) -> list[str]:
    """Lines saying where each part came from, e.g. ``"test = the folder val/ (26 items)"``."""
    lines = [f"{name} = {split.sources.get(name, 'drawn at random')} ({len(split.part(name))} items)"
             for name in ("train", "val", "test")]
    lines += list(predefined.notes) if predefined is not None else []
    if "near_duplicates" in split.checks:
        from .data.leakage import describe

        lines.append(describe(split.checks["near_duplicates"]))
    return lines


def _resume(out, data, progress: bool, callbacks: tuple) -> RunResult:
    if out is None:
        raise ConfigError("--resume needs the run folder (--out) of the run to continue.")
    run_dir = Path(out)
    if not (run_dir / "config.yaml").is_file():
        raise ArtifactError(f"Cannot resume '{run_dir}': it has no config.yaml; it is not a run folder.")
    cfg = RunConfig.from_dict(load_config(run_dir / "config.yaml")).validate()
    with distributed.process_group(cfg.device):
        status = _read_status(run_dir)
        if status.get("status") == "finished":
            logger.info("Run '%s' already finished; loading it", run_dir)
        dataset = data if not isinstance(data, str | Path | None) else _load_for(cfg)
        split = Split.load(run_dir / "split.json")
        split.indices(dataset)
        checkpoint = run_dir / "checkpoints" / "last.pt"
        return _tracked(run_dir, cfg, dataset, split, progress, callbacks,
                        resume_from=checkpoint if checkpoint.is_file() else None)


def _read_status(run_dir: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _tracked(run_dir: Path, cfg: RunConfig, dataset, split: Split, progress: bool, callbacks,
             resume_from) -> RunResult:
    """:func:`_execute` recorded in MLflow (unless tracking is off); the store is checked first."""
    from .tracking import tracking_run

    if not distributed.is_main_process():  # one MLflow run per distributed run: rank 0's
        return _execute(run_dir, cfg, dataset, split, progress, callbacks, resume_from)
    with tracking_run(cfg, run_dir, dataset) as record:
        result = _execute(run_dir, cfg, dataset, split, progress, (*callbacks, *record.callbacks()),
                          resume_from)
        record.finish(result)
    return result


def _execute(run_dir: Path, cfg: RunConfig, dataset, split: Split, progress: bool, callbacks,
             resume_from) -> RunResult:
    from .evaluation.metrics import evaluate

    if not distributed.is_main_process():
        return _execute_follower(run_dir, cfg, dataset, split, callbacks, resume_from)
    seed_everything(cfg.seed)
    save_config(cfg, run_dir / "config.yaml")
    split.save(run_dir / "split.json")
    report = dataset.report()
    report["split_counts"] = {name: len(split.part(name)) for name in ("train", "val", "test")}
    report["split_sources"] = split_summary(split, getattr(dataset, "predefined", None))
    if "near_duplicates" in split.checks:
        report["near_duplicates"] = split.checks["near_duplicates"]
    report["not_in_split"] = split.unused(dataset)
    if cfg.audit:
        from .audit import audit_section

        # the features of the default headless backbone, cached by a default headless run (a
        # comparison runs it first), so every entry of a comparison shares one audit
        report["label_audit"] = audit_section(dataset, DEFAULT_MODELS[("image", "headless")],
                                              cfg.cache_dir)
    write_json(run_dir / "data_report.json", report)
    write_json(run_dir / "run.json", {"status": "running", "started": time.time()})
    parts = split.indices(dataset)
    started = time.perf_counter()
    try:
        if cfg.mode == "headless":
            predictor, history, extra = _train_headless(cfg, dataset, parts, progress)
        else:
            predictor, history, extra = _train_network(cfg, dataset, parts, run_dir, progress,
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
    write_json(run_dir / "metrics.json", metrics)
    predictor.info.update(_model_info(cfg, dataset, split, metrics, extra))
    predictor.save(run_dir / "model")
    if cfg.cam_examples:
        extra["cam_examples"] = _write_cam_examples(predictor, dataset, parts["test"], proba,
                                                    run_dir / "cam", cfg.cam_examples)
    write_json(run_dir / "run.json", {"status": "finished", "train_seconds": train_seconds,
                                      "finished": time.time(), **environment_info(cfg.device),
                                      **extra})
    return RunResult(run_dir, predictor, metrics, val_metrics, cfg, history, train_seconds)


def _write_cam_examples(predictor, dataset, indices, proba, out: Path, n_each: int) -> str:
    """The maps of the test part's most confident correct predictions and worst mistakes.

    A finished model is never lost to its pictures: a model without a map is skipped with a log
    line, and any other failure is logged and recorded in ``run.json``.

    Returns:
        ``"cam/report.html"``, or why there are none.
    """
    from .exceptions import ExplainError
    from .explain.report import explain_report

    if not len(indices):
        return "none: the split has no test part"
    try:
        page = explain_report(predictor, dataset, indices, out, n_each=n_each, proba=proba)
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
    predictor, history, _ = _train_network(cfg, dataset, split.indices(dataset), run_dir,
                                           False, callbacks, resume_from)
    return RunResult(run_dir, predictor, {}, {}, cfg, history, time.perf_counter() - started)


def _model_info(cfg: RunConfig, dataset, split: Split, metrics: dict, extra: dict) -> dict[str, Any]:
    from ._utils import sha256_json

    return {
        "model": cfg.model, "mode": cfg.mode, "data": cfg.data,
        "dataset_fingerprint": dataset.fingerprint(),
        "split_fingerprint": sha256_json(split.to_dict()),
        "test_metrics": {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "f1_macro")},
        **extra,
    }


def _train_headless(cfg: RunConfig, dataset, parts, progress: bool):
    from .predictor import Predictor
    from .training.headless import Featurizer, fit_head
    from .training.schedule import head_class_weight

    # Cross-validation on the training data picks the head's regularization, so the validation
    # part is not needed for model selection: the head learns from both.
    # A validation part the user set aside themselves (a val/ folder, --val-dir) is not trained on.
    predefined = getattr(dataset, "predefined", None)
    user_val = predefined is not None and "val" in predefined.parts
    fit_part = dataset.subset(parts["train"] if user_val else np.concatenate([parts["train"], parts["val"]]))
    if dataset.modality == "signal":
        from .training.signal_headless import make_signal_featurizer

        # Unlike a frozen image network, MiniRocket is fitted, on the training cases only.
        featurizer = make_signal_featurizer(cfg, progress).fit(fit_part)
    else:
        featurizer = Featurizer(cfg.model, cfg.pretrained, cfg.weights, cfg.image_size, cfg.resize,
                                cfg.crop_pct, cfg.tta, cfg.train.forward_batch_size, cfg.backend,
                                cfg.cache_dir, cfg.device, progress, cfg.pooling)
        featurizer.fit(fit_part.model_inputs(), fit_part.labels)  # tta "auto" looks at the data
    features = featurizer.transform(fit_part.model_inputs())
    params = dict(cfg.head_params)
    class_weight, reason = head_class_weight(cfg.train.class_weights, fit_part.labels)
    if class_weight is not None:  # the same option as for networks
        params.setdefault("class_weight", class_weight)
    logger.info("Class weights of the head: %s", reason if class_weight is not None else f"none, {reason}")
    head, summary = fit_head(cfg.head, features, fit_part.labels, cfg.cv_folds, cfg.seed, params)
    summary = {**summary, "class_weights": class_weight, "class_weights_reason": reason}
    if dataset.modality == "image":
        summary.update(tta=featurizer.tta_, tta_scores=featurizer.tta_scores_,
                       pooling=featurizer.network_.model_spec["kwargs"].get("feature_pool", "final"))
    predictor = Predictor(featurizer.network_, dataset.classes, featurizer.data_config_,
                          modality=dataset.modality, mode="headless", head=head,
                          device=cfg.device, backend=cfg.backend, engine=featurizer.engine())
    return predictor, [], {"head": summary}


def _train_network(cfg: RunConfig, dataset, parts, run_dir: Path, progress: bool, callbacks,
                   resume_from):
    from .evaluation.plots import plot_training_curves
    from .predictor import Predictor
    from .training.trainer import Trainer

    network, data_config = build_network(cfg, dataset, parts["train"])
    sized = None
    if dataset.modality == "image":
        sized = _budget_image_size(cfg, network, data_config, len(parts["train"]))
    if sized is not None:
        data_config = sized["data_config"]
    augment = cfg.signal_augment if dataset.modality == "signal" else cfg.augment
    masks = {"masks": cfg.masks} if cfg.masks else {}  # guided training: blank masked areas
    if masks and dataset.modality != "image":
        raise ConfigError("The 'masks' option blanks areas of images; signal data takes no masks.")
    train_set = dataset.subset(parts["train"]).to_torch(data_config, augment, **masks)
    val_set = dataset.subset(parts["val"] if len(parts["val"]) else parts["train"]).to_torch(data_config)
    trainer = Trainer(network, cfg.train, cfg.mode, cfg.device, list(callbacks),
                      checkpoint_dir=run_dir / "checkpoints", seed=cfg.seed, progress=progress)
    trainer.fit(train_set, val_set, resume=resume_from)
    if distributed.is_main_process():
        write_json(run_dir / "history.json", trainer.history_)
        plot_training_curves(trainer.history_, run_dir / "curves.png")
    predictor = Predictor(trainer.network.cpu(), dataset.classes, data_config,
                          modality=dataset.modality, mode=cfg.mode, device=cfg.device)
    extra = trainer.summary()  # the plan (epochs_planned, selection, class weights) and its outcome
    if sized is not None:
        extra.update(image_size=data_config["input_size"][-1], image_size_reason=sized["reason"])
    return predictor, trainer.history_, extra


def _budget_image_size(cfg: RunConfig, network, data_config, n_train: int) -> dict | None:
    """Fine-tuning images with no image size given and a time budget: the input size at which the
    minimum number of epochs fits the budget (see
    :func:`~sigclass.training.schedule.budget_image_size`); ``None`` when the rule does not
    apply. On a CPU, EfficientNet-Lite0 at 224 px fits 2 epochs of ELPV in 5 minutes."""
    from .data.transforms import image_data_config
    from .training.schedule import DEFAULT_MINUTES, budget_image_size, resolve_batch_size
    from .training.trainer import time_training_step

    train = cfg.train
    minutes = DEFAULT_MINUTES["image"] if train.max_minutes == "auto" else train.max_minutes
    if cfg.mode != "finetune" or cfg.image_size or train.epochs != "auto" or not minutes:
        return None
    batch = resolve_batch_size(train.batch_size, n_train)
    native = int(data_config["input_size"][-1])
    step = time_training_step(network, tuple(data_config["input_size"]), batch, cfg.device)
    size, reason = budget_image_size(native, step, math.ceil(n_train / batch), float(minutes),
                                     train.min_epochs)
    size, reason = distributed.broadcast_object((size, reason))  # every process trains one size
    logger.info("Image size: %s", reason)
    if size == native:
        return None
    tta = "none" if cfg.tta == "auto" else cfg.tta
    return {"data_config": image_data_config(network, size, cfg.resize, cfg.crop_pct, tta),
            "reason": reason}


def build_network(cfg: RunConfig, dataset, train_indices):
    """The network of a run and the preprocessing stored with it."""
    from .models import create_model, model_entry

    kwargs = dict(cfg.model_args)
    if dataset.modality == "image":
        from .data.transforms import image_data_config

        entry = model_entry(cfg.model)
        if cfg.image_size and entry is not None and not entry.has_pretrained:
            kwargs.setdefault("input_size", cfg.image_size)
        network = create_model(cfg.model, n_classes=len(dataset.classes), pretrained=cfg.pretrained,
                               weights=cfg.weights, **kwargs)
        tta = "none" if cfg.tta == "auto" else cfg.tta  # a network's views: only when asked for
        return network, image_data_config(network, cfg.image_size, cfg.resize, cfg.crop_pct, tta)
    from .data.signals import signal_data_config

    data_config = signal_data_config(dataset, train_indices)
    network = create_model(cfg.model, n_classes=len(dataset.classes), pretrained=cfg.pretrained,
                           in_chans=data_config["n_channels"], weights=cfg.weights,
                           n_timepoints=data_config["n_timepoints"], **kwargs)
    return network, data_config
