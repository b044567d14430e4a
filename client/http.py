"""HTTP under the client: one httpx.Client, retries for idempotent calls, error responses as typed exceptions."""

from __future__ import annotations

import socket
import time

import httpx

from .errors import ConnectionFailed, WorkerStartFailed, error_for_status

__all__ = ["Http"]

_RETRY_STATUSES = (502, 503, 504)


class Http:
    """Sends requests with the API token; retries idempotent ones on transport errors and 502/503/504 (but not
    worker_start_failed)."""

    def __init__(self, url: str, token: str, *, timeout: float = 120.0, retries: int = 3, backoff: float = 0.2,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.retries = retries
        self.backoff = backoff
        self.bytes_sent = 0      # request bodies, every attempt
        self.bytes_received = 0  # response bodies
        # TCP_NODELAY: httpx writes headers and body separately, and Nagle's algorithm would then hold the body
        # back until the server's delayed ACK (~40 ms per upload on loopback).
        transport = transport or httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport,
                                    headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def request(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs) -> httpx.Response:
        """Send a request; raise the typed error for an error response, ConnectionFailed when unreachable."""
        idempotent = method in ("GET", "PUT", "DELETE", "HEAD") if idempotent is None else idempotent
        attempt = 0
        while True:
            exhausted = attempt >= self.retries
            try:
                response = self._client.request(method, path, **kwargs)
                self.bytes_sent += len(response.request.content)
                self.bytes_received += len(response.content)
            except httpx.TransportError as exc:
                # A request that never reached the server is safe to resend even when it is not idempotent.
                if exhausted or not (idempotent or isinstance(exc, httpx.ConnectError)):
                    raise ConnectionFailed("connection_failed", f"{method} {path}: {exc!r}") from exc
            else:
                if response.status_code < 400:
                    return response
                error = _error(response)
                # a server whose workers exit as they start would only fail the same way again
                if (exhausted or not idempotent or response.status_code not in _RETRY_STATUSES
                        or isinstance(error, WorkerStartFailed)):
                    raise error
            time.sleep(self.backoff * 2 ** attempt)
            attempt += 1

def _error(response: httpx.Response):
    """The typed exception for an error response (its JSON code, or http_<status> when it has none)."""
    try:
        detail = response.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code, message = f"http_{response.status_code}", response.text[:500]
    return error_for_status(response.status_code, code, message)
