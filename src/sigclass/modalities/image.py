"""Images: folders of class subfolders, CSV manifests and named datasets; pretrained CNNs."""

from __future__ import annotations

import base64
import logging
import math
from pathlib import Path
from typing import Any

from ..choices import MODES
from ..config import Entry, RunConfig
from ..data.file_checks import DEFAULT_MAX_FILE_MB
from ..data.image_files import read_image_inputs
from ..data.image_parts import join_image_datasets, merge_image_parts
from ..data.image_preprocess import ImagePreprocessor, image_data_config
from ..data.images import ImageDataset
from ..data.sources import is_named_source, load_named
from ..exceptions import DataError, Problem
from ..models import create_model, model_entry
from ..training import distributed
from ..training.image_featurizer import Featurizer
from ..training.schedule import Budget, budget_image_size, resolve_batch_size, time_training_step
from .base import Modality
from .drawing import render_image
from .image_lean import LeanImage

logger = logging.getLogger(__name__)


class ImageModality(LeanImage, Modality):
    """Image files (JPEG, PNG, BMP, TIFF, WebP), any size and colour mode; uploads are read as
    :class:`~sigclass.modalities.image_lean.LeanImage` reads them."""

    modes = MODES
    default_models = {"headless": "efficientnet_lite2", "finetune": "efficientnet_lite0",
                      "scratch": "simple_cnn_gap"}
    budget = Budget(steps=400, minutes=5.0)
    map_ndim = 2
    tune_heads = ("logreg", "linear_svm", "rbf_svm", "ridge")
    tunes_augmentation = True

    def claims(self, source: str) -> bool:
        """Named image datasets (``elpv``); folders and manifests are what no modality claims."""
        return is_named_source(source)

    def load(self, source, root=None, on_bad_file: str = "error", min_per_class: int = 1,
             options=None, *, max_file_mb: float = DEFAULT_MAX_FILE_MB,
             follow_symlinks: bool = False) -> ImageDataset:
        text = str(source)
        if is_named_source(text):
            return load_named(text, on_bad_file, min_per_class)
        path = Path(text).expanduser()
        if path.is_dir():
            return ImageDataset.from_folder(path, on_bad_file, min_per_class, max_file_mb=max_file_mb,
                                            follow_symlinks=follow_symlinks)
        if path.suffix.lower() == ".csv":
            return ImageDataset.from_manifest(path, root, on_bad_file, min_per_class,
                                              max_file_mb=max_file_mb, follow_symlinks=follow_symlinks)
        raise DataError(Problem(text, "not a folder of class subfolders, a CSV manifest or a named "
                                "dataset (elpv, elpv:binary); check the path"))

    def merge_parts(self, parts, sources, where) -> ImageDataset:
        return merge_image_parts(parts, sources, where)

    def read_files(self, files, data_config) -> dict[str, Any]:
        return read_image_inputs(files)

    def preprocessor(self, data_config) -> ImagePreprocessor:
        return ImagePreprocessor(data_config)

    def network(self, cfg: RunConfig, dataset, train_indices):
        kwargs = dict(cfg.model_args)
        entry = model_entry(cfg.model)
        if cfg.image_size and entry is not None and not entry.has_pretrained:
            kwargs.setdefault("input_size", cfg.image_size)
        network = create_model(cfg.model, n_classes=len(dataset.classes), pretrained=cfg.pretrained,
                               weights=cfg.weights, **kwargs)
        tta = "none" if cfg.tta == "auto" else cfg.tta  # a network's views: only when asked for
        return network, image_data_config(network, cfg.image_size, cfg.resize, cfg.crop_pct, tta)

    def fit_to_budget(self, cfg: RunConfig, network, data_config, n_train: int):
        """Fine-tuning with no image size given and a time budget: the input size at which the
        minimum number of epochs fits the budget (see
        :func:`~sigclass.training.schedule.budget_image_size`). On a CPU, EfficientNet-Lite0 at
        224 px fits 2 epochs of ELPV in 5 minutes."""
        train = cfg.train
        minutes = self.budget.minutes if train.max_minutes == "auto" else train.max_minutes
        if cfg.mode != "finetune" or cfg.image_size or train.epochs != "auto" or not minutes:
            return data_config, {}
        batch = resolve_batch_size(train.batch_size, n_train)
        native = int(data_config["input_size"][-1])
        step = time_training_step(network, tuple(data_config["input_size"]), batch, cfg.device)
        size, reason = budget_image_size(native, step, math.ceil(n_train / batch), float(minutes),
                                         train.min_epochs)
        size, reason = distributed.broadcast_object((size, reason))  # every process trains one size
        logger.info("Image size: %s", reason)
        if size == native:
            return data_config, {}
        tta = "none" if cfg.tta == "auto" else cfg.tta
        return (image_data_config(network, size, cfg.resize, cfg.crop_pct, tta),
                {"image_size": size, "image_size_reason": reason})

    def training_set(self, dataset, data_config, cfg: RunConfig):
        masks = {"masks": cfg.masks} if cfg.masks else {}  # guided training: blank masked areas
        return dataset.to_torch(data_config, cfg.augment, **masks)

    def featurizer(self, cfg: RunConfig, progress: bool = False) -> Featurizer:
        return Featurizer(cfg.model, cfg.pretrained, cfg.weights, cfg.image_size, cfg.resize,
                          cfg.crop_pct, cfg.tta, cfg.train.forward_batch_size, cfg.backend,
                          cfg.cache_dir, cfg.device, progress, cfg.pooling)

    def fit_featurizer(self, featurizer: Featurizer, part) -> Featurizer:
        return featurizer.fit(part.model_inputs(), part.labels)  # tta "auto" looks at the data

    def featurizer_summary(self, featurizer: Featurizer) -> dict[str, Any]:
        return {"tta": featurizer.tta_, "tta_scores": featurizer.tta_scores_,
                "pooling": featurizer.network_.model_spec["kwargs"].get("feature_pool", "final")}

    def saved_featurizer(self, predictor, cfg: RunConfig, progress: bool = False) -> Featurizer:
        """Its features of image files come from the feature cache that training filled (the
        same network, weights and preprocessing key it)."""
        return Featurizer.from_network(predictor.network, predictor.data_config, cfg.model,
                                       cfg.cache_dir, cfg.train.forward_batch_size, cfg.backend,
                                       cfg.device, progress)

    def join(self, base, added, prefix: str, where: str) -> ImageDataset:
        # images of any size and colour mode fit: the model's preprocessing resizes and converts
        return join_image_datasets(base, added, prefix)

    def default_entries(self) -> list[Entry]:
        """The three modes with their default networks and the non-deep baseline (HOG + LBP
        features, an SVM head), which a time limit runs last."""
        return [Entry("headless", "headless"), Entry("finetune", "finetune"),
                Entry("scratch", "scratch"),
                Entry("hog_lbp_svm", "headless", "hog_lbp", {"head": "rbf_svm"}, run_last=True)]

    def augment_overrides(self, strength: float) -> dict[str, Any]:
        return {"augment.enabled": strength > 0.05, "augment.rotation": round(20.0 * strength, 2),
                "augment.scale_min": round(1.0 - 0.5 * strength, 3),
                "augment.color_jitter": round(0.4 * strength, 3)}

    def audit_features(self, dataset, model: str, cache_dir=None):
        # the features (and ONNX graph) of a headless run of `model` with the default pooling and
        # size: the run computes each image's unflipped view once, for the audit and for itself
        featurizer = Featurizer(model, cache_dir=cache_dir, pooling=RunConfig.pooling)
        return featurizer.fit().transform(dataset.model_inputs())

    def audit_feature_name(self, model: str) -> str:
        return model

    def item_paths(self, dataset) -> list[str]:
        return [str(p) for p in dataset.paths]

    def thumbnail(self, dataset, index: int, draw: bool = True) -> Path:
        return Path(dataset.paths[index])

    def decode_frame(self, frame, predictor) -> list:
        if "path" in frame.columns:
            return [str(p) for p in frame["path"]]
        if "image" in frame.columns:
            return [base64.b64decode(v) for v in frame["image"]]
        if len(frame.columns) == 1 and str(frame.columns[0]) == "0":
            # one unnamed column (mlflow.pyfunc.spark_udf(...)("path") passes it as column 0)
            return [str(p) for p in frame.iloc[:, 0]]
        raise DataError(Problem("input", f"an image model takes a 'path' column of image files or "
                                f"an 'image' column of base64 bytes; got columns {list(frame.columns)}"))

    def render(self, explanation, item, alpha: float = 0.45, classes=None, channel_names=None) -> bytes:
        return render_image(explanation, item, alpha, classes)
