"""OpenAPI descriptions of the binary request and response bodies that several routes share."""

from __future__ import annotations

from ..codecs import MSGPACK_TYPES

__all__ = ["BINARY_SCHEMA", "TENSORS_BODY"]

BINARY_SCHEMA = {"schema": {"type": "string", "format": "binary"}}
TENSORS_BODY = {
    "requestBody": {
        "required": True,
        "description": "the cipher operands as einfhe tensor blobs (einfhe.tensor_to_bytes), in operand order: "
                       "one blob as application/octet-stream, or a msgpack array of blobs",
        "content": {"application/octet-stream": BINARY_SCHEMA, MSGPACK_TYPES[0]: BINARY_SCHEMA},
    }
}
