"""What runs inside a worker process: check an uploaded key set, run one job.

A worker holds at most one key set at a time (einfhe.crypto.key_cache). Loading another one first clears every
OpenFHE cache (evaluation keys and crypto contexts), and any failure clears them too, so a job only ever evaluates
with its own tenant's keys; ciphertexts are also checked to carry the job's key tag. Parsed plans and plain operands
stay in small per-process caches (server/file_cache.py: by text, or by file path and identity); they hold no keys.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import functools
import resource
import time
from pathlib import Path

import numpy as np

from einfhe import (
    Context, Parameters, Plan, SerializationError, context_from_evaluation_keys, tensor_from_bytes, tensor_to_bytes,
)
from einfhe.backends.openfhe import deserialize_secret_key
from einfhe.crypto import cached_backend, clear_key_cache, require_key_tag

from .codecs import decode_keyset
from .file_cache import FileCache, load_npy
from .job_messages import JobOutcome, JobTask, KeySetCheck, KeySetDeleted, job_error_code

__all__ = ["check_keyset", "run_job"]

_plains: FileCache[np.ndarray] = FileCache(load_npy)  # plain operands (weights), read once per file


def _is_secret_key(data: bytes) -> bool:
    """True when `data` deserializes as an OpenFHE private key."""
    try:
        deserialize_secret_key(data)
    except SerializationError:
        return False
    return True


def _failure(exc: BaseException, start: float) -> JobOutcome:
    """The outcome of a task that raised `exc`, after clearing every key of this process (unknown kinds re-raised)."""
    clear_key_cache()
    code = job_error_code(exc)
    if code is None:
        raise exc
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if code == "out_of_memory":
        message = _out_of_memory_message(message)
    return JobOutcome(False, time.perf_counter() - start, code=code, message=message)


def _out_of_memory_message(detail: str) -> str:
    """What an allocation that failed in this worker means, with the worker's address-space cap."""
    cap = resource.getrlimit(resource.RLIMIT_AS)[0]
    limit = "no cap" if cap == resource.RLIM_INFINITY else f"a cap of {cap >> 20} MiB, EINFHE_WORKER_MEMORY_BYTES"
    return (f"the job needed more memory than a worker process may use ({limit}): a ciphertext whose serialized "
            f"sizes are forged, or a job too large for this server's workers ({detail})")


def check_keyset(check: KeySetCheck) -> JobOutcome:
    """Refuse secret keys, load the evaluation keys and check they cover the declared rotations."""
    start = time.perf_counter()
    clear_key_cache()
    try:
        data = Path(check.path).read_bytes()
        for name, part in decode_keyset(data).parts.items():
            if part and _is_secret_key(part):
                clear_key_cache()
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
    clear_key_cache()
    return JobOutcome(True, time.perf_counter() - start, key_tag=key_tag)


def _keyset_bytes(path: str) -> bytes:
    """The evaluation-key blob of a job's key set (KeySetDeleted when it was removed while the job waited)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise KeySetDeleted("the job's key set was deleted before the job ran") from exc


@functools.lru_cache(maxsize=32)
def _plan(plan_json: str) -> Plan:
    """The plan a job's JSON describes, parsed once per distinct text (plans are never changed once parsed)."""
    return Plan.from_json(plan_json)


def run_job(task: JobTask) -> JobOutcome:
    """Run one encrypted einsum job and return the result tensor's bytes (or an error code)."""
    start = time.perf_counter()
    try:
        backend = cached_backend(task.keyset_id, lambda: _keyset_bytes(task.keyset_path), task.params)
        plan = _plan(task.plan_json)
        ctx = Context(backend, backend.params, (plan,))
        operands: list = [None] * len(plan.operands)
        for op, blob in zip(plan.cipher_inputs, task.inputs):
            # the API checked the blob's header and checksum, and it has stayed in memory since (a pipe, not a disk)
            tensor = tensor_from_bytes(ctx, blob, max_cts=task.max_cts, checksum=False)
            require_key_tag(backend, tensor.cts, f"operand {op.operand}")
            operands[op.operand] = tensor
        for position, path in task.plains:
            operands[position] = _plains.get(path)
        for position, array in task.arrays:
            operands[position] = array
        result = tensor_to_bytes(ctx, einfhe.run(ctx, plan, *operands))
    except Exception as exc:  # noqa: BLE001 -- mapped to a code by _failure, unknown kinds re-raised
        return _failure(exc, start)
    return JobOutcome(True, time.perf_counter() - start, result=result)
