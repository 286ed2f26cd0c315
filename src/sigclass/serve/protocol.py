"""uvicorn's HTTP protocol with more guards: a deadline and a size limit on each request head, and
a limit on open connections that answers in JSON.

A connection that has not sent a complete request head within ``header_timeout_s`` (a
slow-loris client) is answered 408 and closed, one that sends a head over
:data:`MAX_HEAD_BYTES` 431, and a connection opened while ``limit_concurrency`` others are open
gets a JSON 503 and is closed. uvicorn's own ``timeout_keep_alive`` covers only the idle time
between two requests, and its ``limit_concurrency`` answers in plain text; ``sigclass serve``
leaves the latter off and limits requests in flight with
:class:`sigclass.serve.guards.ConcurrencyGuard`. With plain uvicorn, pass
``--http sigclass.serve.protocol:HeaderTimeoutProtocol``. The limits are read from the settings
(``SIGCLASS_SERVE_HEADER_TIMEOUT_S``, ``SIGCLASS_SERVE_LIMIT_CONCURRENCY``).
"""

from __future__ import annotations

import json
import logging

from .guards import busy_message

logger = logging.getLogger(__name__)

#: Largest request head (request line and headers) accepted, in bytes.
MAX_HEAD_BYTES = 64 * 1024


def _base_protocol():
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        return HttpToolsProtocol
    except ImportError:  # httptools is optional: uvicorn's pure-Python parser then
        from uvicorn.protocols.http.h11_impl import H11Protocol
        return H11Protocol


def _answer(status: int, reason: str, code: str, message: str, extra_headers: str = "") -> bytes:
    body = json.dumps({"error": code, "message": message, "problems": []}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{extra_headers}"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


def _make_protocol():
    base = _base_protocol()

    class HeaderTimeoutProtocol(base):
        """uvicorn's HTTP protocol with a deadline and a size limit on each request head."""

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._head_timer = None
            self._head_bytes = 0
            limit = _settings().limit_concurrency
            if len(self.connections) > limit:
                logger.warning("Refused a connection from %s: %d connections open (the "
                               "--limit-concurrency option)", _client(self), len(self.connections) - 1)
                self.transport.write(_answer(503, "Service Unavailable", "busy", busy_message(limit),
                                             "retry-after: 1\r\n"))
                self.transport.close()
                return
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting:
                if self._head_timer is None:
                    self._arm_head_timer()
                self._head_bytes += len(data)
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:  # a request head was parsed
                self._cancel_head_timer()
            elif waiting and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                logger.info("Closed a connection from %s: request head over %d bytes",
                            _client(self), MAX_HEAD_BYTES)
                self.transport.write(_answer(431, "Request Header Fields Too Large", "head_too_large",
                                             f"The request head is over {MAX_HEAD_BYTES:,} bytes."))
                self.transport.close()

        def connection_lost(self, exc) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._head_bytes = 0
            timeout = _settings().header_timeout_s
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out, self.cycle)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self, cycle) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.cycle is not cycle or (
                    cycle is not None and not cycle.response_complete):
                return
            timeout = _settings().header_timeout_s
            logger.info("Closed a connection from %s: no complete request head within %g s",
                        _client(self), timeout)
            self.transport.write(_answer(408, "Request Timeout", "header_timeout",
                                         f"The request head did not arrive within {timeout:g} s."))
            self.transport.close()

    HeaderTimeoutProtocol.__qualname__ = HeaderTimeoutProtocol.__name__
    return HeaderTimeoutProtocol


def _client(protocol) -> str:
    client = getattr(protocol, "client", None)
    return f"{client[0]}:{client[1]}" if client else "a client"


def _settings():
    from .settings import get_settings

    return get_settings()


HeaderTimeoutProtocol = _make_protocol()
