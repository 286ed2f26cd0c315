"""A bundle behind the scoring service: the object the app's routes use, as
:class:`sigclass.serve.model.ServedModel` for a model folder, without PyTorch."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from .._utils import sha256_json
from ..exceptions import ConfigError, ExplainError
from ..modalities.uploads import (
    IMAGE_FORMATS,
    as_limits,
    check_csv_cells,
    check_signal_values,
    decode_image,
    find_bad_number,
)
from .bundle import Bundle
from .cam import bundle_cam

#: Libraries the lean runtime never loads; /metadata reports any that are loaded anyway.
HEAVY_MODULES = ("torch", "timm", "sklearn", "mlflow", "torchvision", "pandas")


class ImageUploads:
    """How the service reads an image upload (as the image modality does)."""

    name, json_inputs, body_types = "image", False, ("image/",)

    def upload_hint(self, field: str) -> str:
        return f"multipart form field '{field}'"

    def accepts_body(self, content_type: str) -> bool:
        return content_type.startswith("image/")

    def decode_upload(self, upload, data_config, limits):
        return decode_image(upload.data, upload.name, as_limits(limits))

    def reduce_for_explanation(self, item, max_pixels: int):
        """A larger image scaled down to ``max_pixels`` (as the image modality does)."""
        if item.width * item.height <= max_pixels:
            return item
        scale = (max_pixels / (item.width * item.height)) ** 0.5
        return item.resize((max(1, int(item.width * scale)), max(1, int(item.height * scale))),
                           reducing_gap=2.0)

    def input_spec(self, bundle: Bundle, max_pixels: int) -> dict[str, Any]:
        config = bundle.data_config
        channels, height, width = bundle.preprocessor.item_shape
        return {"modality": "image", "channels": channels, "height": height, "width": width,
                "resize": config.get("resize"), "mean": config.get("mean"), "std": config.get("std"),
                "content_types": ["multipart/form-data (field 'file')", "image/*"],
                "max_image_pixels": max_pixels, "formats": list(IMAGE_FORMATS),
                "accept": "image/jpeg,image/png,image/bmp,image/tiff,image/webp",
                "description": f"An image; the model sees it at {width}x{height} pixels."}


class SignalUploads:
    """How the service reads a signal upload: a JSON array or CSV (as the signal modality does)."""

    name, json_inputs, body_types = "signal", True, ("text/csv", "text/plain")

    def upload_hint(self, field: str) -> str:
        return "a JSON array [channel][time] or CSV"

    def accepts_body(self, content_type: str) -> bool:
        return content_type in self.body_types

    def decode_upload(self, upload, data_config, limits):
        from ..data.signal_layout import case_from_csv, case_from_json

        limits = as_limits(limits)
        if upload.data is None:
            problem = find_bad_number(upload.value, upload.name, limits.max_number_chars)
            if problem:
                from ..exceptions import DataError

                raise DataError(problem)
            case = case_from_json(upload.value, upload.name)
        else:
            check_csv_cells(upload.data, upload.name, limits)
            case = case_from_csv(upload.data, upload.name, data_config.get("channel_names"))
        check_signal_values(case, upload.name)
        return case

    def reduce_for_explanation(self, item, max_pixels: int):
        return item

    def input_spec(self, bundle: Bundle, max_pixels: int) -> dict[str, Any]:
        config = bundle.data_config
        n_channels, n_timepoints = bundle.preprocessor.item_shape
        names = config.get("channel_names")
        listed = f" ({', '.join(names)})" if names else ""
        return {"modality": "signal", "n_channels": n_channels, "n_timepoints": n_timepoints,
                "channel_names": names, "length_policy": config.get("length_policy", "error"),
                "content_types": ["application/json (array [channel][time])",
                                  "multipart/form-data (field 'file', CSV: one column per channel)",
                                  "text/csv"],
                "accept": ".csv,text/csv",
                "description": f"A CSV file: {n_channels} column(s){listed}, {n_timepoints} rows "
                               "(one per time point)."}



#: How the service reads an upload of each modality.
UPLOADS = {"image": ImageUploads, "signal": SignalUploads}

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
        self.handler = UPLOADS[self.predictor.modality]()
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
