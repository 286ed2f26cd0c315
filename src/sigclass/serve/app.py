"""The scoring service: a thin FastAPI app over one :class:`~sigclass.Predictor`.

The model is loaded once, in the lifespan, and scored through a :class:`MicroBatcher` in one
model thread. Routes stay short: they read the request, hand inputs to the model and shape the
answer; every error goes through :mod:`sigclass.serve.errors`. Run it with ``sigclass serve``
or ``uvicorn --factory sigclass.serve.app:create_app`` (settings from ``SIGCLASS_SERVE_*``).
"""

from __future__ import annotations

import json
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..exceptions import DataError
from ..modalities import modality_of
from .batching import MicroBatcher
from .errors import ServiceError, error_response, install_error_handlers
from .inputs import Upload, media_type, parse_json
from .model import ServedModel
from .schemas import (
    ERROR_RESPONSES,
    BatchResponse,
    Health,
    Metadata,
    PredictResponse,
    Ready,
    request_body,
)
from .settings import Settings, get_settings

PAGE = Path(__file__).parent / "page"
router = APIRouter()
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Needed when the service was started with an API key")


def served_model(request: Request) -> ServedModel:
    served = getattr(request.app.state, "served", None)
    if served is None or not request.app.state.ready:
        raise ServiceError(503, "not_ready", "The model is still loading; retry in a moment.")
    return served


def check_api_key(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    expected = request.app.state.settings.api_key
    if expected and not (key and secrets.compare_digest(key.encode(), expected.encode())):
        raise ServiceError(401, "unauthorized", "Missing or wrong API key: send it in the "
                           "'X-API-Key' header.")


Served = Annotated[ServedModel, Depends(served_model)]
Authorized = Depends(check_api_key)
Explain = Annotated[bool, Query(description="Add the class activation map (PNG overlay + raw map)")]
Target = Annotated[str | None, Query(max_length=200, description="Class the map explains "
                                     "(default: the predicted class)")]


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413, by header or while streaming."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status, message = (413, self._message()) if length.isdigit() else (
                400, "The Content-Length header is not a number.")
            response = error_response(status, "too_large" if status == 413 else "bad_request", message)
            return await response(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ServiceError(413, "too_large", self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return (f"The request body is larger than the service's limit of {self.max_bytes:,} bytes; "
                "send smaller or fewer inputs (or raise --max-request-bytes).")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: :func:`get_settings`, from the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        served = await run_in_threadpool(ServedModel, settings)
        batcher = MicroBatcher(served.run_batch, settings.max_batch_size, settings.max_wait_ms)
        await batcher.start()
        app.state.served, app.state.batcher, app.state.ready = served, batcher, True
        try:
            yield
        finally:
            app.state.ready = False
            await batcher.stop()

    app = FastAPI(title="sigclass scoring service", version=__version__, lifespan=lifespan,
                  description="Classify images or sensor signals with a model trained by sigclass.")
    app.state.settings, app.state.served, app.state.ready = settings, None, False
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
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
    return {
        "model": served.identity, "source": settings.model, "modality": predictor.modality,
        "mode": predictor.mode, "network": predictor.model_name, "classes": predictor.classes,
        "input": served.input_spec(),
        "serving": {**served.engine_info, "max_batch_size": settings.max_batch_size,
                    "max_wait_ms": settings.max_wait_ms, "max_request_bytes": settings.max_request_bytes,
                    "max_batch_inputs": settings.max_batch_inputs,
                    "load_seconds": round(served.load_seconds, 3),
                    "batches": request.app.state.batcher.stats.as_dict()},
        "info": _jsonable(predictor.info),
    }


@router.post("/predict", response_model=PredictResponse, dependencies=[Authorized],
             summary="Classify one image or signal", responses=ERROR_RESPONSES,
             openapi_extra={"requestBody": request_body(many=False)})
async def predict(request: Request, served: Served, explain: Explain = False,
                  target: Target = None) -> dict:
    uploads = await read_uploads(request, served, many=False)
    predictions = await score(request, served, uploads, explain, target)
    return {"model": served.identity, **predictions[0]}


@router.post("/predict/batch", response_model=BatchResponse, dependencies=[Authorized],
             summary="Classify several images or signals", responses=ERROR_RESPONSES,
             openapi_extra={"requestBody": request_body(many=True)})
async def predict_batch(request: Request, served: Served, explain: Explain = False,
                        target: Target = None) -> dict:
    uploads = await read_uploads(request, served, many=True)
    return {"model": served.identity,
            "predictions": await score(request, served, uploads, explain, target)}


async def read_uploads(request: Request, served: ServedModel, many: bool) -> list[Upload]:
    """The inputs of a request, by its content type."""
    kind = media_type(request.headers.get("content-type"))
    body = await request.body()
    field = "files" if many else "file"
    modality = modality_of(served)
    how = modality.upload_hint(field)
    if not body:
        raise ServiceError(400, "empty_body", f"The request body is empty; send the input as {how}.")
    if kind == "multipart/form-data":
        uploads = await _form_uploads(request, field)
    elif kind == "application/json" and modality.json_inputs:
        uploads = _json_uploads(parse_json(body), many)
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


def to_inputs(served: ServedModel, uploads: list[Upload]) -> list:
    """Decoded images or signal arrays; all problems of all inputs reported together."""
    modality = modality_of(served)
    items, problems = [], []
    for upload in uploads:
        try:
            items.append(modality.decode_upload(upload, served.predictor.data_config,
                                                served.settings.max_image_pixels))
        except DataError as exc:
            problems += exc.problems
    if problems:
        raise DataError(problems)
    return items


def _prepare(served: ServedModel, uploads: list[Upload]) -> tuple[list, np.ndarray]:
    """Decoded inputs and their preprocessed batch (one trip to a worker thread)."""
    items = to_inputs(served, uploads)
    return items, served.preprocess(items, [u.name for u in uploads])


async def score(request: Request, served: ServedModel, uploads: list[Upload], explain: bool,
                target: str | None) -> list[dict[str, Any]]:
    """Predictions (and explanations) of ``uploads``, in order."""
    if target is not None and target not in served.classes:
        raise ServiceError(422, "unknown_class", f"The 'target' class {target!r} is not one of the "
                           f"model's classes {served.classes}.")
    items, batch = await run_in_threadpool(_prepare, served, uploads)
    probabilities = await request.app.state.batcher.submit(batch)
    explanations = [None] * len(items)
    if explain:
        explanations = [await request.app.state.batcher.call(served.explain, item, target)
                        for item in items]
    return [_prediction(u.name, p, served.classes, e)
            for u, p, e in zip(uploads, probabilities, explanations, strict=True)]


def _prediction(name: str, proba: np.ndarray, classes: list[str], explanation) -> dict[str, Any]:
    best = int(np.argmax(proba))
    return {"input": name, "class": classes[best], "confidence": float(proba[best]),
            "probabilities": {c: float(p) for c, p in zip(classes, proba, strict=True)},
            "explanation": explanation}


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
