"""Queued jobs hold their input tensors in memory (they go to the worker through a pipe, never to disk), so the
service caps the bytes they hold: past the cap a new job is refused with server_busy (503) and leaves no row."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from server.errors import CODES, ServiceError
from server.executor import Executor
from server.job_messages import JobOutcome, JobTask
from server.jobs import JobRunner
from server.store import Store


class HeldExecutor(Executor):
    """Keeps every submitted job's future unfinished until the test finishes it."""

    def __init__(self) -> None:
        self.futures: dict[str, Future] = {}

    def submit(self, task: JobTask) -> Future:
        self.futures[task.job_id] = Future()
        return self.futures[task.job_id]

    def check_keyset(self, check) -> Future:
        raise NotImplementedError

    def submit_call(self, fn, *args) -> Future:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


def _task(job_id: str, size: int) -> JobTask:
    return JobTask(job_id, "k", "keys", {}, "{}", (bytes(size),), (), 1)


def _row(store: Store, job_id: str):
    return lambda: store.insert("jobs", id=job_id, tenant="alice", plan_id="p", keyset_id="k", inputs=[],
                                plains=[], status="queued", error_code=None, error_message=None, finished=None,
                                seconds=None, result_size=None)


def test_inputs_past_the_cap_are_refused_until_earlier_jobs_finish(tmp_path):
    store, executor = Store(tmp_path), HeldExecutor()
    runner = JobRunner(store, executor, max_input_bytes=1000)
    try:
        first = runner.submit(_task("a", 600), _row(store, "a"))
        with pytest.raises(ServiceError) as refused:
            runner.submit(_task("b", 600), _row(store, "b"))
        assert refused.value.code == "server_busy" and CODES["server_busy"] == 503
        assert store.get("jobs", "alice", id="b") is None  # a refused job leaves no row behind
        runner.submit(_task("c", 400), _row(store, "c"))  # what still fits is admitted
        executor.futures["a"].set_result(JobOutcome(True, 0.1, result=b"result"))
        assert first.result(timeout=5) == b"result" and store.get("jobs", "alice", id="a")["status"] == "succeeded"
        runner.submit(_task("b", 600), _row(store, "b"))  # a's bytes are released
        assert store.get("jobs", "alice", id="b")["status"] == "queued"
    finally:
        store.close()


def test_one_job_larger_than_the_cap_runs_when_it_is_alone(tmp_path):
    store, executor = Store(tmp_path), HeldExecutor()
    runner = JobRunner(store, executor, max_input_bytes=100)
    try:
        runner.submit(_task("big", 500), _row(store, "big"))
        with pytest.raises(ServiceError):
            runner.submit(_task("small", 1), _row(store, "small"))
        executor.futures["big"].set_result(JobOutcome(False, 0.1, code="backend_error", message="failed"))
        runner.submit(_task("small", 1), _row(store, "small"))
    finally:
        store.close()


def test_a_row_that_cannot_be_recorded_releases_its_bytes(tmp_path):
    store, executor = Store(tmp_path), HeldExecutor()
    runner = JobRunner(store, executor, max_input_bytes=1000)

    def failing_record():
        raise ServiceError("storage_unavailable", "the database is read-only")

    try:
        with pytest.raises(ServiceError):
            runner.submit(_task("a", 600), failing_record)
        assert executor.futures == {}  # never handed to the executor
        runner.submit(_task("b", 900), _row(store, "b"))
    finally:
        store.close()


def test_a_failure_while_recording_an_outcome_fails_the_job_instead_of_leaving_it_queued(tmp_path, monkeypatch):
    """A job whose outcome cannot be recorded for an unexpected reason must not stay `queued` for good (a client
    long-polling it would be answered at once, forever)."""
    store, executor = Store(tmp_path), HeldExecutor()
    runner = JobRunner(store, executor)
    try:
        done = runner.submit(_task("a", 10), _row(store, "a"))

        def broken_write(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(store, "write_blob", broken_write)
        executor.futures["a"].set_result(JobOutcome(True, 0.1, result=b"result"))
        assert done.result(timeout=5) is None
        row = store.get("jobs", "alice", id="a")
        assert (row["status"], row["error_code"]) == ("failed", "internal_error")
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_keep_false_result_is_stored_unless_a_request_takes_it_inline(tmp_path):
    store, executor = Store(tmp_path), HeldExecutor()
    runner = JobRunner(store, executor)
    results = store.blob_dir("results")
    try:
        late = runner.submit(_task("late", 10), _row(store, "late"), keep=False)
        assert await runner.inline_result("late", late, 0.05) is None  # the wait runs out first
        executor.futures["late"].set_result(JobOutcome(True, 0.1, result=b"late result"))
        assert (results / "late").read_bytes() == b"late result"  # nobody took it inline: kept

        taken = runner.submit(_task("taken", 10), _row(store, "taken"), keep=False)
        waiting = asyncio.ensure_future(runner.inline_result("taken", taken, 30))
        await asyncio.sleep(0.05)
        executor.futures["taken"].set_result(JobOutcome(True, 0.1, result=b"taken result"))
        assert await waiting == b"taken result"
        assert not (results / "taken").exists()
        row = store.get("jobs", "alice", id="taken")
        assert (row["status"], row["result_size"]) == ("succeeded", len(b"taken result"))
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_result_claimed_as_the_inline_wait_runs_out_is_still_answered(tmp_path, monkeypatch):
    """The job finishes and is handed to the waiting request at the moment its wait runs out: the request must
    answer it (it is not stored, so nobody else could)."""
    store, executor = Store(tmp_path), HeldExecutor()
    runner = JobRunner(store, executor)
    recording, release = threading.Event(), threading.Event()
    finish_job = store.finish_job

    def slow_finish(*args, **kwargs):  # holds the job between its hand-over and its future's resolution
        recording.set()
        release.wait(10)
        finish_job(*args, **kwargs)

    try:
        done = runner.submit(_task("j", 10), _row(store, "j"), keep=False)
        monkeypatch.setattr(store, "finish_job", slow_finish)
        waiting = asyncio.ensure_future(runner.inline_result("j", done, 0.3))
        await asyncio.sleep(0.05)
        finisher = threading.Thread(
            target=lambda: executor.futures["j"].set_result(JobOutcome(True, 0.1, result=b"the result")))
        finisher.start()
        assert await asyncio.get_running_loop().run_in_executor(None, recording.wait, 10)
        await asyncio.sleep(0.4)  # the wait has run out while the job was being recorded
        release.set()
        assert await waiting == b"the result"
        finisher.join(10)
        assert not (store.blob_dir("results") / "j").exists()
    finally:
        release.set()
        store.close()


def test_jobs_and_their_key_sets_count_as_in_flight_until_recorded(tmp_path):
    store, executor = Store(tmp_path), HeldExecutor()
    runner = JobRunner(store, executor)
    try:
        runner.submit(_task("a", 10), _row(store, "a"))
        assert runner.in_flight("a") and runner.keyset_in_use("k") and not runner.keyset_in_use("other")
        executor.futures["a"].set_result(JobOutcome(True, 0.1, result=b"r"))
        assert not runner.in_flight("a") and not runner.keyset_in_use("k")
    finally:
        store.close()


def test_a_job_is_out_of_flight_when_its_answer_resolves(tmp_path):
    """Whoever `done` wakes (a request answering the job inline) may at once delete the job or its key set, which
    is refused while the job is in flight: the flight must be gone by then, not a moment later."""
    store, executor = Store(tmp_path), HeldExecutor()
    runner = JobRunner(store, executor)
    try:
        done = runner.submit(_task("a", 10), _row(store, "a"))
        seen = []
        done.add_done_callback(lambda _: seen.append((runner.in_flight("a"), runner.keyset_in_use("k"))))
        executor.futures["a"].set_result(JobOutcome(True, 0.1, result=b"r"))
        assert seen == [(False, False)]
    finally:
        store.close()
