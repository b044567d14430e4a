"""Admission, before any route reads a body: header size, the API token, and each route's body type and cap.

    headers over Settings.max_header_bytes       431 headers_too_large
    no valid bearer token (except PUBLIC_PATHS)  401 unauthorized
    a body without a Content-Length              411 length_required
    a body type the route does not take          415 unsupported_media_type
    a Content-Length over the route's cap        413 payload_too_large

Everything here reads the request line and headers only, so an unauthenticated or oversized request costs the
server no body bytes (the body stays in the socket; uvicorn closes the connection after the answer).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .codecs import MSGPACK_TYPES
from .errors import CODES, error_body
from .model_archive import MODEL_MEDIA_TYPES
from .settings import Settings
from .tokens import tenant_for

__all__ = ["Admission", "BODY_RULES", "PUBLIC_PATHS", "BodyRule"]

# Paths answered without a token: the health check and the API's documentation.
PUBLIC_PATHS = ("/health", "/docs", "/redoc", "/openapi.json")
PUBLIC_PREFIXES = ("/static/",)


@dataclass(frozen=True)
class BodyRule:
    """The media types one route takes (the first is assumed when none is sent) and the Settings field capping
    its body."""

    method: str
    path: str  # a regular expression over the path
    media_types: tuple[str, ...]
    cap_setting: str


_ID = r"[^/]+"
_TENSORS = ("application/octet-stream", *MSGPACK_TYPES)
BODY_RULES = (
    BodyRule("POST", r"/keysets", ("application/octet-stream",), "max_keyset_bytes"),
    BodyRule("PUT", rf"/operands/{_ID}", ("application/octet-stream",), "max_operand_bytes"),
    BodyRule("POST", r"/plans", ("application/json",), "max_json_bytes"),
    BodyRule("POST", r"/jobs", _TENSORS, "max_ciphertext_bytes"),
    BodyRule("POST", r"/models", ("application/x-tar", *MODEL_MEDIA_TYPES), "max_model_bytes"),
    BodyRule("POST", rf"/models/{_ID}/jobs", _TENSORS, "max_ciphertext_bytes"),
    BodyRule("POST", rf"/models/{_ID}/infer", _TENSORS, "max_operand_bytes"),  # msgpack: several named inputs
)
_BODY_METHODS = ("POST", "PUT", "PATCH")


def _rule_for(method: str, path: str) -> BodyRule | None:
    """The body rule of the route `method path`, or None for a route that takes no body."""
    for rule in BODY_RULES:
        if rule.method == method and re.fullmatch(rule.path, path):
            return rule
    return None


async def _refuse(send, code: str, message: str) -> None:
    """Answer an error without reading the body, closing the connection (the unread body is in the way)."""
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": CODES[code],
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Admission:
    """ASGI middleware refusing, from the request line and headers alone, what no route should read a body for."""

    def __init__(self, app, settings: Settings, tenants: dict[str, str]) -> None:
        self.app = app
        self.settings = settings
        self.tenants = tenants

    async def __call__(self, scope, receive, send):
        """Check the headers, the token and the declared body, then pass the request on."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            return await _refuse(send, *refusal)
        return await self.app(scope, receive, send)

    def _refusal(self, scope) -> tuple[str, str] | None:
        """The (code, message) to refuse the request with, or None to admit it."""
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
        limit = self.settings.max_header_bytes
        if header_bytes > limit:
            return "headers_too_large", f"the request headers hold {header_bytes} bytes; the limit is {limit}"
        path, method = scope["path"], scope["method"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return None
        headers = dict(scope["headers"])
        tenant = tenant_for(headers.get(b"authorization", b"").decode("latin-1"), self.tenants)
        if tenant is None:
            return "unauthorized", "send a valid API token as 'Authorization: Bearer TOKEN'"
        scope.setdefault("state", {})["tenant"] = tenant
        if method not in _BODY_METHODS:
            return None
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if not declared.isdigit():
            return "length_required", "send the body with a Content-Length header"
        rule = _rule_for(method, path)
        if rule is None:  # no such route: the router answers 404 or 405 without reading the body
            cap = self.settings.max_json_bytes
        else:
            media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            if media and media not in rule.media_types:
                return "unsupported_media_type", (f"{method} {path} takes {', '.join(rule.media_types)}, "
                                                  f"not {media!r}")
            cap = getattr(self.settings, rule.cap_setting)
        if int(declared) > cap:
            return "payload_too_large", f"the body is {declared} bytes; the limit here is {cap}"
        return None
