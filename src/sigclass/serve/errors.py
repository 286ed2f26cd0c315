"""One place that turns errors into HTTP responses: a JSON body naming the problem, never a 500
for bad input.

Every error body has the same shape::

    {"error": "invalid_input", "message": "...", "problems": [{"path": "...", "reason": "..."}]}
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..exceptions import ArtifactError, ConfigError, DataError, ExplainError, SigclassError

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses, with its HTTP status and a machine-readable code."""

    def __init__(self, status: int, code: str, message: str, problems: list[dict] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []
        self.headers = headers


def error_body(code: str, message: str, problems: list[dict] | None = None) -> dict:
    return {"error": code, "message": message, "problems": problems or []}


def error_response(status: int, code: str, message: str, problems=None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(code, message, problems), status_code=status, headers=headers)


# sigclass errors a request can cause, in lookup order (most specific first).
_SIGCLASS_STATUS: list[tuple[type[Exception], int, str]] = [
    (DataError, 422, "invalid_input"),
    (ExplainError, 422, "explain_unavailable"),
    (ConfigError, 400, "bad_option"),
    (ArtifactError, 500, "model_error"),
]


def _sigclass_error(request: Request, exc: SigclassError) -> JSONResponse:
    status, code = next(((status, code) for kind, status, code in _SIGCLASS_STATUS
                         if isinstance(exc, kind)), (400, "bad_request"))
    problems = [{"path": p.path, "reason": p.reason} for p in getattr(exc, "problems", [])]
    if status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(status, code, str(exc), problems)


def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.problems, exc.headers)


def _client_disconnect(request: Request, exc: ClientDisconnect) -> JSONResponse:
    # The client is gone: nobody reads the answer, and it is no server failure.
    logger.info("%s %s: the client disconnected before sending its whole request",
                request.method, request.url.path)
    return error_response(400, "client_disconnected", "The client disconnected before sending "
                          "its whole request.", headers={"Connection": "close"})


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "too_large"}
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message,
                          headers=getattr(exc, "headers", None))


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [{"path": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")}
                for e in exc.errors()]
    summary = "; ".join(f"{p['path']}: {p['reason']}" for p in problems)
    return error_response(422, "invalid_request", f"The request does not match the API: {summary}",
                          problems)


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, "internal_error", f"The server failed on this request: "
                          f"{type(exc).__name__}. The error is logged; the service keeps running.")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error type to one JSON shape."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(SigclassError, _sigclass_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
