"""What runs inside a worker process: check an uploaded key set, run one job.

A worker holds at most one key set at a time. Loading another one first clears every OpenFHE cache
(evaluation keys and crypto contexts), and any failure clears them too, so a job only ever evaluates with
its own tenant's keys; ciphertexts are also checked to carry the job's key tag. Parsed plans and plain operands
stay in small per-process caches (server/file_cache.py: by text, or by file path and identity); they hold no keys.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import functools
import time
from pathlib import Path

import numpy as np

from einfhe import (
    BackendError, Context, CorruptBlobError, EinsumError, LayoutError, ParameterError, Parameters, Plan, PlanError,
    SerializationError, context_from_evaluation_keys, tensor_from_bytes, tensor_to_bytes,
)
from einfhe.backends.openfhe import OpenFHEBackend, deserialize_secret_key, release_openfhe_caches

from .codecs import decode_keyset
from .errors import ServiceError
from .executor import JobOutcome, JobTask, KeySetCheck
from .file_cache import FileCache, load_npy

__all__ = ["check_keyset", "clear_openfhe_state", "run_job"]

class KeySetDeleted(Exception):
    """The key set a job names was deleted while the job waited."""


_ERROR_CODES = (
    (KeySetDeleted, "keyset_deleted"),
    (CorruptBlobError, "corrupt_blob"),  # a stored blob damaged on disk since it was checked
    (SerializationError, "malformed_blob"),
    (EinsumError, "invalid_einsum"),
    (LayoutError, "invalid_einsum"),
    (ParameterError, "plan_error"),
    (PlanError, "plan_error"),
    (BackendError, "backend_error"),
    (MemoryError, "malformed_blob"),  # openfhe answers some corrupt blobs with std::bad_alloc
    (ServiceError, "malformed_blob"),
)
_loaded: dict = {}  # {"keyset_id": ..., "backend": OpenFHEBackend}: the one key set this process holds
_plains: FileCache[np.ndarray] = FileCache(load_npy)  # plain operands (weights), read once per file


def clear_openfhe_state() -> None:
    """Drop every evaluation key and crypto context OpenFHE caches in this process."""
    release_openfhe_caches()
    _loaded.clear()


def _is_secret_key(data: bytes) -> bool:
    """True when `data` deserializes as an OpenFHE private key."""
    try:
        deserialize_secret_key(data)
    except SerializationError:
        return False
    return True


def _failure(exc: BaseException, start: float) -> JobOutcome:
    clear_openfhe_state()
    code = next((code for kind, code in _ERROR_CODES if isinstance(exc, kind)), None)
    if code is None:
        raise exc
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return JobOutcome(False, time.perf_counter() - start, code=code, message=message)


def check_keyset(check: KeySetCheck) -> JobOutcome:
    """Refuse secret keys, load the evaluation keys and check they cover the declared rotations."""
    start = time.perf_counter()
    clear_openfhe_state()
    try:
        data = Path(check.path).read_bytes()
        for name, part in decode_keyset(data).parts.items():
            if part and _is_secret_key(part):
                clear_openfhe_state()
                return JobOutcome(False, time.perf_counter() - start, code="secret_key_refused",
                                  message=f"key part {name!r} is a secret key: the server never accepts one")
        backend = context_from_evaluation_keys(data, expected=Parameters.from_json(check.params)).backend
        missing = sorted(set(check.rotations) - backend.rotation_key_indices())
        if missing:
            raise SerializationError(f"the key set has no rotation keys for offsets {missing}")
        try:
            backend.cc.GetEvalMultKeyVector(backend.key_tag)
        except RuntimeError as exc:
            raise SerializationError("the key set has no relinearization key for its public key") from exc
        key_tag = backend.key_tag
    except Exception as exc:  # noqa: BLE001 -- mapped to a code by _failure, unknown kinds re-raised
        return _failure(exc, start)
    clear_openfhe_state()
    return JobOutcome(True, time.perf_counter() - start, key_tag=key_tag)


def _backend_for(task: JobTask) -> OpenFHEBackend:
    """The worker's backend for the task's key set, loading it (after clearing OpenFHE) if another is held."""
    if _loaded.get("keyset_id") != task.keyset_id:
        clear_openfhe_state()
        try:
            data = Path(task.keyset_path).read_bytes()
        except FileNotFoundError as exc:
            raise KeySetDeleted("the job's key set was deleted before the job ran") from exc
        backend = context_from_evaluation_keys(data, expected=Parameters.from_json(task.params)).backend
        _loaded.update(keyset_id=task.keyset_id, backend=backend)
    return _loaded["backend"]


@functools.lru_cache(maxsize=32)
def _plan(plan_json: str) -> Plan:
    """The plan a job's JSON describes, parsed once per distinct text (plans are never changed once parsed)."""
    return Plan.from_json(plan_json)


def run_job(task: JobTask) -> JobOutcome:
    """Run one encrypted einsum job and return the result tensor's bytes (or an error code)."""
    start = time.perf_counter()
    try:
        backend = _backend_for(task)
        plan = _plan(task.plan_json)
        ctx = Context(backend, backend.params, (plan,))
        operands: list = [None] * len(plan.operands)
        for op, blob in zip(plan.cipher_inputs, task.inputs):
            # the API checked the blob's header and checksum, and it has stayed in memory since (a pipe, not a disk)
            tensor = tensor_from_bytes(ctx, blob, max_cts=task.max_cts, checksum=False)
            if any(ct.GetKeyTag() != backend.key_tag for ct in tensor.cts):
                clear_openfhe_state()
                return JobOutcome(False, time.perf_counter() - start, code="key_mismatch",
                                  message=f"operand {op.operand} was encrypted under another key set than the job's")
            operands[op.operand] = tensor
        for position, path in task.plains:
            operands[position] = _plains.get(path)
        result = tensor_to_bytes(ctx, einfhe.run(ctx, plan, *operands))
    except Exception as exc:  # noqa: BLE001 -- mapped to a code by _failure, unknown kinds re-raised
        return _failure(exc, start)
    return JobOutcome(True, time.perf_counter() - start, result=result)
