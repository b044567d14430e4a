"""Key material as blobs: evaluation keys (what a client uploads so a server can compute, never the secret
key) and the client's whole context with its secret key, saved to a private file and never sent anywhere."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import openfhe

from ..backends.openfhe import OpenFHEBackend, deserialize_secret_key, translate_errors
from ..errors import SerializationError
from ..params import Parameters
from ..params.flooding import NoiseFlooding
from .blobs import pack_blob, pack_parts, unpack_blob, unpack_parts
from .context import Context

__all__ = ["evaluation_keys_to_bytes", "context_from_evaluation_keys", "save_context", "load_context"]

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


def save_context(ctx: Context, path: str | Path) -> None:
    """Write the client's context, secret key included, to `path` (created with owner-only permissions)."""
    if getattr(ctx.backend, "secret_key", None) is None:
        raise SerializationError("this context holds no secret key (an evaluation-only context cannot be saved)")
    blobs = ctx.backend.export_evaluation_keys()
    with translate_errors("serialize the secret key", SerializationError):
        secret = openfhe.Serialize(ctx.backend.secret_key, openfhe.BINARY)
    flooding = getattr(ctx.backend, "flooding", None)
    meta = {"params": ctx.params.to_json(), "rotations": list(ctx.rotations),
            "plans": [plan.to_json() for plan in ctx.plans], "flooding": asdict(flooding) if flooding else None}
    blob = pack_blob("secret_context", ctx.params.fingerprint(), pack_parts(meta, [blobs[p] for p in _PARTS] + [secret]))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(blob)


def load_context(path: str | Path) -> Context:
    """Read a context saved by `save_context`: the same keys, able to encrypt, run and decrypt."""
    from ..plan import Plan

    data = Path(path).read_bytes()
    meta, parts = unpack_parts(unpack_blob(data, "secret_context", None), max_parts=len(_PARTS) + 1)
    if len(parts) != len(_PARTS) + 1:
        raise SerializationError("a saved context holds the evaluation keys and the secret key")
    params = Parameters.from_json(meta.get("params", {}))
    if params.fingerprint() != data[8:24]:
        raise SerializationError("the file's fingerprint does not match the parameters inside it")
    rotations = tuple(int(r) for r in meta.get("rotations", []))
    backend = OpenFHEBackend.from_evaluation_keys(params, dict(zip(_PARTS, parts)), rotations)
    backend.secret_key = deserialize_secret_key(parts[-1])
    if meta.get("flooding"):  # OpenFHE's context floods by itself; the backend needs to know (measuring or not)
        backend.flooding = NoiseFlooding(**meta["flooding"])
    return Context(backend, params, tuple(Plan.from_json(text) for text in meta.get("plans", [])))
