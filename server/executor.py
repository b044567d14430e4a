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
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
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

    A worker that dies (OpenFHE can abort the process on a crafted ciphertext whose checksum is right) breaks the
    whole pool, and every job in flight in it. Those jobs run again, each alone in a fresh process (at most
    `workers` at once): a job that kills its process on its own fails with BrokenProcessPool (`worker_crashed`);
    the others, another tenant's among them, finish as if nothing had happened.
    """

    def __init__(self, workers: int = 2, threads: int = 1) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        os.environ.setdefault("EINFHE_WORKERS", "1")
        self.workers = workers
        self._lock = threading.Lock()
        self._alone = threading.BoundedSemaphore(workers)
        self._closed = False
        self._pool = self._new_pool()

    def _new_pool(self, workers: int | None = None) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers or self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=die_with_parent, initargs=(os.getpid(),))

    def _submit(self, fn: str, arg) -> Future:
        from . import worker  # the worker module imports openfhe; only its functions travel to workers

        return self.submit_call(getattr(worker, fn), arg)

    def submit_call(self, fn, arg) -> Future:
        """Run the module-level function `fn(arg)` in the pool (again alone in a fresh process if the pool breaks)."""
        outer = _RetriedFuture()
        with self._lock:
            pool = self._pool
            try:
                inner = pool.submit(fn, arg)
            except BrokenProcessPool:
                self._pool = pool = self._new_pool()
                inner = pool.submit(fn, arg)
        outer.attempt = inner
        inner.add_done_callback(lambda f: self._settle(pool, outer, fn, arg, f))
        return outer

    def _settle(self, pool: ProcessPoolExecutor, outer: Future, fn, arg, inner: Future) -> None:
        """Pass the pool's outcome on or, when the pool broke under this job, run the job again alone."""
        if not inner.cancelled() and isinstance(inner.exception(), BrokenProcessPool):
            with self._lock:
                if self._pool is pool and not self._closed:
                    self._pool = self._new_pool()
                closed = self._closed
            if not closed:
                threading.Thread(target=self._run_alone, args=(outer, fn, arg), daemon=True,
                                 name="einfhe-job-alone").start()
                return
        _copy_outcome(inner, outer)

    def _run_alone(self, outer: Future, fn, arg) -> None:
        """Run `fn(arg)` in a process of its own; its outcome, a crash included, is final."""
        with self._alone:
            pool = self._new_pool(1)
            try:
                outer.attempt = pool.submit(fn, arg)
                _copy_outcome(outer.attempt, outer)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, task: JobTask) -> Future:
        """Run the job in a worker process."""
        return self._submit("run_job", task)

    def check_keyset(self, check: KeySetCheck) -> Future:
        """Check the key set in a worker process (the API process never loads keys)."""
        return self._submit("check_keyset", check)

    def shutdown(self) -> None:
        """Shut the pool down, cancelling queued work."""
        with self._lock:
            self._closed = True
            self._pool.shutdown(wait=True, cancel_futures=True)


class _RetriedFuture(Future):
    """A job's future over its attempts (in the pool, then alone after a crash): running while its attempt runs."""

    attempt: Future | None = None

    def running(self) -> bool:
        """True while the job's current attempt runs in a worker process."""
        attempt = self.attempt
        return (attempt is not None and attempt.running()) or super().running()


def _copy_outcome(source: Future, target: Future) -> None:
    """Give `target` the result, exception or cancellation of `source` (waiting for it if it has not finished)."""
    try:
        target.set_result(source.result())
    except CancelledError:
        target.cancel()
    except BaseException as exc:  # noqa: BLE001 -- the job's own exception, passed on as it is
        target.set_exception(exc)
