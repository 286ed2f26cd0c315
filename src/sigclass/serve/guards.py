"""Guards against clients that cost the service more than their request is worth.

- :class:`RequestGuard` (ASGI middleware): a body over ``max_request_bytes`` gets 413, a body not
  received in full within ``body_timeout_s`` gets 408; both close the connection.
- :class:`ConcurrencyGuard` (ASGI middleware): a request arriving while ``limit`` others are in
  flight gets a JSON 503 with ``Retry-After`` (uvicorn's own limit answers in plain text).
- :mod:`sigclass.serve.protocol`: the request head's deadline and size limit.
- :func:`check_pixels`: a request's images together over ``max_batch_pixels`` get 413.
- :func:`release_memory`: hands freed heap pages back to the system after a large input (glibc
  keeps them otherwise, and the process stays gigabytes above its baseline after a burst).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os

from .errors import ServiceError, error_response

logger = logging.getLogger(__name__)


class RequestGuard:
    """Refuses request bodies over ``max_bytes`` (413) or slower than ``body_timeout_s`` (408)."""

    def __init__(self, app, max_bytes: int, body_timeout_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status, message = (413, self._too_large()) if length.isdigit() else (
                400, "The Content-Length header is not a number.")
            response = error_response(status, "too_large" if status == 413 else "bad_request",
                                      message, headers={"Connection": "close"})
            return await response(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        received, done = 0, False

        async def guarded():
            nonlocal received, done
            if done:  # the body is in: later calls only wait for a disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise ServiceError(408, "body_timeout", f"The request body did not arrive within "
                                   f"{self.body_timeout_s:g} s (the --body-timeout option); send "
                                   "it at once.", headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise ServiceError(413, "too_large", self._too_large(),
                                       headers={"Connection": "close"})
            else:
                done = True
            return message

        await self.app(scope, guarded, send)

    def _too_large(self) -> str:
        return (f"The request body is larger than the service's limit of {self.max_bytes:,} bytes; "
                "send smaller or fewer inputs (or raise --max-request-bytes).")


def busy_message(limit: int) -> str:
    """What a client over the ``--limit-concurrency`` limit is told."""
    return (f"The service is at its limit of {limit:,} connections and requests at once (the "
            "--limit-concurrency option); retry in a moment.")


class ConcurrencyGuard:
    """Answers 503 (JSON, ``Retry-After: 1``) to HTTP requests beyond ``limit`` in flight."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            logger.warning("Refused %s %s: %d requests in flight (the --limit-concurrency option)",
                           scope.get("method"), scope.get("path"), self.in_flight)
            response = error_response(503, "busy", busy_message(self.limit),
                                      headers={"Retry-After": "1"})
            return await response(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def check_pixels(settings, pixels: int, name: str) -> None:
    """413 when a request's images hold more than ``max_batch_pixels`` together (``pixels``,
    reached at the input ``name``)."""
    if pixels > settings.max_batch_pixels:
        raise ServiceError(413, "too_many_pixels", f"The images of this request hold more than "
                           f"{settings.max_batch_pixels:,} pixels together (reached at '{name}'); "
                           "split the request or downscale the images (or raise --max-batch-pixels).")


_libc = None


def release_memory() -> None:
    """Return freed heap memory to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c") if os.name == "posix" else None
        try:
            _libc = ctypes.CDLL(name) if name else False
            if _libc and not hasattr(_libc, "malloc_trim"):
                _libc = False
        except OSError:
            _libc = False
    if _libc:
        _libc.malloc_trim(0)
