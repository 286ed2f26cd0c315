"""Training, evaluating and saving an object detector: :func:`train_detection`.

The run folder holds what a classification run holds where it applies: ``config.yaml`` (the
resolved settings), ``data_report.json`` (images read, left out, boxes clipped), ``split.json``
(image ids per part), ``history.json`` (per epoch: losses, val mAP), ``metrics.json`` (COCO
metrics on the test part, or on the validation part when there is no test part) and ``model/``
(:class:`~sigclass.detector.DetectionPredictor`). With tracking on, MLflow records the run as
it records a classification run (:mod:`sigclass.tracking.record`): the settings, every epoch,
the test metrics (``test_map``, ``test_map_50``, ...), the run folder's files and the model as an
MLflow model, so that ``sigclass register RUN --name NAME`` and ``models:/NAME@ALIAS`` work for
a detector as for a classifier; ``--resume`` continues the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .._utils import write_json
from ..config import RunConfig, load_config
from ..data.detection import DetectionDataset, detect_layout
from ..detector import BOX_COLUMNS, DetectionPredictor
from ..exceptions import ArtifactError, ConfigError
from ..models.detection import DEFAULT_BACKBONE, DEFAULT_SIZE, build_detector
from ..tracking.record import tracking_run
from ..training.detection import (
    MIN_AUTO_SIZE,
    TARGET_EPOCHS,
    DetectionTrainer,
    detection_minutes,
    time_detection_step,
)
from .predict_files import RowFormat

logger = logging.getLogger(__name__)

RUN_JSON = "run.json"  # {"task": "detection", "status": "running" | "finished"}
#: The rows of ``sigclass predict`` on a detector: one per box, or one per image without a box.
BOX_OUTPUT = RowFormat((*BOX_COLUMNS, "error"), key="path", text=("path", "error"),
                       nullable=("label",), grouped=True)

__all__ = ["DetectionRun", "evaluate_box_data", "evaluate_detector", "is_detection_data",
           "is_detection_run", "predict_box_files", "train_detection"]


@dataclass
class DetectionRun:
    """A finished detection run: its folder, predictor and test metrics."""

    dir: Path
    predictor: DetectionPredictor
    metrics: dict[str, Any]


def is_detection_data(source) -> bool:
    """Whether ``source`` is laid out as a detection dataset (VOC, COCO or a box CSV)."""
    try:
        return detect_layout(source) is not None
    except OSError:
        return False


def evaluate_detector(predictor: DetectionPredictor, dataset: DetectionDataset,
                      batch_size: int = 4, max_detections: int = 100,
                      report: str | Path | None = None) -> dict[str, Any]:
    """COCO metrics of ``predictor`` on every image of ``dataset`` (classes by name); with
    ``report``, that folder gets the precision-recall curves and the page of the worst and best
    images (:func:`~sigclass.evaluation.detection_report.write_detection_report`)."""
    from ..data.detection_torch import read_rgb
    from ..evaluation.detection import detection_metrics

    index = {name: i + 1 for i, name in enumerate(predictor.classes)}
    predictions, truth = [], []
    for start in range(0, len(dataset), batch_size):
        items = dataset.items[start:start + batch_size]
        images = [read_rgb(item.path).float().div(255) for item in items]
        found = predictor.detect(images, score_threshold=0.0, max_detections=max_detections)
        predictions += [{"boxes": f["boxes"], "labels": f["label_ids"], "scores": f["scores"]}
                        for f in found]
        truth += [{"boxes": item.boxes, "labels": [index[name] for name in item.labels]}
                  for item in items]
    metrics = detection_metrics(predictions, truth, predictor.classes, max_detections,
                                curves=report is not None)
    if report is not None:
        from ..evaluation.detection_report import write_detection_report

        write_detection_report(report, [item.path for item in dataset.items], predictions, truth,
                               predictor.classes, metrics)
    return metrics


def train_detection(data: str | Path | None, out: str | Path | None = None,
                    config: RunConfig | None = None, progress: bool = True,
                    resume: bool = False) -> DetectionRun:
    """Train a detector on ``data``, evaluate it on the test part and save it in ``out``.

    The settings used from ``config``: ``model`` (the backbone, ``efficientnet_lite0`` by
    default), ``pretrained``, ``image_size`` (shorter side, 512 by default), ``model_args``
    (``arch``: ``fasterrcnn``/``retinanet``/``fcos``; ``scale_jitter``), ``train`` (epochs,
    max_minutes, batch size, lr, patience), ``on_bad_file``, ``val_size``/``test_size``/``seed``
    (when the data has no split of its own), ``device`` and ``tracking``.

    ``resume=True`` continues the interrupted run in ``out`` from its last checkpoint, with the
    settings and split saved there (``data`` and ``config`` are not used).
    """
    if resume:
        run_dir, cfg = _resumed(out)
        data = cfg.data
    else:
        cfg = (config or RunConfig()).updated({"data": str(data)})
        run_dir = _new_run_dir(out, cfg)
    backbone = cfg.model or DEFAULT_BACKBONE
    arch = str(cfg.model_args.get("arch", "fasterrcnn"))
    dataset = DetectionDataset.load(data, cfg.on_bad_file, max_file_mb=cfg.max_file_mb,
                                    follow_symlinks=cfg.follow_symlinks)
    sizing: dict[str, Any] = {}
    if resume:
        parts = _saved_split(run_dir, dataset)
    else:
        write_json(run_dir / "data_report.json", dataset.report())
        parts = dataset.split(cfg.val_size, cfg.test_size, cfg.seed)
        write_json(run_dir / "split.json",
                   {p: [dataset.items[i].key for i in idx] for p, idx in parts.items()})
        sizing = _budget_size(cfg, dataset.subset(parts["train"]), backbone, arch)
        cfg = cfg.updated({"image_size": sizing["image_size"]}) if sizing else cfg
        (run_dir / "config.yaml").write_text(_yaml(cfg.to_dict()))
    write_json(run_dir / RUN_JSON, {"task": "detection", "status": "running"})
    network = build_detector(len(dataset.classes), backbone=backbone, arch=arch,
                             pretrained=cfg.pretrained and not resume,
                             image_size=cfg.image_size or DEFAULT_SIZE,
                             scale_jitter=float(cfg.model_args.get("scale_jitter", 0.2)))
    train_set = dataset.subset(parts["train"]).to_torch(train=True)
    val_set = dataset.subset(parts["val"]).to_torch(train=False)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    with tracking_run(cfg, run_dir, nested=True) as record:
        record.run.set_tags(detection_tags(backbone, arch))
        trainer = DetectionTrainer(network, cfg.train, device=cfg.device,
                                   callbacks=list(record.callbacks()),
                                   checkpoint_dir=run_dir / "checkpoints", seed=cfg.seed,
                                   progress=progress)
        trainer.fit(train_set, val_set, resume=checkpoint if resume and checkpoint.is_file() else None)
        logger.info("Training plan: %s", trainer.describe_plan())
        write_json(run_dir / "history.json", trainer.history_)
        predictor = DetectionPredictor(trainer.network.cpu(), dataset.classes, network.data_config,
                                       device=cfg.device)
        part = "test" if len(parts["test"]) else "val"
        metrics = evaluate_detector(predictor, dataset.subset(parts[part]), report=run_dir / "report")
        metrics = {"part": part, **metrics}
        write_json(run_dir / "metrics.json", metrics)
        predictor.info = {"task": "detection", "backbone": backbone, "arch": arch,
                          "data": str(data), "classes_boxes": dataset.n_boxes(),
                          "training": {**trainer.summary(), **sizing, "device": trainer.device_.type},
                          "metrics": {k: metrics[k] for k in ("map", "map_50", "map_75", "part")}}
        predictor.save(run_dir / "model")
        write_json(run_dir / RUN_JSON, {"task": "detection", "status": "finished"})
        # the model folder as an MLflow model (registrable), the run folder's files as artifacts
        record.finish(SimpleNamespace(metrics=metrics, val_metrics={},
                                      predictor=predictor))
    return DetectionRun(run_dir, predictor, metrics)


def _budget_size(cfg: RunConfig, train_part: DetectionDataset, backbone: str,
                 arch: str) -> dict[str, Any]:
    """The automatic shorter side: the data's own (the median image's, at most
    :data:`DEFAULT_SIZE`), made smaller, down to
    :data:`~sigclass.training.detection.MIN_AUTO_SIZE`, when
    :data:`~sigclass.training.detection.TARGET_EPOCHS` would not fit the time budget, from one
    training step timed on real images (``{}`` when the size or the epochs are given)."""
    from ..training.schedule import IMAGE_SIZE_MULTIPLE, budget_image_size

    minutes = detection_minutes(cfg.train)
    if cfg.image_size or cfg.train.epochs != "auto" or not minutes or not len(train_part):
        return {}
    shorter = int(np.median([min(item.width, item.height) for item in train_part.items]))
    native = max(IMAGE_SIZE_MULTIPLE, min(DEFAULT_SIZE, shorter // IMAGE_SIZE_MULTIPLE * IMAGE_SIZE_MULTIPLE))
    batch = 4 if cfg.train.batch_size == "auto" else int(cfg.train.batch_size)
    probe = build_detector(len(train_part.classes), backbone=backbone, arch=arch,
                           pretrained=False, image_size=native)
    torch_part = train_part.to_torch(train=True)
    images, targets = zip(*(torch_part[i] for i in range(min(batch, len(torch_part)))), strict=True)
    step = time_detection_step(probe, list(images), list(targets), cfg.device)
    size, reason = budget_image_size(native, step, max(1, len(train_part) // batch), minutes,
                                     TARGET_EPOCHS, min_size=min(native, MIN_AUTO_SIZE))
    logger.info("Image size: %s", reason)
    return {"image_size": size, "image_size_reason": reason}


def detection_tags(backbone: str, arch: str) -> dict[str, str]:
    """MLflow tags of a detection run (``mode`` reads ``detection`` in ``sigclass models``)."""
    return {"sigclass.task": "detection", "sigclass.mode": "detection",
            "sigclass.model": backbone, "sigclass.arch": arch}


def is_detection_run(folder: str | Path | None) -> bool:
    """Whether ``folder`` is the run folder of a detection training."""
    try:
        return json.loads((Path(folder) / RUN_JSON).read_text()).get("task") == "detection"
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def _new_run_dir(out, cfg: RunConfig) -> Path:
    backbone = cfg.model or DEFAULT_BACKBONE
    arch = str(cfg.model_args.get("arch", "fasterrcnn"))
    run_dir = Path(out) if out else Path("runs") / (
        f"detect-{arch}-{backbone}-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"Run folder '{run_dir}' already exists and is not empty. Use --resume "
                          "to continue it, or choose another --out.")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _resumed(out) -> tuple[Path, RunConfig]:
    if out is None or not (Path(out) / "config.yaml").is_file():
        raise ConfigError(f"Cannot resume: '{out}' is not a detection run folder (no config.yaml); "
                          "pass the --out of the run to continue.")
    return Path(out), RunConfig.from_dict(load_config(Path(out) / "config.yaml"))


def _saved_split(run_dir: Path, dataset: DetectionDataset) -> dict[str, Any]:
    saved = json.loads((run_dir / "split.json").read_text())
    position = {key: i for i, key in enumerate(dataset.ids)}
    missing = sorted(k for keys in saved.values() for k in keys if k not in position)
    if missing:
        raise ArtifactError(f"Cannot resume '{run_dir}': {len(missing)} image(s) of its split.json "
                            f"are no longer usable in the data (e.g. {missing[0]}).")
    return {part: np.array([position[k] for k in keys], dtype=np.int64) for part, keys in saved.items()}


def evaluate_box_data(predictor: DetectionPredictor, data, part: str | None = None,
                      out: str | Path | None = None, on_bad_file: str = "error",
                      **file_options) -> dict[str, Any]:
    """COCO metrics of ``predictor`` on detection data: its predefined ``part`` (``test`` by
    default) when it has a split of its own, else every image; ``out/metrics.json`` if given.
    A label that is not one of the model's classes is a problem of the data."""
    dataset = DetectionDataset.load(data, on_bad_file, classes=predictor.classes, **file_options)
    part = part or "test"
    chosen = "all"
    if dataset.parts:
        indices = dataset.split()[part]
        if len(indices):
            dataset, chosen = dataset.subset(indices), part
    report = None if out is None else Path(out) / "report"
    metrics = {"part": chosen, **evaluate_detector(predictor, dataset, report=report)}
    if out is not None:
        write_json(Path(out) / "metrics.json", metrics)
    return metrics


def predict_box_files(predictor: DetectionPredictor, inputs, output: str | Path,
                      score_threshold: float | None = None, max_detections: int | None = None,
                      batch_size: int = 8, progress: bool = False) -> int:
    """Boxes of image files and folders (searched recursively) written to ``output``, one row
    per box (``path, xmin, ymin, xmax, ymax, label, score, error``); returns the number of boxes
    written by this call.

    The output is streamed and resumed as a classifier's
    (:func:`~sigclass.workflows.predict_files.stream_rows`): ``.csv``, ``.parquet``, ``.json``
    (records) or ``.jsonl``, written ``batch_size`` images at a time; a run interrupted and
    started again with the same command scores only the images it had not finished. An image
    with no box above ``score_threshold`` gets one row with empty box fields (null in Parquet
    and JSON); an image that cannot be read gets one row with its ``error``, and the others are
    scored.
    """
    from ..data.image_files import expand_image_inputs
    from ..detector import box_rows
    from .predict_files import rows_or_errors, stream_rows

    threshold = 0.05 if score_threshold is None else score_threshold
    limit = 100 if max_detections is None else max_detections
    if not 0 <= threshold <= 1:  # bad options stop the command before any output
        raise ConfigError(f"The score threshold must be in [0, 1]. Got {threshold}.")
    if limit < 1 or batch_size < 1:
        raise ConfigError(f"max_detections and the batch size must be at least 1. Got "
                          f"{limit} and {batch_size}.")
    paths = expand_image_inputs(inputs)
    boxes = 0

    def detect(chunk: list[str]) -> list[dict]:
        found = predictor.predict_boxes(chunk, threshold, limit, batch_size)
        return [{**row, "error": ""} for path, image in zip(chunk, found, strict=True)
                for row in box_rows(path, image)]

    def rows_of(chunk: list[str]) -> list[dict]:
        nonlocal boxes
        rows = rows_or_errors(chunk, detect, key="path")
        boxes += sum(1 for row in rows if row.get("label"))
        return rows

    stream_rows(output, paths, BOX_OUTPUT, rows_of, batch_size, progress, unit="image")
    return boxes


def _yaml(values: dict) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)
