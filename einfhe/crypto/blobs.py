"""einfhe's binary envelope: a fixed header checked before any payload reaches a backend.

    offset  size  field
    0       6     magic b"EINFHE"
    6       1     format version (2; version 1 had no checksum and is refused)
    7       1     kind (ciphertext, tensor, evaluation keys, secret context: the client's own file)
    8       16    fingerprint of the parameter set the payload was made for
    24      8     payload length, little endian
    32      4     CRC-32 of bytes 0..31 and the payload, little endian
    36      ...   payload (OpenFHE's binary serialization, or einfhe's own for tensors)

The CRC-32 catches damage in storage and transit (every burst of up to 32 flipped bits, anything else but for one
chance in 2^32) before OpenFHE parses the bytes: a damaged key or ciphertext could otherwise pass as valid key
material or abort the process inside OpenFHE. It is not a MAC: whoever writes a blob can recompute it, so it
protects against accidents, not against a sender who forges blobs (the receiver must still survive those).
"""

from __future__ import annotations

import json
import struct
import zlib

from ..errors import CorruptBlobError, SerializationError

__all__ = ["KINDS", "pack_blob", "unpack_blob", "pack_parts", "unpack_parts", "FORMAT_VERSION", "HEADER_SIZE"]

MAGIC = b"EINFHE"
FORMAT_VERSION = 2
KINDS = {"ciphertext": 1, "tensor": 2, "evaluation_keys": 3, "secret_context": 4}
_FIELDS = struct.Struct("<6sBB16sQ")
_CHECKSUM = struct.Struct("<I")
HEADER_SIZE = _FIELDS.size + _CHECKSUM.size


def pack_blob(kind: str, fingerprint: bytes, payload: bytes | list[bytes]) -> bytes:
    """Wrap `payload` (bytes, or the pieces `pack_parts` returns) in the einfhe header (with its CRC-32), copying
    the payload once."""
    pieces = [payload] if isinstance(payload, (bytes, bytearray, memoryview)) else payload
    fields = _FIELDS.pack(MAGIC, FORMAT_VERSION, KINDS[kind], fingerprint, sum(len(p) for p in pieces))
    checksum = zlib.crc32(fields)
    for piece in pieces:
        checksum = zlib.crc32(piece, checksum)
    return b"".join([fields, _CHECKSUM.pack(checksum), *pieces])


def unpack_blob(data: bytes, kind: str, fingerprint: bytes | None, *, checksum: bool = True) -> memoryview:
    """Check the header (magic, version, kind, fingerprint, length, checksum) and return the payload (a view of
    `data`, not a copy).

    A checksum mismatch raises CorruptBlobError (a SerializationError): the bytes were damaged after they were
    written. `checksum=False` skips the CRC-32 (the header is still checked), for bytes whose checksum the caller
    has already verified and that have stayed in memory since."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError("expected bytes", got=type(data).__name__)
    data = memoryview(data).cast("B")  # a view of bytes-like input, never a copy
    if len(data) < _FIELDS.size:
        raise SerializationError(f"{len(data)} bytes is too short for an einfhe blob", expected=kind)
    magic, version, got_kind, got_fp, length = _FIELDS.unpack_from(data)
    if magic != MAGIC:
        raise SerializationError("not an einfhe blob (bad magic)", expected=kind)
    if version != FORMAT_VERSION:
        raise SerializationError(f"blob format version {version}, this einfhe reads {FORMAT_VERSION}: make the blob "
                                 "again with this version (version 1 blobs carry no checksum)", expected=kind)
    if len(data) < HEADER_SIZE:
        raise SerializationError(f"{len(data)} bytes is too short for an einfhe blob", expected=kind)
    names = {v: k for k, v in KINDS.items()}
    if got_kind != KINDS[kind]:
        raise SerializationError(f"expected a {kind} blob, got {names.get(got_kind, got_kind)!r}")
    if fingerprint is not None and got_fp != fingerprint:
        raise SerializationError(
            "the blob was made for other CKKS parameters (fingerprint mismatch): use the context that made it",
            expected=kind,
        )
    if length != len(data) - HEADER_SIZE:
        raise SerializationError(
            f"payload length {len(data) - HEADER_SIZE} does not match the header's {length} (truncated?)",
            expected=kind,
        )
    payload = memoryview(data)[HEADER_SIZE:]
    (stored,) = _CHECKSUM.unpack_from(data, _FIELDS.size)
    if checksum and zlib.crc32(payload, zlib.crc32(data[:_FIELDS.size])) != stored:
        raise CorruptBlobError("the blob's checksum does not match its bytes: it was damaged in storage or in "
                               "transit; fetch or make it again", expected=kind)
    return payload


def pack_parts(meta: dict, parts: list[bytes]) -> list[bytes]:
    """A JSON header and length-prefixed parts, as the pieces of a payload (`pack_blob` joins them)."""
    head = json.dumps(meta).encode()
    out = [struct.pack("<II", len(head), len(parts)), head]
    for part in parts:
        out += [struct.pack("<Q", len(part)), part]
    return out


def unpack_parts(data: bytes | memoryview, max_parts: int = 1 << 16) -> tuple[dict, list[bytes]]:
    """Inverse of `pack_parts` (over the payload `unpack_blob` returns), with bounds checks on every length."""
    try:
        head_len, count = struct.unpack_from("<II", data, 0)
        if count > max_parts or 8 + head_len > len(data):
            raise SerializationError("malformed multi-part payload (sizes out of range)")
        meta = json.loads(bytes(data[8:8 + head_len]))
        offset, parts = 8 + head_len, []
        for _ in range(count):
            (size,) = struct.unpack_from("<Q", data, offset)
            offset += 8
            if offset + size > len(data):
                raise SerializationError("malformed multi-part payload (truncated part)")
            parts.append(bytes(data[offset:offset + size]))
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
