"""ASGI middleware: one log line per request (admission checks live in server.admission)."""

from __future__ import annotations

import logging
import time

__all__ = ["RequestLog"]

log = logging.getLogger("einfhe.server.access")


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
