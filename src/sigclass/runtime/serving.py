"""A bundle behind the scoring service: the object the app's routes use, as
:class:`sigclass.serve.model.ServedModel` for a model folder, without PyTorch."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from .._utils import sha256_json
from ..exceptions import ConfigError, ExplainError
from ..modalities import lean_modality
from .bundle import Bundle
from .cam import bundle_cam

#: Libraries the lean runtime never loads; /metadata reports any that are loaded anyway.
HEAVY_MODULES = ("torch", "timm", "sklearn", "mlflow", "torchvision", "pandas")


class HoldsPredictor:
    """What a served model shows of the predictor it holds (``self.predictor``): its modality
    and its classes. The lean bundle, the full classifier and the detector share it."""

    predictor: Any

    @property
    def modality(self) -> str:
        return self.predictor.modality

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes


class BundleServedModel(HoldsPredictor):
    """A bundle with the functions the service's routes need.

    Args:
        settings: The service's settings; ``settings.model`` is the bundle folder.

    Raises:
        ConfigError: Settings a bundle cannot honour (``--backend torch``, ``--precision int8``,
            ``--device cuda``, ``--reject-unknown`` without an OOD reference in the bundle).
    """

    def __init__(self, settings):
        self.settings = settings
        start = time.perf_counter()
        if settings.backend == "torch" or settings.precision == "int8" or settings.device == "cuda":
            raise ConfigError("A bundle runs its fp32 ONNX graph on the CPU with ONNX Runtime: drop "
                              "--backend torch, --precision int8 and --device cuda, or serve the "
                              "model folder instead.")
        self.predictor = Bundle(settings.model)
        if getattr(settings, "reject_unknown", False):
            self.predictor.require_ood()
        self.handler = lean_modality(self.predictor.modality)  # how uploads are read
        files = self.predictor.manifest.files
        self.identity = {"name": str(self.predictor.info.get("registered_name")
                                     or self.predictor.folder.name),
                         "version": "sha256:" + sha256_json(files)[:12], "source": settings.model}
        self.load_seconds = time.perf_counter() - start

    @property
    def engine_info(self) -> dict[str, Any]:
        """How the model runs, and any heavy library this process has loaded (none, unless
        something outside the runtime imported it)."""
        return {"backend": "onnx", "precision": "fp32", "device": "cpu", "chosen_by": "bundle",
                "runtime": "lean",
                "heavy_modules_loaded": sorted(m for m in HEAVY_MODULES if m in sys.modules)}

    def preprocess(self, items: list, names: list[str] | None = None) -> np.ndarray:
        return self.predictor.preprocessor(items, names)

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities of a preprocessed batch, and, for a bundle with an
        out-of-distribution score, that score as one more last column (as the full service)."""
        outputs, features = self.predictor.forward(batch)
        proba = self.predictor.probabilities_from_outputs(outputs)
        ood = self.predictor.ood_scores(features)
        return proba if ood is None else np.column_stack([proba, ood])

    def explain(self, item, target: str | None) -> dict[str, Any]:
        if self.predictor.cam is None:
            raise ExplainError("This service runs a lean bundle whose network has no global average "
                               "pooling + linear head, so its class activation map needs gradients "
                               "(Grad-CAM); ask without explain=true, or serve the model folder.")
        return bundle_cam(self.predictor, item, target)

    def input_spec(self) -> dict[str, Any]:
        return self.handler.input_spec(self.predictor, self.settings.max_image_pixels)
