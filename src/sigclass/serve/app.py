"""The scoring service: a thin FastAPI app over one :class:`~sigclass.Predictor`.

The model is loaded once, in the lifespan, and scored through a :class:`MicroBatcher` in one
model thread. Inputs are decoded one at a time, at most ``max_concurrent_decodes`` across all
requests, so memory stays bounded whatever arrives; explanations run on a worker of their own
(:class:`~sigclass.serve.batching.Worker`), so a slow one never holds up plain predictions; every
request has a deadline (``request_timeout_s``). Routes stay short: they read the request, hand
inputs to the model and shape the answer; every error goes through :mod:`sigclass.serve.errors`.
Run it with ``sigclass serve`` or ``uvicorn --factory sigclass.serve.app:create_app`` (settings
from ``SIGCLASS_SERVE_*``; add ``--http sigclass.serve.protocol:HeaderTimeoutProtocol`` for the
request-head timeout). ``GET /metrics`` serves the counters of :mod:`sigclass.serve.monitoring`
to Prometheus.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..evaluation.ood import score_records
from ..exceptions import DataError, Problem
from .batching import Busy, MicroBatcher, Worker
from .detection import check_options, detect_uploads, task_of
from .errors import ServiceError, install_error_handlers
from .guards import ConcurrencyGuard, RequestGuard, check_pixels, release_memory
from .inputs import Upload, media_type, parse_json
from .monitoring import CONTENT_TYPE_LATEST, MetricsMiddleware, Monitor
from .schemas import (
    ERROR_RESPONSES,
    BatchResponse,
    DetectBatchResponse,
    DetectResponse,
    Health,
    Metadata,
    PredictResponse,
    Ready,
    request_body,
)
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from .model import ServedModel

PAGE = Path(__file__).parent / "page"
router = APIRouter()
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Needed when the service was started with an API key")
bearer = HTTPBearer(auto_error=False, description="/metrics also takes the API key as a bearer "
                    "token (Prometheus' 'authorization' scrape setting)")


def open_model(settings: Settings):
    """The served model of ``settings.model``: a bundle folder runs on the lean runtime
    (:mod:`sigclass.runtime`, no PyTorch is imported), a classifier as a
    :class:`~sigclass.serve.model.ServedModel`, a detector as a
    :class:`~sigclass.serve.detection.DetectionServedModel`."""
    from ..runtime import is_bundle

    if is_bundle(settings.model):
        from ..runtime.serving import BundleServedModel

        return BundleServedModel(settings)
    from .model import open_served

    return open_served(settings)


# The dependencies below are coroutines: they do no blocking work, and FastAPI runs a plain
# function dependency in its thread pool, a hop that costs a request a few tenths of a millisecond.


async def served_model(request: Request):
    served = getattr(request.app.state, "served", None)
    if served is None or not request.app.state.ready:
        raise ServiceError(503, "not_ready", "The model is still loading; retry in a moment.")
    return served


def _verify_key(request: Request, key: str | None) -> None:
    expected = request.app.state.settings.api_key
    if expected and not (key and secrets.compare_digest(key.encode(), expected.encode())):
        raise ServiceError(401, "unauthorized", "Missing or wrong API key: send it in the "
                           "'X-API-Key' header.")


async def check_api_key(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    _verify_key(request, key)


async def check_metrics_key(request: Request, key: Annotated[str | None, Depends(api_key_header)],
                            token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    _verify_key(request, key or (token.credentials if token else None))


Served = Annotated[Any, Depends(served_model)]  # a ServedModel or a BundleServedModel
Authorized = Depends(check_api_key)
Explain = Annotated[bool, Query(description="Add the class activation map (PNG overlay + raw "
                                "map); detection models: a map per box and the overlay of them")]
Target = Annotated[str | None, Query(max_length=200, description="Class the map explains "
                                     "(default: the predicted class)")]
ScoreThreshold = Annotated[float | None, Query(ge=0, le=1, description="Detection models: the "
                                               "lowest box score returned (default 0.05)")]
MaxDetections = Annotated[int | None, Query(ge=1, le=1000, description="Detection models: the "
                                            "most boxes per image (default 100)")]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: :func:`get_settings`, from the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        served = await run_in_threadpool(open_model, settings)
        monitor.attach(served.classes, getattr(served.predictor, "drift_reference", None),
                       max(settings.max_batch_size, settings.max_batch_inputs))
        batcher = MicroBatcher(served.run_batch, settings.max_batch_size, settings.max_wait_ms,
                               on_batch=monitor.observe_batch)
        await batcher.start()
        app.state.served, app.state.batcher, app.state.ready = served, batcher, True
        app.state.explainer = Worker(settings.max_pending_explanations)
        app.state.decodes = asyncio.Semaphore(settings.max_concurrent_decodes)
        try:
            yield
        finally:
            app.state.ready = False
            app.state.explainer.stop()
            await batcher.stop()

    app = FastAPI(title="sigclass scoring service", version=__version__, lifespan=lifespan,
                  description="Classify images or sensor signals with a model trained by sigclass.")
    monitor = Monitor(settings.drift_window, settings.drift_threshold)  # this app's registry
    app.state.settings, app.state.served, app.state.ready = settings, None, False
    app.state.monitor = monitor
    install_error_handlers(app)
    app.add_middleware(RequestGuard, max_bytes=settings.max_request_bytes,
                       body_timeout_s=settings.body_timeout_s)
    app.add_middleware(ConcurrencyGuard, limit=settings.limit_concurrency)
    app.add_middleware(MetricsMiddleware, monitor=monitor)  # outermost: counts every answer
    app.include_router(router)
    app.mount("/page", StaticFiles(directory=PAGE), name="page")
    return app


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(PAGE / "index.html")


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", response_model=Ready, summary="Readiness: the model is loaded",
            responses={503: ERROR_RESPONSES[503]})
def ready(served: Served) -> dict:
    return {"status": "ready", "model": served.identity}


@router.get("/metadata", response_model=Metadata, dependencies=[Authorized],
            summary="Classes, input spec, model name and version",
            responses={k: ERROR_RESPONSES[k] for k in (401, 503)})
def metadata(served: Served, request: Request) -> dict:
    predictor, settings = served.predictor, served.settings
    limits = {name: getattr(settings, name) for name in SERVING_LIMITS}
    return _without_paths({
        "model": served.identity, "source": settings.model, "task": task_of(served),
        "modality": predictor.modality,
        "mode": predictor.mode, "network": predictor.model_name, "classes": predictor.classes,
        "input": served.input_spec(),
        "serving": {**served.engine_info, **limits, "load_seconds": round(served.load_seconds, 3),
                    "batches": request.app.state.batcher.stats.as_dict()},
        "info": _jsonable(predictor.info),
        "monitoring": {"drift": request.app.state.monitor.drift_summary()},
    })


@router.get("/metrics", dependencies=[Depends(check_metrics_key)],
            summary="Prometheus metrics: requests, latency, batches, predictions, drift",
            response_class=Response, responses={
                200: {"description": "The Prometheus text exposition format",
                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                401: ERROR_RESPONSES[401]})
def metrics(request: Request) -> Response:
    return Response(request.app.state.monitor.exposition(), media_type=CONTENT_TYPE_LATEST)


SERVING_LIMITS = ("max_batch_size", "max_wait_ms", "max_request_bytes", "max_batch_inputs",
                  "max_image_pixels", "max_aspect_ratio", "max_batch_pixels",
                  "max_concurrent_decodes", "max_explain_pixels", "max_pending_explanations",
                  "request_timeout_s", "header_timeout_s", "body_timeout_s", "keep_alive_s",
                  "limit_concurrency", "max_number_chars", "max_csv_cell_chars")


@router.post("/predict", response_model=PredictResponse | DetectResponse,
             dependencies=[Authorized], responses=ERROR_RESPONSES,
             summary="Classify one image or signal, or find the objects of an image",
             openapi_extra={"requestBody": request_body(many=False)})
async def predict(request: Request, served: Served, explain: Explain = False,
                  target: Target = None, score_threshold: ScoreThreshold = None,
                  max_detections: MaxDetections = None) -> dict:
    async with deadline(served):
        check_options(served, explain, target, score_threshold, max_detections)
        uploads = await read_uploads(request, served, many=False)
        predictions = await answer(request, served, uploads, explain, target, score_threshold,
                                   max_detections)
    return {"model": served.identity, **predictions[0]}


@router.post("/predict/batch", response_model=BatchResponse | DetectBatchResponse,
             dependencies=[Authorized], responses=ERROR_RESPONSES,
             summary="Classify several images or signals, or find the objects of several images",
             openapi_extra={"requestBody": request_body(many=True)})
async def predict_batch(request: Request, served: Served, explain: Explain = False,
                        target: Target = None, score_threshold: ScoreThreshold = None,
                        max_detections: MaxDetections = None) -> dict:
    async with deadline(served):
        check_options(served, explain, target, score_threshold, max_detections)
        uploads = await read_uploads(request, served, many=True)
        predictions = await answer(request, served, uploads, explain, target, score_threshold,
                                   max_detections)
    task = {"task": "detection"} if task_of(served) == "detection" else {}
    return {"model": served.identity, **task, "predictions": predictions}


async def answer(request: Request, served: ServedModel, uploads: list[Upload], explain: bool,
                 target: str | None, score_threshold: float | None,
                 max_detections: int | None) -> list[dict[str, Any]]:
    """The predictions of ``uploads`` by the served model's task: classes or boxes."""
    if task_of(served) == "detection":
        return await detect_uploads(request, served, uploads, score_threshold, max_detections,
                                    explain)
    return await score(request, served, uploads, explain, target)


@asynccontextmanager
async def deadline(served: ServedModel):
    """Answer 504 when the request takes longer than ``request_timeout_s`` (0: no limit)."""
    seconds = served.settings.request_timeout_s
    try:
        async with asyncio.timeout(seconds or None):
            yield
    except TimeoutError:
        raise ServiceError(504, "timeout", f"The request took longer than the service's limit of "
                           f"{seconds:g} s (--request-timeout); retry later, or send fewer or "
                           "smaller inputs.") from None


async def read_uploads(request: Request, served: ServedModel, many: bool) -> list[Upload]:
    """The inputs of a request, by its content type."""
    kind = media_type(request.headers.get("content-type"))
    body = await request.body()
    field = "files" if many else "file"
    modality = served.handler
    how = modality.upload_hint(field)
    if not body:
        raise ServiceError(400, "empty_body", f"The request body is empty; send the input as {how}.")
    if kind == "multipart/form-data":
        uploads = await _form_uploads(request, field)
    elif kind == "application/json" and modality.json_inputs:
        uploads = _json_uploads(parse_json(body, max_number_chars=served.settings.max_number_chars),
                                many)
    elif not many and modality.accepts_body(kind):
        uploads = [Upload("body", data=body)]
    else:
        got = f"'{kind}'" if kind else "no Content-Type"
        raise ServiceError(415, "unsupported_media_type", f"This {served.modality} model cannot take "
                           f"{got}; send the input as {how}.")
    if len(uploads) > served.settings.max_batch_inputs:
        raise ServiceError(413, "too_many_inputs", f"{len(uploads)} inputs in one request; the limit "
                           f"is {served.settings.max_batch_inputs}. Split the request.")
    return uploads


def _json_uploads(value, many: bool) -> list[Upload]:
    if not many:
        return [Upload("body", value=value)]
    if isinstance(value, dict):
        value = value.get("inputs")
    if not isinstance(value, list) or not value:
        raise ServiceError(422, "invalid_input", "The body must be a non-empty JSON array of "
                           "signals [case][channel][time] (or {\"inputs\": [...]}).")
    return [Upload(f"inputs[{i}]", value=v) for i, v in enumerate(value)]


async def _form_uploads(request: Request, field: str) -> list[Upload]:
    from starlette.datastructures import UploadFile

    async with request.form() as form:
        files = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise ServiceError(422, "missing_file", f"The form holds no file; send the input as form "
                               f"field '{field}' with a file name.")
        if field == "file" and len(files) > 1:
            raise ServiceError(422, "too_many_files", f"/predict takes one file, got {len(files)}; "
                               "use /predict/batch for several.")
        return [Upload(value.filename or key, data=await value.read()) for key, value in files]


def prepare_one(served: ServedModel, upload: Upload, keep: bool) -> tuple[np.ndarray, Any, int]:
    """One input decoded and preprocessed (in a worker thread): its ``(1, ...)`` row, the
    decoded item when ``keep`` (scaled down for its explanation) and its pixel count."""
    modality = served.handler
    item = modality.decode_upload(upload, served.predictor.data_config,
                                  served.settings.upload_limits())
    pixels = item.width * item.height if hasattr(item, "width") else 0
    row = served.preprocess([item], [upload.name])
    kept = modality.reduce_for_explanation(item, served.settings.max_explain_pixels) if keep else None
    del item
    if pixels > LARGE_INPUT_PIXELS:
        release_memory()  # the decoded image is freed: hand its pages back
    return row, kept, pixels


def prepare_and_run(served: ServedModel, upload: Upload) -> tuple[np.ndarray, np.ndarray]:
    """One input decoded, preprocessed and scored in one call of the model thread (a lone
    request, :meth:`MicroBatcher.alone`): its row and the model's outputs."""
    row, _, pixels = prepare_one(served, upload, keep=False)
    check_pixels(served.settings, pixels, upload.name)
    return row, served.run_batch(row)


#: Inputs over this many pixels return their memory to the system once preprocessed.
LARGE_INPUT_PIXELS = 2_000_000


async def prepare(request: Request, served: ServedModel, uploads: list[Upload],
                  keep: bool) -> tuple[np.ndarray, list]:
    """The preprocessed batch of ``uploads`` and their kept items; every bad input is named in
    one error. Inputs are decoded one at a time, at most ``max_concurrent_decodes`` across all
    requests, and a request's images may hold ``max_batch_pixels`` together."""
    rows, items, problems, pixels = [], [], [], 0
    for upload in uploads:
        async with request.app.state.decodes:
            try:
                row, item, size = await run_in_threadpool(prepare_one, served, upload, keep)
            except DataError as exc:
                problems += exc.problems
                continue
        pixels += size
        check_pixels(served.settings, pixels, upload.name)
        rows.append(row)
        items.append(item)
    if problems:
        raise DataError(problems)
    return np.concatenate(rows), items


async def score(request: Request, served: ServedModel, uploads: list[Upload], explain: bool,
                target: str | None) -> list[dict[str, Any]]:
    """Predictions (and explanations) of ``uploads``, in order."""
    if target is not None and target not in served.classes:
        raise ServiceError(422, "unknown_class", f"The 'target' class {target!r} is not one of the "
                           f"model's classes {served.classes}.")
    batcher = request.app.state.batcher
    if len(uploads) == 1 and not explain and batcher.idle:
        async with request.app.state.decodes:
            batch, probabilities = await batcher.alone(prepare_and_run, served, uploads[0])
        items = [None]
    else:
        with batcher.expecting():
            batch, items = await prepare(request, served, uploads, explain)
        probabilities = await batcher.submit(batch)
    ood = None
    if getattr(served.predictor, "ood", None) is not None:  # run_batch's last column
        probabilities, ood = probabilities[:, :-1], probabilities[:, -1]
    problems = [Problem(u.name, "gives the model non-finite outputs: its values are too large for "
                        "the network; rescale the input") for u, p in zip(uploads, probabilities,
                                                                           strict=True)
                if not np.all(np.isfinite(p))]
    if problems:
        raise DataError(problems)
    request.app.state.monitor.observe_predictions(batch, probabilities)
    del batch
    explanations = [None] * len(uploads)
    if explain:
        explanations = [await _explain(request, served, item, target) for item in items]
    records = score_records(served.predictor, np.asarray(probabilities), ood,
                            served.settings.reject_unknown)
    request.app.state.monitor.observe_unknown([r["unknown"] for r in records])
    return [{"input": u.name, **r, "explanation": e}
            for u, r, e in zip(uploads, records, explanations, strict=True)]


async def _explain(request: Request, served: ServedModel, item, target: str | None) -> dict:
    """The explanation of one item, on the explanation worker (never in the model thread)."""
    try:
        return await request.app.state.explainer.call(served.explain, item, target)
    except Busy as exc:
        raise ServiceError(503, "busy", f"{exc.args[0]} explanations are already queued; retry in "
                           "a moment, or ask without explain=true.",
                           headers={"Retry-After": "5"}) from None


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _without_paths(value):
    """``value`` with every absolute file path or file URI replaced by its last part: the
    service does not tell clients how its disk is laid out."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    if isinstance(value, str):
        text = value
        for prefix in ("file://", "sqlite:///", "sqlite://"):
            if text.startswith(prefix):
                text = "/" + text[len(prefix):].lstrip("/")
        if text.startswith(("/", "~")) and len(text) > 1:
            return PurePosixPath(text).name or text
        if PureWindowsPath(text).drive and PureWindowsPath(text).root:
            return PureWindowsPath(text).name
    return value
