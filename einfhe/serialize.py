"""einfhe's binary envelope: a fixed header checked before any payload reaches a backend.

    offset  size  field
    0       6     magic b"EINFHE"
    6       1     format version (1)
    7       1     kind (ciphertext, tensor, evaluation keys, secret context: the client's own file)
    8       16    fingerprint of the parameter set the payload was made for
    24      8     payload length, little endian
    32      ...   payload (OpenFHE's binary serialization, or einfhe's own for tensors)
"""

from __future__ import annotations

import json
import struct

from .errors import SerializationError

__all__ = ["KINDS", "pack_blob", "unpack_blob", "pack_parts", "unpack_parts", "FORMAT_VERSION"]

MAGIC = b"EINFHE"
FORMAT_VERSION = 1
KINDS = {"ciphertext": 1, "tensor": 2, "evaluation_keys": 3, "secret_context": 4}
_HEADER = struct.Struct("<6sBB16sQ")


def pack_blob(kind: str, fingerprint: bytes, payload: bytes) -> bytes:
    """Wrap `payload` in the einfhe header."""
    return _HEADER.pack(MAGIC, FORMAT_VERSION, KINDS[kind], fingerprint, len(payload)) + payload


def unpack_blob(data: bytes, kind: str, fingerprint: bytes | None) -> bytes:
    """Check the header (magic, version, kind, fingerprint, length) and return the payload."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError("expected bytes", got=type(data).__name__)
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise SerializationError(f"{len(data)} bytes is too short for an einfhe blob", expected=kind)
    magic, version, got_kind, got_fp, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SerializationError("not an einfhe blob (bad magic)", expected=kind)
    if version != FORMAT_VERSION:
        raise SerializationError(f"blob format version {version}, this einfhe reads {FORMAT_VERSION}")
    names = {v: k for k, v in KINDS.items()}
    if got_kind != KINDS[kind]:
        raise SerializationError(f"expected a {kind} blob, got {names.get(got_kind, got_kind)!r}")
    if fingerprint is not None and got_fp != fingerprint:
        raise SerializationError(
            "the blob was made for other CKKS parameters (fingerprint mismatch): use the context that made it",
            expected=kind,
        )
    if length != len(data) - _HEADER.size:
        raise SerializationError(
            f"payload length {len(data) - _HEADER.size} does not match the header's {length} (truncated?)",
            expected=kind,
        )
    return data[_HEADER.size:]


def pack_parts(meta: dict, parts: list[bytes]) -> bytes:
    """Concatenate a JSON header and length-prefixed parts."""
    head = json.dumps(meta).encode()
    out = [struct.pack("<II", len(head), len(parts)), head]
    for part in parts:
        out += [struct.pack("<Q", len(part)), part]
    return b"".join(out)


def unpack_parts(data: bytes, max_parts: int = 1 << 16) -> tuple[dict, list[bytes]]:
    """Inverse of `pack_parts`, with bounds checks on every length."""
    try:
        head_len, count = struct.unpack_from("<II", data, 0)
        if count > max_parts or 8 + head_len > len(data):
            raise SerializationError("malformed multi-part payload (sizes out of range)")
        meta = json.loads(data[8:8 + head_len])
        offset, parts = 8 + head_len, []
        for _ in range(count):
            (size,) = struct.unpack_from("<Q", data, offset)
            offset += 8
            if offset + size > len(data):
                raise SerializationError("malformed multi-part payload (truncated part)")
            parts.append(data[offset:offset + size])
            offset += size
        if offset != len(data):
            raise SerializationError("malformed multi-part payload (trailing bytes)")
    except (struct.error, ValueError) as exc:
        if isinstance(exc, SerializationError):
            raise
        raise SerializationError(f"malformed multi-part payload: {exc}") from exc
    if not isinstance(meta, dict):
        raise SerializationError("malformed multi-part payload (header is not an object)")
    return meta, parts
