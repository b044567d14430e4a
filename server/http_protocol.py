"""uvicorn's httptools protocol with the limits a public service needs against slow or oversized clients.

    request line and headers over Settings.max_header_bytes          431 headers_too_large, connection closed
    headers not complete header_timeout_seconds after they started   408 request_timeout, connection closed
    a body silent for body_timeout_seconds while it is awaited       408 request_timeout, connection closed

httptools accumulates a header in memory until it ends (a 64 MiB Authorization header was held whole), so the
bytes are counted here as they arrive, before the parser has a complete header to report. A body stalled because
the server has not read it yet (reading paused for flow control) is not the client's fault and is not timed out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import CODES, error_body

__all__ = ["ConnectionLimits", "GuardedHttpProtocol"]

_LINGER_SECONDS = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    """The header cap and the slow-client timeouts of every connection."""

    max_header_bytes: int
    header_seconds: float
    body_seconds: float


class GuardedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses oversized headers and closes connections of clients too slow to send."""

    def __init__(self, *args, limits: ConnectionLimits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._header_bytes: int | None = 0  # None once the current request's headers are complete
        self._timer = None
        self._body_seen = 0.0  # loop time of the last body bytes
        self._refused = False

    # -- timers -----------------------------------------------------------------------------------------
    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._refuse("request_timeout", f"the request headers did not arrive within {self.limits.header_seconds} s")

    def _body_check(self) -> None:
        idle = self.loop.time() - self._body_seen
        if self.flow.read_paused or idle < self.limits.body_seconds:  # the server is behind, or bytes came lately
            self._arm(max(self.limits.body_seconds - idle, 0.05), self._body_check)
        else:
            self._refuse("request_timeout", f"the body stalled for {self.limits.body_seconds} s")

    def _refuse(self, code: str, message: str) -> None:
        """Answer `code` (unless a response has begun), close the connection and ignore what else arrives."""
        self._disarm()
        if self._refused or self.transport.is_closing():
            return
        self.flow.resume_reading()  # keep draining what the client sends until the lingering close
        self._refused = True
        if self.cycle is not None and not self.cycle.response_complete:  # the app sees the client gone, as uvicorn
            self.cycle.disconnected = True                                # tells it on a lost connection
            self.cycle.message_event.set()
        if self.cycle is None or not self.cycle.response_started:
            body = json.dumps(error_body(code, message)).encode()
            status = CODES[code]
            head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
            self.transport.write(head.encode("latin-1") + body)
        # A lingering close: end our side, then drop what the client still sends for a moment before closing, so
        # that unread bytes do not make the kernel reset the connection before the client reads the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    # -- protocol and parser callbacks ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        """Start the connection with the header timeout running (a client that sends nothing is closed)."""
        super().connection_made(transport)
        self._arm(self.limits.header_seconds, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timers with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse `data`, then refuse when the headers still incomplete hold more bytes than the cap."""
        if self._refused:
            return
        super().data_received(data)
        if self._header_bytes is not None and not self._refused:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse("headers_too_large", f"the request headers exceed {self.limits.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        """A request begins: count its header bytes and time them."""
        super().on_message_begin()
        self._header_bytes = 0
        if self._timer is None:
            self._arm(self.limits.header_seconds, self._headers_late)

    def on_url(self, url: bytes) -> None:
        """Keep the URL unless the request was refused."""
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep the header unless the request was refused."""
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """Headers in time: hand the request on and, while its body is awaited, time the body's silences."""
        self._header_bytes = None
        self._disarm()
        if self._refused:
            return
        super().on_headers_complete()
        self._body_seen = self.loop.time()
        self._arm(self.limits.body_seconds, self._body_check)

    def on_body(self, body: bytes) -> None:
        """Note when body bytes came."""
        if self._refused:
            return
        self._body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The body is complete: no timer until the next request begins."""
        self._disarm()
        if not self._refused:
            super().on_message_complete()
