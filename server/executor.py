"""How jobs run: one small interface, and the default that runs them in local worker processes.

The routes never see processes: they hand a `JobTask` to an `Executor` and get a `concurrent.futures.Future`
of a `JobOutcome` back, so a distributed engine can replace `LocalProcessExecutor` without touching them.

Tenant isolation: OpenFHE keeps evaluation keys in a process-global cache keyed by key tag, so two tenants'
keys must never be loaded in one process at once. The API process never loads keys at all; each worker holds
at most one key set, clears every OpenFHE cache before loading another one (and after any failure), and
refuses ciphertexts whose key tag is not the job's key set's (see `server.worker`).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

__all__ = ["Executor", "JobOutcome", "JobTask", "KeySetCheck", "LocalProcessExecutor", "die_with_parent"]

_PARENT_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class JobTask:
    """Everything one job needs, by value or by path under the data directory."""

    job_id: str
    keyset_id: str
    keyset_path: str
    params: dict
    plan_json: str
    inputs: tuple[str, ...]                 # tensor blobs, one per cipher operand, in operand order
    plains: tuple[tuple[int, str], ...]     # (operand position, .npy path) for plain operands
    max_cts: int


@dataclass(frozen=True)
class KeySetCheck:
    """An uploaded key set to check before it is accepted."""

    path: str
    params: dict
    rotations: tuple[int, ...]


@dataclass(frozen=True)
class JobOutcome:
    """What a task produced: result bytes, or a job error code and message; and the seconds it took."""

    ok: bool
    seconds: float
    result: bytes = b""
    code: str | None = None
    message: str | None = None
    key_tag: str | None = None


class Executor(ABC):
    """Runs jobs and key-set checks somewhere other than the API process."""

    @abstractmethod
    def submit(self, task: JobTask) -> Future:
        """Start `task`; the future resolves to its JobOutcome."""

    @abstractmethod
    def check_keyset(self, check: KeySetCheck) -> Future:
        """Check an uploaded key set; the future resolves to a JobOutcome whose key_tag names the key pair."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop accepting work and release the workers."""


def die_with_parent(parent_pid: int) -> None:
    """In a worker: end this process once the service that started it is gone, so a killed service leaves no workers.

    A daemon thread polls the parent's pid (a dead parent's children are re-parented). Linux's PR_SET_PDEATHSIG is
    not used: it fires when the *thread* that spawned the worker ends, and the pool spawns workers from whichever
    request thread submits first (anyio's threads exit after 10 idle seconds), which killed healthy workers
    mid-service (their jobs failed as worker_crashed).
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="einfhe-parent-watch", daemon=True).start()


class LocalProcessExecutor(Executor):
    """A spawn-context ProcessPoolExecutor of `workers` processes; a crashed pool is replaced.

    Each worker runs OpenFHE with `threads` OpenMP threads (OMP_NUM_THREADS, inherited by the spawned processes,
    unless the environment already sets it): the workers already use the cores in parallel, and OpenMP threads
    on top of them oversubscribe the machine (a batched model inference measured 54 s instead of 7 s under load).
    For the same reason each runs a plan's steps one at a time (EINFHE_WORKERS=1 unless set; `einfhe.parallel`).
    """

    def __init__(self, workers: int = 2, threads: int = 1) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        os.environ.setdefault("EINFHE_WORKERS", "1")
        self.workers = workers
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=die_with_parent, initargs=(os.getpid(),))

    def _submit(self, fn, arg) -> Future:
        from . import worker  # the worker module imports openfhe; only its functions travel to workers

        with self._lock:
            pool = self._pool
            try:
                future = pool.submit(getattr(worker, fn), arg)
            except BrokenProcessPool:
                self._pool = pool = self._new_pool()
                future = pool.submit(getattr(worker, fn), arg)
        future.add_done_callback(lambda f: self._replace_if_broken(pool, f))
        return future

    def _replace_if_broken(self, pool: ProcessPoolExecutor, future: Future) -> None:
        if isinstance(future.exception(), BrokenProcessPool):
            with self._lock:
                if self._pool is pool:
                    self._pool = self._new_pool()

    def submit(self, task: JobTask) -> Future:
        """Run the job in a worker process."""
        return self._submit("run_job", task)

    def check_keyset(self, check: KeySetCheck) -> Future:
        """Check the key set in a worker process (the API process never loads keys)."""
        return self._submit("check_keyset", check)

    def shutdown(self) -> None:
        """Shut the pool down, cancelling queued work."""
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)
