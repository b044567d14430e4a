"""A job that kills its worker process fails alone: the jobs beside it and after it finish, and the executor keeps
serving with a fresh process (issue 8: one tenant's crafted ciphertext must not fail another tenant's job)."""

from __future__ import annotations

import os
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

from server.executor import LocalProcessExecutor

pytestmark = pytest.mark.timeout(300)


def square_or_die(x: int) -> int:
    """In a worker: x squared after a moment, or the process ends abruptly (as an OpenFHE abort does) for x < 0."""
    if x < 0:
        os._exit(134)
    time.sleep(0.2)
    return x * x


def test_a_crashing_job_fails_alone_and_the_jobs_beside_it_finish():
    executor = LocalProcessExecutor(2)
    try:
        before = [executor.submit_call(square_or_die, n) for n in (1, 2, 3)]
        crashing = executor.submit_call(square_or_die, -1)
        after = [executor.submit_call(square_or_die, n) for n in (4, 5, 6)]
        assert [f.result(timeout=240) for f in before + after] == [1, 4, 9, 16, 25, 36]
        with pytest.raises(BrokenProcessPool):
            crashing.result(timeout=240)
        assert executor.submit_call(square_or_die, 7).result(timeout=240) == 49  # a fresh process serves on
    finally:
        executor.shutdown()


def test_shutdown_cancels_queued_jobs_instead_of_rerunning_them():
    executor = LocalProcessExecutor(1)
    running = executor.submit_call(square_or_die, 2)
    queued = [executor.submit_call(square_or_die, n) for n in range(3, 8)]
    deadline = time.monotonic() + 120
    while not running.running() and not running.done():  # the service reports a job "running" from this
        assert time.monotonic() < deadline, "the first job never ran"
        time.sleep(0.01)
    executor.shutdown()
    assert running.result(timeout=60) == 4
    assert all(f.cancelled() or f.result(timeout=60) == n * n for f, n in zip(queued, range(3, 8)))
    assert any(f.cancelled() for f in queued)


def allocate(n: int) -> int:
    """In a worker: allocate and touch n bytes, return how many."""
    return len(bytearray(n))


def test_a_worker_past_its_memory_cap_fails_the_call_with_memory_error_and_serves_on():
    executor = LocalProcessExecutor(1, memory_bytes=1 << 30)
    try:
        with pytest.raises(MemoryError):
            executor.submit_call(allocate, 2 << 30).result(timeout=240)
        assert executor.submit_call(allocate, 64 << 20).result(timeout=240) == 64 << 20  # below the cap: served
    finally:
        executor.shutdown()


def environment_seen(name: str) -> tuple[str | None, int]:
    """In a worker: the variable `name` and the OpenMP runtime's thread count, as the worker sees them."""
    import ctypes

    with open("/proc/self/maps") as maps:
        runtime = next(line.split()[-1] for line in maps if "/libgomp" in line)
    return os.environ.get(name), ctypes.CDLL(runtime).omp_get_max_threads()


def test_a_worker_started_after_an_environment_change_runs_with_it(monkeypatch):
    """The fork server keeps the environment it started with; a worker started later takes the service's."""
    executor = LocalProcessExecutor(1)
    try:
        executor.submit_call(os.getpid).result(timeout=240)  # the fork server and a first worker are running
        monkeypatch.setenv("EINFHE_WORKERS", "3")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        with pytest.raises(BrokenProcessPool):  # its replacement starts now
            executor.submit_call(square_or_die, -1).result(timeout=240)
        assert executor.submit_call(environment_seen, "EINFHE_WORKERS").result(timeout=240) == ("3", 2)
    finally:
        executor.shutdown()
