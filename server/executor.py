"""How jobs run: one small interface, and the default that runs them in local worker processes.

The routes never see processes: they hand a `JobTask` (server.job_messages) to an `Executor` and get a `concurrent.futures.Future`
of a `JobOutcome` back, so a distributed engine can replace `LocalProcessExecutor` without touching them.

Tenant isolation: OpenFHE keeps evaluation keys in a process-global cache keyed by key tag, so two tenants'
keys must never be loaded in one process at once. The API process never loads keys at all; each worker holds
at most one key set, clears every OpenFHE cache before loading another one (and after any failure), and
refuses ciphertexts whose key tag is not the job's key set's (see `server.worker`).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import multiprocessing
import os
import pickle
import resource
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import reduction

from .fair_queue import FairQueue, Work
from .job_messages import JobTask, KeySetCheck
from .worker_start import (
    WorkerStartFailed, await_ready, refuse_start_in_bootstrapping_worker, signal_ready, start_fork_server,
)

__all__ = ["Executor", "LocalProcessExecutor", "die_with_parent"]

_PARENT_POLL_SECONDS = 0.25
_CLOSE_SECONDS = 5.0
_ARENA_BYTES = 64 << 20  # a batched model request at ring 2^14 is 48 MiB of ciphertexts


class Executor(ABC):
    """Runs jobs and key-set checks somewhere other than the API process."""

    @abstractmethod
    def submit(self, task: JobTask) -> Future:
        """Start `task`; the future resolves to its JobOutcome."""

    @abstractmethod
    def check_keyset(self, check: KeySetCheck) -> Future:
        """Check an uploaded key set; the future resolves to a JobOutcome whose key_tag names the key pair."""

    @abstractmethod
    def submit_call(self, fn, *args) -> Future:
        """Run the module-level function `fn(*args)` away from the API process (plaintext inference); the future
        resolves to its result."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop accepting work and release the workers."""


def die_with_parent() -> None:
    """In a worker: end this process once the process that started it is gone, so a killed service leaves no workers.

    A daemon thread polls the parent's pid (a dead parent's children are re-parented), so a worker in the middle of
    a long job ends too, not only an idle one that finds its pipe closed. The parent is the service itself or its
    fork server, which exits as soon as the service is gone. Linux's PR_SET_PDEATHSIG is not used: it
    fires when the *thread* that spawned the worker ends, not the process, which once killed healthy workers
    mid-service (spawned from request threads that anyio retires after 10 idle seconds).
    """
    parent_pid = os.getppid()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="einfhe-parent-watch", daemon=True).start()


class LocalProcessExecutor(Executor):
    """`workers` worker processes (forked from a fork server: `start`), each driven by one thread of this executor
    over a pipe of its own.

    A job runs on one of the executor's threads, which hands it to that thread's worker process and reads the
    outcome back from the same pipe: no manager or feeder thread in between (ProcessPoolExecutor's ~0.5 ms of
    hand-offs per job), and a worker serves one job at a time.

    Each worker runs OpenFHE with `threads` OpenMP threads (OMP_NUM_THREADS, inherited by the worker processes,
    unless the environment already sets it): the workers already use the cores in parallel, and OpenMP threads
    on top of them oversubscribe the machine (a batched model inference measured 54 s instead of 7 s under load).
    For the same reason each runs a plan's steps one at a time (EINFHE_WORKERS=1 unless set; `einfhe.runtime.scheduler`).
    A worker takes the environment of this process as it is when the worker starts (not its fork server's, which
    keeps the one it started with), OpenMP's thread count included.

    A worker tells its thread when it has bootstrapped (`server.worker_start`): one that exits before that (a script
    that starts the service outside `if __name__ == "__main__":`, which every worker imports) fails the work it was
    started for with `worker_start_failed`, not as the work's fault, and the next work starts another process.

    A worker that dies (OpenFHE can abort the process on a crafted ciphertext whose checksum is right) takes only
    its own job with it: that job fails with BrokenProcessPool (`worker_crashed`), its thread starts a fresh
    process at once (forked from the fork server: 30-70 ms; a spawned interpreter: 0.6-1 s), and every
    other job, another tenant's among them, runs on as if nothing had happened.

    Which queued work a free thread takes is `server.fair_queue`'s choice (`order`): fair between tenants and
    sticky to the key set its worker holds, or in arrival order.

    A job's input tensors cross to its worker through a shared-memory buffer of `arena_bytes` per worker (a memfd
    reserved once), not the pipe, whose 1 MiB of socket ping-pong per one-sample inference cost ~0.3 ms; inputs
    larger than the buffer, or a system without memfd, use the pipe (`arena_bytes=0`: always).

    Each worker's address space is capped at `memory_bytes` (RLIMIT_AS; None: no cap), so a forged ciphertext whose
    serialized sizes make OpenFHE allocate gigabytes fails with MemoryError (`out_of_memory`) instead of taking
    the machine's memory (one such mutation grew a worker past 13 GiB).
    """

    def __init__(self, workers: int = 2, threads: int = 1, arena_bytes: int = _ARENA_BYTES,
                 order: str = "fair", start: str = "forkserver", memory_bytes: int | None = None) -> None:
        refuse_start_in_bootstrapping_worker("LocalProcessExecutor")
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        os.environ.setdefault("EINFHE_WORKERS", "1")
        self.workers = workers
        self.arena_bytes = arena_bytes
        self.memory_bytes = memory_bytes
        self._context = _worker_context(start)
        self._queue = FairQueue(order, workers=workers)
        self._lock = threading.Lock()
        self._processes: set[_WorkerProcess] = set()
        self._threads = [threading.Thread(target=self._serve, args=(i,), name=f"einfhe-job-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit_call(self, fn, *args) -> Future:
        """Run the module-level function `fn(*args)` in a worker process; a crash of that process raises
        BrokenProcessPool from the future."""
        return self._queue.put(Work("", None, fn, args))

    def submit(self, task: JobTask) -> Future:
        """Run the job in a worker process, fairly among tenants and preferably where its key set is loaded."""
        from . import worker  # the worker module imports openfhe; only its functions travel to workers

        return self._queue.put(Work(task.tenant, task.keyset_id, worker.run_job, (task,)))

    def check_keyset(self, check: KeySetCheck) -> Future:
        """Check the key set in a worker process (the API process never loads keys)."""
        from . import worker

        return self._queue.put(Work(check.tenant, None, worker.check_keyset, (check,), clears_keys=True))

    def _serve(self, index: int) -> None:
        """Executor thread `index`: take work from the fair queue and run it in this thread's worker process; a
        process that dies fails its own work only, is replaced at once (not when the next work, maybe another
        tenant's, comes) and puts the tenant on probation on this thread's worker (server.fair_queue), as does a job
        that ran out of memory."""
        process, holding = None, None
        while (work := self._queue.take(holding, index)) is not None:
            try:
                process = process or self._start_process()
                result = process.call(work.fn, work.args)
            except BrokenProcessPool as exc:
                self._queue.restrict(work.tenant, index)
                work.future.set_exception(exc)
                self._stop_process(process)
                process, holding = None, None
                with contextlib.suppress(OSError):  # no process now: the next work starts one
                    process = self._start_process()
                self._queue.done(work)  # only now: on probation, the tenant cannot crash another worker meanwhile
                continue
            except WorkerStartFailed as exc:  # not the work's fault; the next work starts another process
                self._stop_process(process)
                process, holding = None, None
                self._queue.done(work, index, holding)
                work.future.set_exception(exc)
            except BaseException as exc:  # noqa: BLE001 -- the call's own error, the caller's to handle
                holding = holding if work.keyset_id is None and not work.clears_keys else None
                self._queue.done(work, index, holding)
                work.future.set_exception(exc)
            else:
                if work.keyset_id is not None or work.clears_keys:  # a failed job clears the worker's key cache
                    holding = work.keyset_id if getattr(result, "ok", False) else None
                if getattr(result, "code", None) == "out_of_memory":  # as costly to the others as a crash
                    self._queue.restrict(work.tenant, index)
                self._queue.done(work, index, holding)  # idle with its keys before the answer goes out
                work.future.set_result(result)

    def _start_process(self) -> "_WorkerProcess":
        process = _WorkerProcess(self._context, self.arena_bytes, self.memory_bytes)
        with self._lock:
            self._processes.add(process)
        return process

    def _stop_process(self, process: "_WorkerProcess") -> None:
        with self._lock:
            self._processes.discard(process)
        process.close()

    def shutdown(self) -> None:
        """Cancel queued work, let running jobs finish, then stop the worker processes."""
        for work in self._queue.close():
            work.future.cancel()
        for thread in self._threads:
            thread.join()
        with self._lock:
            processes, self._processes = self._processes, set()
        for process in processes:
            process.close()


class _WorkerProcess:
    """One worker process, started from `context`, the parent's end of its pipe and their shared buffer (None
    without one)."""

    def __init__(self, context, arena_bytes: int, memory_bytes: int | None) -> None:
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_calls, args=(child, memory_bytes, dict(os.environ)),
                                        daemon=True, name="einfhe-worker")
        self._process.start()
        child.close()
        self._ready = False
        self._arena = None
        fd = _reserved_memfd(arena_bytes)
        try:
            self._conn.send(arena_bytes if fd is not None else 0)
            if fd is not None:
                reduction.send_handle(self._conn, fd, self._process.pid)
                self._arena = memoryview(mmap.mmap(fd, arena_bytes))
        except OSError:
            pass  # the process is already gone: the first call finds out
        finally:
            if fd is not None:
                os.close(fd)

    def _stage(self, args: tuple) -> dict[int, list[tuple[int, int]]] | None:
        """Copy the inputs of the JobTask arguments into the shared buffer; their (offset, length) by argument
        position, or None when there is no buffer or they do not fit (they then travel in the pipe)."""
        blobs = {i: arg.inputs for i, arg in enumerate(args) if isinstance(arg, JobTask) and arg.inputs}
        if self._arena is None or not blobs or sum(len(b) for bs in blobs.values() for b in bs) > len(self._arena):
            return None
        spans, offset = {}, 0
        for i, inputs in blobs.items():
            spans[i] = []
            for blob in inputs:
                self._arena[offset:offset + len(blob)] = blob
                spans[i].append((offset, len(blob)))
                offset += len(blob)
        return spans

    def call(self, fn, args):
        """Send `fn(*args)` to the process and return its result (or raise its exception); WorkerStartFailed when the
        process exited before it was ready."""
        if not self._ready:
            await_ready(self._conn, self._process)
            self._ready = True
        spans = self._stage(args)
        if spans:
            args = tuple(replace(arg, inputs=()) if i in spans else arg for i, arg in enumerate(args))
        try:
            self._conn.send((fn, args, spans))
            ok, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise BrokenProcessPool("the worker process running this job died") from exc
        if ok:
            return value
        raise value

    def close(self) -> None:
        """Ask the process to end (its pipe closes), and kill it if it does not within a few seconds."""
        self._conn.close()
        self._process.join(timeout=_CLOSE_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _reserved_memfd(size: int) -> int | None:
    """An anonymous shared-memory file of `size` bytes with its memory reserved now (so that writing to its mapping
    can never fault), or None when size is 0 or memfd or the memory is not available."""
    if size <= 0 or not hasattr(os, "memfd_create"):
        return None
    try:
        fd = os.memfd_create("einfhe-job-inputs", os.MFD_CLOEXEC)
    except OSError:
        return None
    try:
        os.ftruncate(fd, size)
        os.posix_fallocate(fd, 0, size)
    except OSError:
        os.close(fd)
        return None
    return fd


def _worker_context(start: str):
    """Where worker processes come from (`start`): "forkserver", forked from a fork server that has already imported
    the worker's modules (OpenFHE among them), so a worker that crashed is replaced in tens of milliseconds and
    without the CPU second a fresh interpreter's imports take from the other workers (spawned where the platform
    has no fork server; the fork server starts now, on this process's sys.path); or "spawn", a fresh interpreter
    each."""
    if start not in ("forkserver", "spawn"):
        raise ValueError(f"unknown worker start method {start!r}: forkserver or spawn")
    if start == "spawn" or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["server.worker"])  # no effect once this process's fork server runs
    start_fork_server()
    return context


def _adopt_environment(environment: dict[str, str]) -> None:
    """Make `environment` (the service's when it started this worker) this worker's: a forked worker would otherwise
    have its fork server's, as it was when the fork server started. OpenMP read OMP_NUM_THREADS when OpenFHE was
    loaded, so its thread count is set again through the OpenMP runtime already loaded, if any."""
    os.environ.clear()
    os.environ.update(environment)
    threads = environment.get("OMP_NUM_THREADS", "").strip()
    if not threads.isdigit() or int(threads) < 1:
        return
    try:
        with open("/proc/self/maps") as maps:  # Linux: the shared libraries this process has loaded
            runtimes = {line.split()[-1] for line in maps if "/libgomp" in line or "/libomp" in line}
    except OSError:
        return
    for path in runtimes:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(path).omp_set_num_threads(int(threads))


def _serve_calls(conn, memory_bytes: int | None, environment: dict[str, str]) -> None:
    """A worker process's loop: adopt the service's environment, take the shared buffer, say it is ready, then run
    each call received on `conn` and send back (True, result) or (False, error), until the pipe closes or the parent
    is gone."""
    die_with_parent()
    _adopt_environment(environment)
    if memory_bytes is not None:  # the soft limit: allocations past it fail (MemoryError, std::bad_alloc)
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        arena_bytes = conn.recv()
        arena = None
        if arena_bytes:
            fd = reduction.recv_handle(conn)
            arena = memoryview(mmap.mmap(fd, arena_bytes))
            os.close(fd)
        signal_ready(conn)
    except (EOFError, OSError):
        return
    while True:
        try:
            fn, args, spans = conn.recv()
        except (EOFError, OSError):
            return
        if spans:  # the JobTask arguments' inputs wait in the shared buffer: views of it, valid during the call
            args = tuple(replace(arg, inputs=tuple(arena[o:o + n] for o, n in spans[i])) if i in spans else arg
                         for i, arg in enumerate(args))
        try:
            reply = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 -- the call's own exception, raised again in the parent
            reply = (False, exc)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # an unpicklable result or error
            conn.send((False, RuntimeError(f"the worker could not send back {type(reply[1]).__name__}: {exc}")))
