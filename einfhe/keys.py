"""Evaluation keys as one blob: what a client uploads so a server can compute (never the secret key)."""

from __future__ import annotations

from .backends.openfhe import OpenFHEBackend
from .context import Context
from .errors import SerializationError
from .params import Parameters
from .serialize import pack_blob, pack_parts, unpack_blob, unpack_parts

__all__ = ["evaluation_keys_to_bytes", "context_from_evaluation_keys"]

_PARTS = ("context", "public_key", "mult_key", "rotation_keys")


def evaluation_keys_to_bytes(ctx: Context) -> bytes:
    """Serialize the context's public evaluation material (crypto context, public, relinearization and
    rotation keys), its parameters and rotation set behind einfhe's header."""
    blobs = ctx.backend.export_evaluation_keys()
    meta = {"params": ctx.params.to_json(), "rotations": list(ctx.rotations), "parts": list(_PARTS)}
    return pack_blob("evaluation_keys", ctx.params.fingerprint(), pack_parts(meta, [blobs[p] for p in _PARTS]))


def context_from_evaluation_keys(data: bytes, expected: Parameters | None = None) -> Context:
    """An evaluation-only Context (no secret key) from `evaluation_keys_to_bytes`'s blob.

    The parameters travel in the blob; when `expected` is given they must match it. Parameters below
    128-bit security are refused here unless the caller passes them as `expected` explicitly.
    """
    payload = unpack_blob(data, "evaluation_keys", expected.fingerprint() if expected else None)
    meta, parts = unpack_parts(payload, max_parts=len(_PARTS))
    if meta.get("parts") != list(_PARTS) or len(parts) != len(_PARTS):
        raise SerializationError("an evaluation key blob must hold context, public, relinearization and rotation keys")
    params = Parameters.from_json(meta.get("params", {}))
    if expected is None and not params.secure:
        raise SerializationError("refusing evaluation keys for parameters below 128-bit security")
    if params.fingerprint() != data[8:24]:
        raise SerializationError("the blob's fingerprint does not match the parameters inside it")
    rotations = tuple(int(r) for r in meta.get("rotations", []))
    if any(not 0 < r < params.slots for r in rotations):
        raise SerializationError("rotation offsets out of range for these parameters")
    backend = OpenFHEBackend.from_evaluation_keys(params, dict(zip(_PARTS, parts)), rotations)
    return Context(backend, params)
