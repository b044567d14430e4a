"""ASGI middleware: a guard on request sizes before any route reads a body, and one log line per request."""

from __future__ import annotations

import json
import logging
import time

from .errors import CODES, error_body

__all__ = ["BodyGuard", "RequestLog"]

log = logging.getLogger("einfhe.server.access")


async def _send_error(send, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": CODES[code],
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """Refuse bodies without a Content-Length (411), JSON bodies past `json_limit` and any past `limit` (413)."""

    def __init__(self, app, limit: int, json_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.json_limit = json_limit

    async def __call__(self, scope, receive, send):
        """Check the declared body size, then pass the request on."""
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if not declared.isdigit():
            return await _send_error(send, "length_required", "send the body with a Content-Length header")
        is_json = headers.get(b"content-type", b"").split(b";")[0].strip() == b"application/json"
        limit = self.json_limit if is_json else self.limit
        if int(declared) > limit:
            return await _send_error(send, "payload_too_large", f"the body is {declared} bytes; the limit is {limit}")
        return await self.app(scope, receive, send)


class RequestLog:
    """Log `method path status bytes-in bytes-out milliseconds tenant` once per request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        """Time the request and log one line when its response is complete."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        seen = {"status": 500, "in": 0, "out": 0}

        async def counting_receive():
            message = await receive()
            seen["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            tenant = (scope.get("state") or {}).get("tenant", "-")
            log.info("%s %s %d in=%dB out=%dB %.1fms tenant=%s", scope["method"], scope["path"], seen["status"],
                     seen["in"], seen["out"], (time.perf_counter() - start) * 1e3, tenant)
