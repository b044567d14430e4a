"""Helpers for service tests: test tenants, auth headers, .npy and evaluation-key bodies."""

from __future__ import annotations

import io

import numpy as np

from einfhe.serialize import pack_blob, pack_parts

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
SLOTS = 32


def auth(tenant: str) -> dict:
    """Authorization header for a test tenant."""
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


def npy(array) -> bytes:
    """An array as .npy bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def keyset_body(ctx, **replaced_parts) -> bytes:
    """An evaluation-key upload for a context, built like einfhe.evaluation_keys_to_bytes, with parts replaced."""
    parts = {**ctx.backend.export_evaluation_keys(), **replaced_parts}
    meta = {"params": ctx.params.to_json(), "rotations": list(ctx.rotations), "parts": list(parts)}
    return pack_blob("evaluation_keys", ctx.params.fingerprint(), pack_parts(meta, list(parts.values())))
