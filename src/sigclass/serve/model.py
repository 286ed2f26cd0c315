"""The model behind the service: loaded once, its backend picked, its inputs preprocessed.

``backend="auto"`` runs PyTorch on CUDA. On a CPU it exports the network to ONNX once (cached
by the model's checksum), times both engines on one input and keeps the faster, so the service
never gets slower by switching.
"""

from __future__ import annotations

import base64
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import resolve_device, sha256_json
from ..artifacts import model_files
from ..exceptions import ConfigError
from ..explain import explain, render_overlay
from ..inference import infer, make_engine, resolve_backend
from ..loading import load
from ..modalities import modality_of
from ..predictor import onnx_cache_path, require_ood
from ..runtime.serving import HoldsPredictor
from .settings import Settings

__all__ = ["ServedModel", "load_servable", "model_identity", "onnx_cache_path", "open_served",
           "pick_engine"]

logger = logging.getLogger(__name__)


def model_identity(source: str, predictor) -> dict[str, str]:
    """Name and version of the served model: the registry's where it came from one, else the run
    folder's name and the checksum of its weights."""
    info = predictor.info
    registry = info.get("registry") if isinstance(info.get("registry"), dict) else {}
    name = registry.get("name") or info.get("registered_name")
    version = registry.get("version") or info.get("registered_version")
    if source.startswith("models:/"):
        name = name or source[len("models:/"):].split("@")[0].split("/")[0]
        # a registered model is downloaded to .../<name>/<version>/...
        parts = Path(info.get("path") or "").parts
        found = [parts[i + 1] for i in range(len(parts) - 1) if parts[i] == name]
        version = version or (found[-1] if found else None)
    if not name:
        folder = Path(info.get("path") or source)
        name = folder.parent.name if folder.name == "model" else folder.name
    if not version:
        files = model_files(info.get("path"))
        version = "sha256:" + sha256_json(files)[:12] if files else "unversioned"
    return {"name": str(name), "version": str(version), "source": source}


def _median_seconds(engine, batch, runs: int = 7) -> float:
    engine(batch)  # warm-up: allocations, lazy initialisation
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        engine(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pick_engine(predictor, settings: Settings) -> dict[str, Any]:
    """Set ``predictor``'s engine per ``settings.backend``; returns how it was chosen."""
    device = resolve_device(settings.device)
    shape = predictor.preprocessor.item_shape
    if settings.precision == "int8":  # the quantized graph runs on ONNX Runtime only
        predictor.use_backend(settings.backend, precision="int8")
        return {"backend": "onnx", "precision": "int8", "device": str(device), "chosen_by": "setting"}
    backend = resolve_backend(settings.backend, settings.device, predictor.network)
    if settings.backend != "auto" or backend == "torch":
        predictor.use_backend(backend, onnx_cache_path(predictor, settings.onnx_path) if backend == "onnx" else None)
        return {"backend": predictor.engine.name, "precision": "fp32", "device": str(device),
                "chosen_by": "setting"}
    # auto on a CPU: measure both engines on one input and keep the faster
    one = np.zeros((1, *shape), dtype=np.float32)
    torch_engine = make_engine(predictor.network, shape, "torch", settings.device)
    onnx_engine = make_engine(predictor.network, shape, "onnx", settings.device,
                              onnx_cache_path(predictor, settings.onnx_path))
    timings = {"torch": _median_seconds(torch_engine, _tensor(one)),
               "onnx": _median_seconds(onnx_engine, one)}
    best = min(timings, key=timings.get)
    predictor.backend = best
    predictor._engine = torch_engine if best == "torch" else onnx_engine
    logger.info("Backend %s (one input: torch %.1f ms, onnx %.1f ms)", best,
                timings["torch"] * 1e3, timings["onnx"] * 1e3)
    return {"backend": best, "precision": "fp32", "device": str(device), "chosen_by": "timing",
            "one_input_ms": {k: round(v * 1e3, 2) for k, v in timings.items()}}


def _tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(array)


def load_servable(source: str, reject_unknown: bool = False, settings: Settings | None = None):
    """The predictor of ``source``, loaded and validated (:func:`sigclass.load`), refused when
    the service cannot score it. ``sigclass serve`` calls this before it binds its port.

    Raises:
        ArtifactError: The model folder is missing, damaged or inconsistent.
        ConfigError: ``source`` is an ensemble, ``reject_unknown`` asks for an
            out-of-distribution score the model was saved without, ``settings`` ask a
            detection model for a precision it does not run in, or its ONNX graph cannot be
            exported or disagrees with PyTorch.
    """
    predictor = load(source)
    if getattr(predictor, "task", "classification") == "detection":
        if reject_unknown:
            raise ConfigError(f"'{source}' is a detection model: it has no out-of-distribution "
                              "score, so --reject-unknown does not apply. Drop it.")
        if settings is not None:
            from .detection import DetectionServedModel

            DetectionServedModel.check_settings(settings)
            # the ONNX graph is exported and checked here, once, before any worker starts
            predictor.use_backend(settings.backend, settings.onnx_path)
        return predictor
    if getattr(predictor, "members", None):
        raise ConfigError(f"'{source}' is an ensemble; the service scores one network "
                          "per request batch. Serve its best member (members/<name> in the "
                          "ensemble's folder), or score files with `sigclass predict`, which "
                          "takes ensembles.")
    if reject_unknown:
        require_ood(predictor, source)
    return predictor


def coefficient_head(predictor, n_check: int = 16, atol: float = 1e-6):
    """The linear head of a headless ``predictor`` as NumPy coefficients
    (:class:`~sigclass.runtime.heads.LinearHead`, the lean runtime's), or ``None`` when it has no
    such form or its probabilities differ from scikit-learn's by more than ``atol`` on
    ``n_check`` random feature rows (float32 rounding gives about 3e-7; the ONNX and PyTorch
    engines differ by more). scikit-learn's input checks cost a single request about 0.3 ms; the
    coefficients compute the same probabilities in a few microseconds."""
    head = getattr(predictor, "head", None)
    width = getattr(head, "n_features_in_", None)
    if head is None or width is None:
        return None
    from ..runtime.heads import LinearHead

    try:
        fast = LinearHead.from_estimator(head, predictor.classes)
    except ConfigError:
        return None
    rows = np.random.default_rng(0).standard_normal((n_check, int(width))).astype(np.float32)
    difference = float(np.abs(fast.predict_proba(rows) - predictor.probabilities_from_outputs(rows)).max())
    if difference > atol:
        logger.info("The head is scored by scikit-learn: its coefficients differ by %.2g", difference)
        return None
    return fast


def open_served(settings: Settings):
    """The served model of ``settings.model``, loaded once: a :class:`ServedModel` for a
    classifier, a :class:`~sigclass.serve.detection.DetectionServedModel` for a detector."""
    start = time.perf_counter()
    predictor = load_servable(settings.model, settings.reject_unknown)
    if getattr(predictor, "task", "classification") == "detection":
        from .detection import DetectionServedModel

        served = DetectionServedModel(settings, predictor, model_identity(settings.model, predictor))
    else:
        served = ServedModel(settings, predictor)
    served.load_seconds = time.perf_counter() - start
    return served


class ServedModel(HoldsPredictor):
    """A loaded predictor with the functions the routes need.

    Args:
        settings: Which model, backend and device.
        predictor: The model, already loaded by :func:`load_servable` (default: load it).
    """

    task = "classification"

    def __init__(self, settings: Settings, predictor=None):
        self.settings = settings
        start = time.perf_counter()
        self.predictor = predictor or load_servable(settings.model, settings.reject_unknown)
        self.predictor.device = settings.device
        self.identity = model_identity(settings.model, self.predictor)
        self.engine_info = pick_engine(self.predictor, settings)
        fast = coefficient_head(self.predictor)
        self.probabilities = (self.predictor.probabilities_from_outputs if fast is None
                              else fast.predict_proba)  # class probabilities of network outputs
        self.load_seconds = time.perf_counter() - start

    @property
    def handler(self):
        """How the service reads this model's uploads: its modality."""
        return modality_of(self.predictor)

    def preprocess(self, items: list, names: list[str] | None = None) -> np.ndarray:
        """Inputs (decoded images or signal arrays) as one float32 ``(n, ...)`` array; every bad
        input is named by ``names`` in one error."""
        return self.predictor.preprocessor(items, names).numpy()

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities of a preprocessed batch (called in the model thread), and, for a
        model with an out-of-distribution score, that score as one more last column."""
        inputs = _tensor(batch)
        outputs = infer(self.predictor.engine, inputs, self.predictor.preprocessor.views)
        proba = self.probabilities(outputs)
        ood = self.predictor.batch_ood_scores(inputs, outputs)
        return proba if ood is None else np.column_stack([proba, ood])

    def explain(self, item, target: str | None) -> dict[str, Any]:
        """The class activation map of one input: the raw map and a PNG overlay (base64)."""
        explanation = explain(self.predictor, [item], target=target)[0]
        png = render_overlay(explanation, item)
        return {
            "method": explanation.method,
            "target": explanation.label,
            "overlay_png_base64": base64.b64encode(png).decode("ascii"),
            "map": np.round(np.asarray(explanation.map, dtype=np.float64), 4).tolist(),
            "channel_importance": (None if explanation.channel_importance is None else
                                   np.asarray(explanation.channel_importance, dtype=float).tolist()),
        }

    def input_spec(self) -> dict[str, Any]:
        return modality_of(self.predictor).input_spec(self.predictor, self.settings.max_image_pixels)
