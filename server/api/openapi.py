"""OpenAPI descriptions of the binary request and response bodies that several routes share, and the error
answers every route may give (documented once here, so the document matches what the service sends)."""

from __future__ import annotations

from fastapi import FastAPI

from ..codecs import MSGPACK_TYPES

__all__ = ["BINARY_SCHEMA", "TENSORS_BODY", "document_errors"]

BINARY_SCHEMA = {"schema": {"type": "string", "format": "binary"}}
TENSORS_BODY = {
    "requestBody": {
        "required": True,
        "description": "the cipher operands as einfhe tensor blobs (einfhe.tensor_to_bytes), in operand order: "
                       "one blob as application/octet-stream, or a msgpack array of blobs",
        "content": {"application/octet-stream": BINARY_SCHEMA, MSGPACK_TYPES[0]: BINARY_SCHEMA},
    }
}

_BINARY_NOTE = ("binary: the layout of einfhe's blobs (magic, version, kind, fingerprint, length, CRC-32, parts) is "
                "specified in docs/wire-format.md, so that any language can build one")
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
# Every route checks its parameters (400 invalid_request: the service answers validation errors with 400, not
# FastAPI's 422) and the API token (401); every route with a body goes through server.admission (411, 413, 415).
_EVERY_ROUTE = {"400": "invalid request: a parameter, the body or a blob is malformed (see error.code)",
                "431": "the request line and headers are larger than this server's limit"}
_TOKEN_ROUTES = {"401": "no valid API token ('Authorization: Bearer TOKEN')"}
_BODY_ROUTES = {"408": "the body stalled (server.http_protocol's body timeout)",
                "411": "the body was sent without a Content-Length header",
                "413": "the body is larger than this server's limit for it",
                "415": "the body's media type is not one this operation takes"}


def _document(schema: dict) -> dict:
    """Add the shared error answers to every operation and drop FastAPI's 422 validation-error answer."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation["responses"]
            validation = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if validation.get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
            shared = {**_EVERY_ROUTE, **(_TOKEN_ROUTES if "security" in operation else {}),
                      **(_BODY_ROUTES if "requestBody" in operation else {})}
            for content in operation.get("requestBody", {}).get("content", {}).values():
                if content.get("schema", {}).get("format") == "binary":
                    content["schema"] = {**content["schema"], "description": _BINARY_NOTE}
            for status, description in shared.items():
                responses.setdefault(status, {"description": description, "content": _ERROR_CONTENT})
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` document the service's shared error answers (built once, then cached by FastAPI)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            _document(build())
        return app.openapi_schema

    app.openapi = openapi
