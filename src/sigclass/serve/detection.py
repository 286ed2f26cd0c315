"""Object detection in the scoring service: an uploaded image becomes labeled, scored boxes.

A detection model (:class:`~sigclass.detector.DetectionPredictor`) is served beside the
classification path: uploads are read and decoded exactly as for an image classifier (same
content types, limits and errors), then kept at their own size, since a detector resizes each
image itself and maps its boxes back, so boxes come back in the uploaded image's own pixels.
The images of one request run together in the model thread (:meth:`MicroBatcher.call
<sigclass.serve.batching.MicroBatcher.call>`): detection is not micro-batched across requests.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi.concurrency import run_in_threadpool

from .._utils import resolve_device
from ..exceptions import ConfigError, DataError
from ..runtime.serving import HoldsPredictor
from .errors import ServiceError
from .guards import check_pixels, release_memory

__all__ = ["DEFAULT_MAX_DETECTIONS", "DEFAULT_SCORE_THRESHOLD", "DetectionServedModel",
           "check_options", "detect_uploads",
           "task_of"]

#: The defaults of ``sigclass predict`` on a detection model.
DEFAULT_SCORE_THRESHOLD = 0.05
DEFAULT_MAX_DETECTIONS = 100
#: Inputs over this many pixels return their memory to the system once converted.
LARGE_INPUT_PIXELS = 2_000_000


class DetectionServedModel(HoldsPredictor):
    """A loaded detection model with what the routes need.

    Args:
        settings: Which model, device and backend (PyTorch or ONNX Runtime, in fp32).
        predictor: The loaded :class:`~sigclass.detector.DetectionPredictor`.
        identity: Its name and version (:func:`sigclass.serve.model.model_identity`).
    """

    task = "detection"

    def __init__(self, settings, predictor, identity: dict[str, str]):
        self.check_settings(settings)
        start = time.perf_counter()
        self.settings = settings
        self.predictor = predictor
        predictor.device = settings.device
        predictor.use_backend(settings.backend, settings.onnx_path)
        self.identity = identity
        self.engine_info = {"backend": predictor.backend, "precision": "fp32",
                            "device": "cpu" if predictor.backend == "onnx"
                            else str(resolve_device(settings.device)),
                            "chosen_by": "setting" if settings.backend != "auto" else
                            "auto: ONNX Runtime on a CPU (measured faster), PyTorch on CUDA",
                            "batching": "per request (no micro-batching across requests)"}
        self.load_seconds = time.perf_counter() - start

    @staticmethod
    def check_settings(settings) -> None:
        """Refuse a precision a detector does not run in (it would be ignored silently)."""
        if settings.precision != "fp32":
            raise ConfigError(f"'{settings.model}' is a detection model: it runs in fp32 only, on "
                              f"PyTorch or ONNX Runtime (got --precision {settings.precision}). "
                              "Drop --precision.")

    @property
    def handler(self):
        """How the service reads this model's uploads: as its modality's (images) are read."""
        from ..modalities import modality_of

        return modality_of(self)

    def run_batch(self, batch):
        raise ConfigError("A detection model is not micro-batched; use detect().")

    def to_tensor(self, image):
        """A decoded PIL image as the detector's input: ``(3, H, W)`` float in [0, 1], as
        :meth:`~sigclass.detector.DetectionPredictor.predict_boxes` reads files."""
        from torchvision.transforms.v2 import functional as F

        return F.pil_to_tensor(image.convert("RGB")).float().div(255)

    def detect(self, images: list, score_threshold: float, max_detections: int) -> list[list[dict]]:
        """The boxes of each image tensor (called in the model thread), highest score first."""
        found = self.predictor.detect(images, score_threshold, max_detections)
        return [[{"xmin": float(b[0]), "ymin": float(b[1]), "xmax": float(b[2]),
                  "ymax": float(b[3]), "class": str(label), "score": float(score)}
                 for b, label, score in zip(f["boxes"], f["labels"], f["scores"], strict=True)]
                for f in found]

    def detect_explained(self, images: list, score_threshold: float,
                         max_detections: int) -> list[tuple[list[dict], dict]]:
        """The boxes of each image tensor with their maps (in the model thread: the maps take
        gradients through the shared network): per image its boxes, each with ``explanation``,
        and the image's ``explanation`` (the overlay PNG of all box maps)."""
        from ..explain.boxes import box_overlay, explain_boxes_payload

        found = self.predictor.explain_boxes(images, score_threshold, max_detections)
        answers = []
        for image, explained in zip(images, found, strict=True):
            png = box_overlay(image, explained, self.classes)
            answers.append(explain_boxes_payload(explained, png))
        return answers

    def input_spec(self) -> dict[str, Any]:
        size = self.predictor.data_config.get("input_size") or [None, None, None]
        return {"modality": self.modality, "task": "detection", "shorter_side": size[-1],
                "mean": self.predictor.data_config.get("mean"),
                "std": self.predictor.data_config.get("std"),
                "content_types": ["multipart/form-data (field 'file')", "image/*"],
                "max_image_pixels": self.settings.max_image_pixels,
                "accept": "image/jpeg,image/png,image/bmp,image/tiff,image/webp",
                "description": "An image of any size; the detector resizes it itself and returns "
                               "boxes in the image's own pixels."}


def task_of(served) -> str:
    """``"detection"`` or ``"classification"`` (a bundle's model classifies)."""
    return getattr(served, "task", "classification")


def check_options(served, explain: bool, target: str | None, score_threshold: float | None,
                  max_detections: int | None) -> None:
    """Refuse query options that do not apply to the served model's task."""
    if task_of(served) == "detection":
        if target is not None:
            raise ServiceError(422, "bad_option", "'target' does not apply to detection models: "
                               "each box's map explains the box's own class. Drop it.")
    elif score_threshold is not None or max_detections is not None:
        raise ServiceError(422, "bad_option", "'score_threshold' and 'max_detections' apply to "
                           "detection models only; this model classifies. Drop them.")


def _decode(served: DetectionServedModel, upload) -> tuple[Any, str, int]:
    image = served.handler.decode_upload(upload, served.predictor.data_config,
                                         served.settings.upload_limits())
    pixels = image.width * image.height
    tensor = served.to_tensor(image)
    del image
    if pixels > LARGE_INPUT_PIXELS:
        release_memory()
    return tensor, upload.name, pixels


async def detect_uploads(request, served: DetectionServedModel, uploads: list,
                         score_threshold: float | None, max_detections: int | None,
                         explain: bool = False) -> list[dict]:
    """The detections of ``uploads``, in order; every bad input is named in one error. Images
    are decoded one at a time, at most ``max_concurrent_decodes`` across all requests, and a
    request's images may hold ``max_batch_pixels`` together. With ``explain``, every box gets
    its map and every image the overlay of its boxes' maps (see
    :mod:`sigclass.explain.boxes`)."""
    threshold = DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold
    limit = DEFAULT_MAX_DETECTIONS if max_detections is None else max_detections
    images, problems, pixels = [], [], 0
    for upload in uploads:
        async with request.app.state.decodes:
            try:
                tensor, _, size = await run_in_threadpool(_decode, served, upload)
            except DataError as exc:
                problems += exc.problems
                continue
        pixels += size
        check_pixels(served.settings, pixels, upload.name)
        images.append(tensor)
    if problems:
        raise DataError(problems)
    if explain:
        answers = await request.app.state.batcher.call(served.detect_explained, images, threshold,
                                                       limit)
    else:
        boxes = await request.app.state.batcher.call(served.detect, images, threshold, limit)
        answers = [(b, None) for b in boxes]
    request.app.state.monitor.observe_batch(len(images))
    return [{"input": u.name, "task": "detection", "score_threshold": threshold,
             "max_detections": limit, "boxes": b, "explanation": e}
            for u, (b, e) in zip(uploads, answers, strict=True)]
