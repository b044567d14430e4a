"""Decode what clients upload (evaluation-key blobs, .npy operands, einfhe tensor blobs), refusing malformed bytes.

Every function here raises `ServiceError` (a 4xx with a stable code) for bad input; none loads OpenFHE
objects, so the API process never touches OpenFHE's global caches.
"""

from __future__ import annotations

import io
import math
import tokenize
from dataclasses import dataclass

import msgpack
import numpy as np
from einfhe import CorruptBlobError, EinfheError, Parameters, SerializationError
from einfhe.crypto.blobs import unpack_blob, unpack_parts
from einfhe.crypto.tensor import TensorBlob, read_tensor_blob

from .errors import ServiceError

__all__ = [
    "KEY_PARTS", "MSGPACK_TYPES", "SECRET_PART_NAMES", "KeySetUpload", "decode_keyset", "decode_npy",
    "decode_tensor_list", "inspect_tensor", "unpack_msgpack", "MAX_JOB_TENSORS",
]

KEY_PARTS = ("context", "public_key", "mult_key", "rotation_keys")
SECRET_PART_NAMES = ("secret", "private", "sk")
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
_MAX_NDIM = 8
MAX_JOB_TENSORS = 64  # cipher operands in one job body
_MAX_NPY_HEADER = 4096


def unpack_msgpack(body: bytes, what: str, max_items: int):
    """msgpack.unpackb with strict settings and at most `max_items` entries per array or map (checked by the
    decoder before it allocates them); any failure answered as malformed_blob."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True, max_array_len=max_items,
                               max_map_len=max_items, max_ext_len=0)
    except (ValueError, TypeError, msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError,
            msgpack.exceptions.StackError) as exc:
        raise ServiceError("malformed_blob", f"the {what} is not valid msgpack: {exc}") from exc


@dataclass(frozen=True)
class KeySetUpload:
    """What the API process reads from an evaluation-key blob without loading any key."""

    params: dict
    rotations: list[int]
    parts: dict[str, bytes]


def decode_keyset(body: bytes) -> KeySetUpload:
    """Read an einfhe evaluation-key blob's envelope (einfhe.evaluation_keys_to_bytes); refuse secret-key parts."""
    try:
        meta, parts = unpack_parts(unpack_blob(body, "evaluation_keys", None), max_parts=16)
        names = meta.get("parts")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) != len(parts):
            raise SerializationError("the key set's part names do not match its parts")
        params, rotations = meta.get("params"), meta.get("rotations", [])
        if not isinstance(params, dict) or not isinstance(rotations, list) or not all(
                isinstance(r, int) and not isinstance(r, bool) for r in rotations):
            raise SerializationError("the key set's parameters or rotations are malformed")
    except CorruptBlobError as exc:
        raise ServiceError("corrupt_blob", f"the evaluation-key blob is damaged: {exc}") from exc
    except EinfheError as exc:
        raise ServiceError("malformed_blob", f"not an einfhe evaluation-key blob: {exc}") from exc
    for name in names:
        if any(word in name.lower() for word in SECRET_PART_NAMES) and name not in KEY_PARTS:
            raise ServiceError("secret_key_refused", f"key part {name!r} names a secret key: the server never accepts one")
        if name not in KEY_PARTS:
            raise ServiceError("unknown_key_part", f"unknown key part {name!r}; valid parts: {', '.join(KEY_PARTS)}")
    return KeySetUpload(params, rotations, dict(zip(names, parts)))


def _npy_header(body: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """The shape, Fortran order, dtype and data offset a .npy body declares, read without touching its data."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(stream, max_header_size=_MAX_NPY_HEADER)
    except (ValueError, OSError, EOFError, TypeError, SyntaxError, tokenize.TokenError) as exc:  # TokenError: torn
        raise ServiceError("malformed_blob", f"the operand is not a .npy array: {exc}") from exc
    return shape, fortran, dtype, stream.tell()


def decode_npy(body: bytes, *, as_float: bool = True) -> np.ndarray:
    """A plaintext operand from .npy bytes: numeric, finite, at most 8 dimensions, never pickled objects. The declared
    shape must match the bytes sent before anything is allocated; the array keeps its dtype unless `as_float`."""
    shape, fortran, dtype, offset = _npy_header(body)
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
        raise ServiceError("malformed_blob", "the operand must be a numeric (bool, int or float) .npy array")
    if len(shape) > _MAX_NDIM or 0 in shape:
        raise ServiceError("malformed_blob", f"the operand must have 1..{_MAX_NDIM} dimensions and some elements")
    count = math.prod(shape)
    if count * dtype.itemsize != len(body) - offset:
        raise ServiceError("malformed_blob", f"the .npy header declares shape {shape} of {dtype} "
                                             f"({count * dtype.itemsize} bytes); the body holds {len(body) - offset}")
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape, order="F" if fortran else "C")
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise ServiceError("malformed_blob", "the operand holds NaN or infinite values")
    return array.astype(np.float64) if as_float else array


def decode_tensor_list(body: bytes, content_type: str) -> list[bytes]:
    """Job inputs: one tensor blob (application/octet-stream) or a msgpack array of them."""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/octet-stream":
        return [body]
    if media in MSGPACK_TYPES:
        blobs = unpack_msgpack(body, "job body", MAX_JOB_TENSORS)
        if not isinstance(blobs, list) or not all(isinstance(b, bytes) for b in blobs):
            raise ServiceError("malformed_blob", "a msgpack job body must be an array of tensor blobs (bin)")
        return blobs
    raise ServiceError(
        "unsupported_media_type",
        f"send ciphertexts as application/octet-stream (one tensor) or {MSGPACK_TYPES[0]} (several), not {media!r}",
    )


def inspect_tensor(data: bytes, params: Parameters, max_cts: int) -> TensorBlob:
    """Check a tensor blob's header, fingerprint, layout and ciphertext count; its cts stay bytes."""
    try:
        return read_tensor_blob(data, params.fingerprint(), params.slots, max_cts)
    except CorruptBlobError as exc:
        raise ServiceError("corrupt_blob", f"the tensor blob is damaged: {exc}") from exc
    except EinfheError as exc:
        raise ServiceError("malformed_blob", f"not a tensor blob for this plan's parameters: {exc}") from exc
