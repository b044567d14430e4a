"""Startup recovery after a crash: settle every job the last process left unfinished and remove torn writes.

A blob is written to a temporary name and renamed, and its row is inserted after it, so a crash of the process
(SIGKILL, the OOM killer) can leave three kinds of debris and nothing worse:

- a temporary file or directory (``.<name>...tmp``) of a write that never finished: removed;
- a blob whose row was never inserted (a key set that was being checked, a model being registered): removed,
  since no id was ever answered for it; so is every file under blobs/inputs (earlier versions kept job inputs there
  and never removed them; jobs now carry their inputs in memory);
- a job still `queued` or `running`: if its result blob was written before the crash and reads back whole
  (einfhe's header: kind, length and checksum), the job is recorded as succeeded; otherwise it is failed with
  the code `interrupted` and any partial result is removed. A job is never left running and never lost.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from einfhe import EinfheError
from einfhe.crypto.blobs import unpack_blob

from .store import Store

__all__ = ["Recovery", "recover"]

log = logging.getLogger("einfhe.server")

# blob kind -> (table, column) whose values name that kind's blobs (None: no row owns any, all are debris)
_OWNERS = {"keysets": ("keysets", "id"), "models": ("models", "id"), "results": ("jobs", "id"),
           "inputs": None, "operands": ("operands", "digest")}


@dataclass(frozen=True)
class Recovery:
    """What startup recovery did."""

    finished: int      # jobs whose result was written just before the crash: now succeeded
    interrupted: int   # jobs failed with code `interrupted`
    removed: int       # temporary files and blobs without a row, removed


def _owner_name(kind: str, name: str) -> str:
    """The row value a blob's file name refers to (operands are `<digest>.npy`)."""
    return name.split(".", 1)[0] if kind == "operands" else name


def _intact_result(store: Store, job_id: str) -> int | None:
    """The size of the job's result blob if it exists and passes einfhe's header checks, else None."""
    path = store.blob_path("results", job_id)
    try:
        data = path.read_bytes()
        unpack_blob(data, "tensor", None)
    except (OSError, EinfheError):
        return None
    return len(data)


def _remove(path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(store: Store) -> Recovery:
    """Settle the unfinished jobs of the last run and remove its torn writes (call once, before serving)."""
    finished = interrupted = 0
    for job_id in store.unfinished_jobs():
        size = _intact_result(store, job_id)
        if size is not None:
            store.finish_job(job_id, "succeeded", result_size=size)
            finished += 1
        else:
            store.blob_path("results", job_id).unlink(missing_ok=True)
            store.finish_job(job_id, "failed", error_code="interrupted",
                             error_message="the server stopped before the job finished; submit it again")
            interrupted += 1
    removed = 0
    for kind, owner in _OWNERS.items():
        owners = store.names(*owner) if owner else set()
        for path in store.blob_dir(kind).iterdir():
            torn = path.name.startswith(".") and path.name.endswith(".tmp")
            if torn or _owner_name(kind, path.name) not in owners:
                _remove(path)
                removed += 1
    if finished or interrupted or removed:
        log.warning("recovered from the last shutdown: %d job(s) finished from their written result, %d failed as "
                    "interrupted, %d torn or orphaned blob(s) removed", finished, interrupted, removed)
    return Recovery(finished, interrupted, removed)
