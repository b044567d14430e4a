"""The messages between the API process and whatever runs its jobs (worker processes, a Dask cluster): a job
(`JobTask`), a key-set check (`KeySetCheck`), their outcome (`JobOutcome`), and the one table that turns an
exception a job raised into the job error code its tenant sees (`job_error_code`)."""

from __future__ import annotations

from dataclasses import dataclass

from einfhe import (
    BackendError, CorruptBlobError, DistributedError, EinsumError, LayoutError, OverBudgetError, ParameterError,
    PlanError, SerializationError,
)
from einfhe.crypto import KeyMismatchError

from .errors import ServiceError

__all__ = ["JobOutcome", "JobTask", "KeySetCheck", "KeySetDeleted", "job_error_code"]


@dataclass(frozen=True)
class JobTask:
    """Everything one job needs, by value or by path under the data directory."""

    job_id: str
    keyset_id: str
    keyset_path: str
    params: dict
    plan_json: str
    inputs: tuple[bytes, ...]               # tensor blobs, one per cipher operand, in operand order (checked by the API;
                                            # in a worker, views of its shared buffer, valid during the call)
    plains: tuple[tuple[int, str], ...]     # (operand position, .npy path) for plain operands
    max_cts: int
    tenant: str = ""                        # whose job it is (the executor schedules fairly between tenants)
    arrays: tuple = ()                      # (operand position, array): plain operands made for this job, in place
                                            # of the stored ones (an encoder's key masks for its sentence's length)


@dataclass(frozen=True)
class KeySetCheck:
    """An uploaded key set to check before it is accepted."""

    path: str
    params: dict
    rotations: tuple[int, ...]
    tenant: str = ""


@dataclass(frozen=True)
class JobOutcome:
    """What a task produced: result bytes, or a job error code and message; and the seconds it took."""

    ok: bool
    seconds: float
    result: bytes = b""
    code: str | None = None
    message: str | None = None
    key_tag: str | None = None


class KeySetDeleted(Exception):
    """The key set a job names was deleted while the job waited."""


# first match wins: subclasses before their bases
_ERROR_CODES = (
    (KeySetDeleted, "keyset_deleted"),
    (KeyMismatchError, "key_mismatch"),
    (DistributedError, "worker_crashed"),  # a Dask run whose parts kept being lost or ran out of time
    (CorruptBlobError, "corrupt_blob"),  # a stored blob damaged on disk since it was checked
    (SerializationError, "malformed_blob"),
    (EinsumError, "invalid_einsum"),
    (LayoutError, "invalid_einsum"),
    (ParameterError, "plan_error"),
    (OverBudgetError, "over_budget"),  # no plan fits the key or upload budget: the message says what to raise
    (PlanError, "plan_error"),
    (BackendError, "backend_error"),
    (ServiceError, "malformed_blob"),
)


def job_error_code(exc: BaseException) -> str | None:
    """The job error code for an exception a job raised (None for kinds no job code covers: a bug, re-raised):
    `out_of_memory` when an allocation failed on the way (OpenFHE's std::bad_alloc, wrapped by einfhe or not, as a
    forged ciphertext's sizes or a job too large for the worker's address-space cap cause)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, MemoryError):
            return "out_of_memory"
        cause = cause.__cause__ or cause.__context__
    return next((code for kind, code in _ERROR_CODES if isinstance(exc, kind)), None)
