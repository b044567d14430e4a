"""The inputs of a plaintext inference, checked in the API process before a worker sees them.

A model with one input takes one .npy of samples: (batch, features) or one sample (features,), either also in
the model's input shape (batch, *shape) or (*shape), reshaped to that shape. A model with several (a sequence model's token ids and attention mask) takes a msgpack map
{input name: .npy bytes}, each (batch, ...) with the same batch; integer inputs stay integers. Every array is
decoded by the bounded .npy reader (shape checked against the bytes before anything is allocated).
"""

from __future__ import annotations

import numpy as np

from .codecs import MSGPACK_TYPES, decode_npy, unpack_msgpack
from .errors import ServiceError

__all__ = ["plaintext_inputs"]


def _cast(array: np.ndarray, dtype: str) -> np.ndarray:
    """An input array as the model's dtype: integers for an integer input (refusing fractions), else float32."""
    if dtype.startswith(("int", "uint")):
        if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise ServiceError("invalid_request", f"an integer input ({dtype}) was sent fractional values")
        return array.astype(np.int64)
    with np.errstate(over="ignore"):  # an overflow is answered after the run, not warned about
        return array.astype(np.float32)


def _named_inputs(specs: list[dict], body: bytes, content_type: str, max_rows: int) -> tuple[np.ndarray, ...]:
    """The arrays of a msgpack map {input name: .npy}, one per model input, in the model's order."""
    names = [spec["name"] for spec in specs]
    if content_type.split(";")[0].strip().lower() not in MSGPACK_TYPES:
        raise ServiceError("invalid_request", f"this model takes {len(names)} inputs: send a msgpack map of .npy "
                                              f"arrays with the keys {names} (Content-Type application/msgpack)")
    value = unpack_msgpack(body, "inference inputs", len(names))
    if not isinstance(value, dict) or sorted(value) != sorted(names) or not all(
            isinstance(v, bytes) for v in value.values()):
        raise ServiceError("invalid_request", f"send a msgpack map with exactly the keys {names}, each .npy bytes")
    arrays = []
    for spec in specs:
        array = decode_npy(value[spec["name"]], as_float=False)
        if array.ndim != len(spec["shape"]) + 1 or (arrays and array.shape[0] != arrays[0].shape[0]):
            raise ServiceError("invalid_request", f"input {spec['name']!r} must be (batch, {len(spec['shape'])} more "
                                                  f"axes) with the same batch as {names[0]!r}, not {array.shape}")
        arrays.append(_cast(array, spec.get("dtype", "float32")))
    if arrays[0].shape[0] > max_rows:
        raise ServiceError("work_limit_exceeded", f"{arrays[0].shape[0]} samples; this server's limit per request "
                                                  f"is {max_rows}")
    return tuple(arrays)


def plaintext_inputs(summary: dict, body: bytes, content_type: str, max_rows: int) -> tuple[tuple, bool]:
    """The model's inputs from a request body, and whether one sample was sent alone (answered without a batch
    axis)."""
    specs = summary.get("inputs") or []
    if len(specs) > 1:
        return _named_inputs(specs, body, content_type, max_rows), False
    x = decode_npy(body)
    shape = tuple(summary["input_shape"] or ())
    n_features = int(np.prod(shape)) if shape else summary["n_features"]  # token ids, not their embeddings
    if len(shape) > 1 and x.ndim in (len(shape), len(shape) + 1) and x.shape[x.ndim - len(shape):] == shape:
        x = x.reshape(x.shape[:x.ndim - len(shape)] + (n_features,))  # samples in the model's input shape
    single = x.ndim == 1
    rows = x.reshape(1, -1) if single else x
    if rows.ndim != 2 or rows.shape[1] != n_features:
        raise ServiceError("invalid_request", f"send samples of {n_features} features as (batch, {n_features}) or "
                                              f"({n_features},), or in the input shape {list(shape)}, not {x.shape}")
    if rows.shape[0] > max_rows:
        raise ServiceError("work_limit_exceeded", f"{rows.shape[0]} samples; this server's limit per request is "
                                                  f"{max_rows}")
    rows = rows.reshape(-1, *shape) if shape else rows
    return (_cast(rows, specs[0].get("dtype", "float32") if specs else "float32"),), single
