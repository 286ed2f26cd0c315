"""A trained object detector: :class:`DetectionPredictor`, saved and loaded like a classifier.

The model folder is that of a classifier (:mod:`sigclass.artifacts`): ``weights.safetensors``
and a ``model.json`` checked against its schema, with ``"task": "detection"``, the object
classes, the preprocessing (``data_config``: shorter side, mean, std) and how to rebuild the
network (``network.kwargs``: backbone, architecture, sizes; see
:func:`sigclass.models.detection.build_detector`). :func:`sigclass.load` returns a
:class:`DetectionPredictor` for such a folder.

It runs on PyTorch, or on ONNX Runtime after :meth:`DetectionPredictor.use_backend` ``("onnx")``:
the whole detector exported as one graph (:mod:`sigclass.detector_engine`), the same images in and
the same boxes out.
"""

from __future__ import annotations

import logging
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._utils import atomic_write, sha256_file, write_json
from .artifacts import load_weights, verify_files
from .choices import BACKENDS, check_choice
from .exceptions import ArtifactError, ConfigError
from .model_schema import FORMAT, FORMAT_VERSION, MODEL_JSON, WEIGHTS, fail
from .models.detection import build_detector

__all__ = ["AUTO_BACKEND", "BOX_COLUMNS", "DetectionPredictor", "box_rows", "require_classifier"]

logger = logging.getLogger(__name__)

BOX_COLUMNS = ("path", "xmin", "ymin", "xmax", "ymax", "label", "score")
#: What ``backend="auto"`` runs a detector on, on a CPU (PyTorch on CUDA): the faster engine
#: measured by ``bench/bench_detection_speed.py`` (README: Detection).
AUTO_BACKEND = "onnx"


class DetectionPredictor:
    """A detector that takes image files and returns labeled, scored boxes.

    Args:
        network: A torchvision detector built by :func:`~sigclass.models.detection.build_detector`.
        classes: Object class names; label ``i`` of the network is ``classes[i - 1]``.
        data_config: The preprocessing stored with the model.
        info: Metadata saved with the model (metrics, data, training).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    PyTorch runs it unless :meth:`use_backend` picks ONNX Runtime (``sigclass predict`` and
    ``sigclass serve`` ask for ``"auto"``: ONNX Runtime on a CPU).
    """

    task = "detection"
    modality = "image"
    mode = "finetune"

    def __init__(self, network, classes: list[str], data_config: dict[str, Any],
                 info: dict[str, Any] | None = None, device: str | None = "auto"):
        self.network = network
        self.classes = [str(c) for c in classes]
        self.data_config = dict(data_config)
        self.info = dict(info or {})
        self.device = device
        self.backend = "torch"
        self._engine = None  # an OnnxDetectionEngine when ONNX Runtime runs the detector

    @property
    def model_name(self) -> str:
        return self.network.model_spec["name"]

    def __repr__(self) -> str:
        return f"DetectionPredictor(model={self.model_name!r}, classes={self.classes})"

    # -- what a classifier does, refused clearly ----------------------------------------------------

    def _not_a_classifier(self, *_, **__):
        raise ConfigError(f"'{self.model_name}' is a detection model: it finds boxes, it does not "
                          "classify whole images. Use predict_boxes() (CLI: `sigclass predict MODEL "
                          "IMAGES -o boxes.csv`), explain_boxes() for a map per box (`sigclass explain MODEL "
                          "IMAGES --out DIR`), or a classification model for class outputs.")

    predict = predict_proba = predict_files = explain = _not_a_classifier

    # -- the engine -------------------------------------------------------------------------------

    def resolve_backend(self, backend: str) -> str:
        """``"torch"`` or ``"onnx"`` for ``backend``: as asked, or for ``"auto"`` PyTorch on CUDA
        or without ONNX Runtime, else :data:`AUTO_BACKEND`."""
        from .inference import onnx_available

        check_choice("backend", backend, BACKENDS)
        if backend != "auto":
            return backend
        if self._device().type == "cuda" or not onnx_available():
            return "torch"
        return AUTO_BACKEND

    def use_backend(self, backend: str, onnx_path: str | Path | None = None,
                    precision: str = "fp32") -> DetectionPredictor:
        """Run the detector on ``backend`` (``auto``, ``torch`` or ``onnx``; see
        :meth:`resolve_backend`). ONNX Runtime runs the graph of
        :func:`~sigclass.detector_engine.export_detector_onnx`, exported once to ``onnx_path``
        (default: the cache folder, keyed by the model's checksums) and checked against PyTorch
        when it is written; ``"auto"`` falls back to PyTorch, with a warning, for a detector that
        cannot be exported. Returns ``self``."""
        from .detector_engine import OnnxDetectionEngine, detector_graph_path

        if precision != "fp32":
            raise ConfigError(f"'{self.model_name}' is a detection model: it runs in fp32 only "
                              f"(got precision {precision!r}). Drop --precision.")
        if self.resolve_backend(backend) == "torch":
            self.backend, self._engine = "torch", None
            return self
        path = detector_graph_path(self, onnx_path)
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="sigclass-onnx-")) / "detector.onnx"
        if not path.is_file():
            try:
                self.export_onnx(path, n_check=1)
            except ConfigError as exc:
                if backend != "auto":
                    raise
                logger.warning("Running the detector on PyTorch: %s", exc)
                self.backend, self._engine = "torch", None
                return self
        try:
            engine = OnnxDetectionEngine(path)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors on a damaged graph vary
            raise ArtifactError(f"ONNX Runtime cannot read the detector graph '{path}' "
                                f"({' '.join(str(exc).split())[:200]}); delete it and it is "
                                "exported again.") from None
        self.backend, self._engine = "onnx", engine
        return self

    def export_onnx(self, path: str | Path, n_check: int = 2, seed: int = 0) -> dict[str, Any]:
        """Write the detector's ONNX graph to ``path`` and compare ONNX Runtime with PyTorch on
        ``n_check`` synthetic images (see :func:`~sigclass.detector_engine.check_graph`).

        Raises:
            ConfigError: The detector cannot be exported, or the engines disagree (the file is
                then removed).
        """
        from .detector_engine import check_graph, export_detector_onnx

        side = int(self.data_config.get("input_size", [3, 96, 96])[-1])
        path = export_detector_onnx(self.network, path, (side, round(side * 4 / 3)))
        try:
            report = check_graph(self.network, path, side, n_check, seed)
        except ConfigError:
            path.unlink(missing_ok=True)
            raise
        return {"path": str(path), **report}

    # -- prediction -------------------------------------------------------------------------------

    def _device(self):
        from ._utils import resolve_device

        return resolve_device(self.device)

    def detect(self, images, score_threshold: float = 0.05, max_detections: int = 100,
               batch_size: int = 4) -> list[dict[str, Any]]:
        """Detections of image tensors ``(3, H, W)`` in ``[0, 1]``: per image ``boxes`` (n, 4),
        ``labels`` (class names) and ``scores`` as numpy arrays, highest score first, from the
        engine :meth:`use_backend` chose (PyTorch by default)."""
        if not 0 <= score_threshold <= 1:
            raise ConfigError(f"The score threshold must be in [0, 1]. Got {score_threshold}.")
        if max_detections < 1:
            raise ConfigError(f"max_detections must be at least 1. Got {max_detections}.")
        found = []
        for out in self._raw_detections(images, batch_size):
            # label 0 is the background: RetinaNet and FCOS score it as a class of its own
            keep = np.flatnonzero((out["scores"] >= score_threshold) & (out["labels"] >= 1))
            keep = keep[:max_detections]
            labels = out["labels"][keep].astype(np.int64)
            found.append({"boxes": out["boxes"][keep].astype(np.float32),
                          "labels": np.array([self.classes[i - 1] for i in labels], dtype=object),
                          "label_ids": labels,
                          "scores": out["scores"][keep].astype(np.float32)})
        return found

    def _raw_detections(self, images, batch_size: int):
        """The network's ``boxes``, ``labels`` and ``scores`` per image, as numpy arrays."""
        import torch

        if self._engine is not None:  # ONNX Runtime: one image per call
            for image in images:
                yield self._engine(image.detach().cpu().float())
            return
        device = self._device()
        network = self.network.to(device).eval()
        for start in range(0, len(images), batch_size):
            batch = [image.to(device) for image in images[start:start + batch_size]]
            with torch.inference_mode():
                outputs = network(batch)
            for out in outputs:
                yield {k: out[k].float().cpu().numpy() if k != "labels" else out[k].cpu().numpy()
                       for k in ("boxes", "labels", "scores")}

    def explain_boxes(self, images, score_threshold: float = 0.3, max_detections: int = 50,
                      method: str = "layercam", stage: int = 0) -> list[list[Any]]:
        """The boxes of images, each with the gradient map of its own score inside it (Faster
        R-CNN only; see :mod:`sigclass.explain.boxes` for what the map is).

        Args:
            images: Image files, or tensors ``(3, H, W)`` in ``[0, 1]``.
            score_threshold, max_detections: Which boxes are explained (as :meth:`detect`).
            method: ``"layercam"`` (the default) or ``"gradcam"``.
            stage: The backbone stage differentiated (0: stride 8, the finest).

        Returns:
            Per image, a list of :class:`~sigclass.explain.boxes.BoxExplanation`, highest score
            first, with maps of the image's own size.
        """
        from .explain.boxes import explain_boxes

        if not 0 <= score_threshold <= 1:
            raise ConfigError(f"The score threshold must be in [0, 1]. Got {score_threshold}.")
        if max_detections < 1:
            raise ConfigError(f"max_detections must be at least 1. Got {max_detections}.")
        if any(isinstance(item, str | Path) for item in images):
            files = [item for item in images if isinstance(item, str | Path)]
            read = iter(self._read_images(files))
            images = [next(read) if isinstance(item, str | Path) else item for item in images]
        device = self._device()
        return explain_boxes(self.network.to(device), self.classes, images, score_threshold,
                             max_detections, method, stage, device)

    def _read_images(self, paths) -> list:
        """Image files as tensors ``(3, H, W)`` in ``[0, 1]`` (each checked; a bad file is an
        error naming it)."""
        from .data.detection_torch import read_rgb
        from .data.image_files import check_image_file
        from .exceptions import DataError, Problem

        paths = [Path(p) for p in paths]
        problems = [Problem(str(p), reason) for p in paths
                    if (reason := check_image_file(p)[1])]
        if problems:
            raise DataError(problems)
        return [read_rgb(p).float().div(255) for p in paths]

    def predict_boxes(self, paths, score_threshold: float = 0.05, max_detections: int = 100,
                      batch_size: int = 4) -> list[dict[str, Any]]:
        """:meth:`detect` on image files (each checked and decoded; a bad file is an error
        naming it)."""
        from .data.detection_torch import read_rgb
        from .data.image_files import check_image_file
        from .exceptions import DataError, Problem

        paths = [Path(p) for p in paths]
        problems = [Problem(str(p), reason) for p in paths
                    if (reason := check_image_file(p)[1])]
        if problems:
            raise DataError(problems)
        images = [read_rgb(p).float().div(255) for p in paths]
        return self.detect(images, score_threshold, max_detections, batch_size)

    # -- saving and loading -----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the model folder ``path``; returns it."""
        import sklearn
        import timm
        import torch
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        atomic_write(folder / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        document = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "task": "detection",
            "modality": self.modality, "mode": "finetune", "classes": self.classes,
            "data_config": self.data_config, "network": self.network.model_spec, "head": None,
            "info": self.info, "files": {WEIGHTS: sha256_file(folder / WEIGHTS)},
            "saved_with": {"sigclass": __version__, "python": platform.python_version(),
                           "torch": torch.__version__, "timm": timm.__version__,
                           "scikit-learn": sklearn.__version__},
        }
        write_json(folder / MODEL_JSON, document)
        return folder

    @classmethod
    def from_folder(cls, folder: Path, document: dict[str, Any], device: str | None = "auto"):
        """The detector of a model folder whose checked ``model.json`` is ``document``."""
        verify_files(folder, document["files"])
        spec = document["network"]
        config = document["data_config"]
        try:
            network = build_detector(spec["n_classes"], pretrained=False, mean=config["mean"],
                                     std=config["std"], **spec.get("kwargs", {}))
        except Exception as exc:  # noqa: BLE001 - any failure means a broken artifact
            raise fail(folder / MODEL_JSON, [f"field 'network': cannot rebuild the detector "
                                             f"'{spec['name']}' ({' '.join(str(exc).split())})"]) from None
        load_weights(folder, network)
        network.eval()
        info = {**document.get("info", {}), "path": str(folder)}
        return cls(network, document["classes"], config, info=info, device=device)


def require_classifier(predictor, what: str):
    """``predictor``, unless it is a detection model, which ``what`` (e.g. "class activation
    maps") does not apply to: then a :class:`ConfigError` that says what does."""
    if getattr(predictor, "task", "classification") == "detection":
        raise ConfigError(f"'{predictor.model_name}' is a detection model; {what} apply to "
                          "classification models only. A detection model gives boxes: "
                          "`sigclass predict MODEL IMAGES -o boxes.csv`, `sigclass evaluate "
                          "MODEL DATA` (COCO mAP).")
    return predictor


def box_rows(path, found: dict[str, Any]) -> list[dict[str, str]]:
    """The rows of one image's detections ``found`` (:meth:`DetectionPredictor.detect`), one
    per box (columns :data:`BOX_COLUMNS`, coordinates to 0.01 pixel, scores to 1e-4); an image
    with no box gets one row whose box fields are empty, so that no image is left out."""
    rows = [{"path": str(path), **{k: f"{float(v):.2f}" for k, v in zip(BOX_COLUMNS[1:5], box,
                                                                       strict=True)},
             "label": str(label), "score": f"{float(score):.4f}"}
            for box, label, score in zip(found["boxes"], found["labels"], found["scores"], strict=True)]
    return rows or [{"path": str(path), **dict.fromkeys(BOX_COLUMNS[1:], "")}]
