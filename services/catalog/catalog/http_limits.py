"""HTTP/1.1 limits at the connection level, where the ASGI app cannot act.

uvicorn's httptools protocol buffers a request head of any size for as long as
the client likes: one connection streaming a huge header grows the process
without bound and stalls the event loop, and a connection that never finishes
its head (slowloris) or never sends anything stays open forever. The subclass
below bounds each of these before a single byte reaches the application:

- the request head (request line and headers) is fed to the parser only up to
  ``max_head_bytes``; a head that has not ended by then gets 431 (414 when the
  request target alone is over ``max_request_line``) and the connection closes;
- a head must be complete ``header_timeout`` seconds after its first byte, else
  408 and close;
- a connection that sends nothing is closed after ``keepalive_timeout`` (uvicorn
  only arms that timer after a response, never for a fresh connection);
- above ``max_connections`` open connections (or as many requests in flight),
  requests get 503, except the probes, so liveness keeps answering under a flood.

The hot path pays one attribute test per received chunk: the header timer is
armed only for a head that did not arrive in one piece. The overridden parser
callbacks call uvicorn's own methods directly rather than through ``super()``,
and the request target is measured once, when the head is complete (the head
bound covers a target still arriving): each Python-level step here is paid by
every request (bench/bench_hit_instructions.py counts them).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .config import HttpLimits

# Probes are never refused for load: a replica that sheds load is still alive.
PROBES = frozenset({b"/healthz", b"/readyz"})
# After refusing a request, keep reading (and discarding) for this long, or
# this much, before closing: closing with unread input makes the kernel send
# RST, which can destroy the response before the client reads it.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


class _TargetTooLong(Exception):
    """Raised from the parser's head-complete callback to stop parsing at once."""


def _error_response(status: int, code: str, detail: str,
                    default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = orjson.dumps({"error": code, "detail": detail})
    parts = [STATUS_LINE[status]]
    for name, value in default_headers:
        parts += [name, b": ", value, b"\r\n"]
    parts += [b"content-type: application/json\r\ncontent-length: ",
              str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body]
    return b"".join(parts)


async def _unavailable(scope: Any, receive: Any, send: Any) -> None:
    body = orjson.dumps({"error": "unavailable",
                         "detail": "too many concurrent connections; retry"})
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


_on_headers_complete = HttpToolsProtocol.on_headers_complete
_on_message_complete = HttpToolsProtocol.on_message_complete


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``limits`` (see module doc)."""

    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # enforced below, with the probes exempt
        self.timeout_keep_alive = self.limits.keepalive_timeout  # type: ignore[assignment]
        self._app = self.app
        self._head_open = True  # waiting for, or inside, a request head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._discarded = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Idle from the start: the same timer uvicorn arms after each response.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering after a refusal: discard, up to a bound
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.close()
            return
        if self._head_open:
            room = self.limits.max_head_bytes - self._head_bytes
            if len(data) > room:
                # Feed only what the limit allows; the head must end inside it.
                rest = data[room:]
                self._feed(data[:room])
                if self._head_open and not self._refused:
                    self._refuse_head()
                elif not self._refused:
                    self.data_received(rest)
                return
            self._head_bytes += len(data)
        self._feed(data)
        if self._head_open and self._head_bytes and self._head_timer is None \
                and not self._refused and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.limits.header_timeout,
                                                    self._head_timed_out)

    def _feed(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _TargetTooLong):
                self._refuse(414, "uri_too_long", "request target longer than"
                             f" {self.limits.max_request_line} bytes")
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self._head_timer is not None:
            self._cancel_head_timer()
        limits = self.limits
        if len(self.url) > limits.max_request_line:
            raise _TargetTooLong
        limit = limits.max_connections
        if (len(self.connections) > limit or len(self.tasks) >= limit) \
                and self.url not in PROBES:
            self.logger.warning("Exceeded concurrency limit (%d).", limit)
            self.app = _unavailable
            try:
                _on_headers_complete(self)
            finally:
                self.app = self._app
            return
        _on_headers_complete(self)

    def on_message_complete(self) -> None:
        _on_message_complete(self)
        self._head_open = True
        self._head_bytes = 0

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse_head(self) -> None:
        if len(self.url) > self.limits.max_request_line or not self.headers:
            self._refuse(414, "uri_too_long",
                         f"request target longer than {self.limits.max_request_line} bytes")
        else:
            self._refuse(431, "header_too_large",
                         f"request head larger than {self.limits.max_head_bytes} bytes")

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_open and not self.transport.is_closing():
            self._refuse(408, "request_timeout", "request headers not received within"
                         f" {self.limits.header_timeout:g} s")

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer ``status`` (unless a response is under way) and close, lingering."""
        self._refused = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        self.logger.warning("Refused request from %s: %s", self.client, detail)
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_error_response(status, code, detail,
                                                 self.server_state.default_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` with these limits."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
