"""Job lifecycle in the API process: submit to the executor, record outcomes, let requests wait for them."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool

from .errors import ServiceError
from .executor import Executor, JobOutcome, JobTask
from .store import Store

__all__ = ["JobRunner"]

log = logging.getLogger("einfhe.server")


class JobRunner:
    """Tracks the jobs this process started; their final state goes to the store (and so survives restarts)."""

    def __init__(self, store: Store, executor: Executor) -> None:
        self.store = store
        self.executor = executor
        self._lock = threading.Lock()
        self._futures: dict[str, Future] = {}
        self._done: dict[str, threading.Event] = {}

    def submit(self, task: JobTask) -> None:
        """Hand a queued job to the executor."""
        with self._lock:
            self._done[task.job_id] = threading.Event()
            future = self.executor.submit(task)
            self._futures[task.job_id] = future
        future.add_done_callback(lambda f: self._finish(task.job_id, f))

    def _finish(self, job_id: str, future: Future) -> None:
        try:
            self._record(job_id, future)
        except ServiceError as exc:  # the database cannot be written: the next start fails the job 'interrupted'
            log.error("job %s: its outcome could not be recorded: %s", job_id, exc.message)
        finally:
            with self._lock:
                self._futures.pop(job_id, None)
                event = self._done.pop(job_id, None)
            if event is not None:
                event.set()

    def _record(self, job_id: str, future: Future) -> None:
        """Store the finished future's outcome: the result blob and row, or the job's error code."""
        try:
            outcome: JobOutcome = future.result()
        except CancelledError:
            self.store.finish_job(job_id, "failed", error_code="interrupted", error_message="the server stopped")
        except BrokenProcessPool:
            self.store.finish_job(job_id, "failed", error_code="worker_crashed",
                                  error_message="the worker process running this job died (malformed input?)")
        except Exception:  # noqa: BLE001 -- recorded as a failed job, never lost
            log.exception("job %s raised", job_id)
            self.store.finish_job(job_id, "failed", error_code="internal_error", error_message="the job raised")
        else:
            if outcome.ok:
                self._store_result(job_id, outcome)
            else:
                self.store.finish_job(job_id, "failed", error_code=outcome.code, error_message=outcome.message,
                                      seconds=outcome.seconds)

    def _store_result(self, job_id: str, outcome: JobOutcome) -> None:
        """Write the result blob, then the row; a full disk fails the job with the storage error's code."""
        try:
            self.store.write_blob("results", job_id, outcome.result)
        except ServiceError as exc:
            log.error("job %s: %s", job_id, exc.message)
            self.store.finish_job(job_id, "failed", error_code=exc.code, error_message=exc.message,
                                  seconds=outcome.seconds)
            return
        self.store.finish_job(job_id, "succeeded", seconds=outcome.seconds, result_size=len(outcome.result))

    def is_running(self, job_id: str) -> bool:
        """True while a worker is executing the job."""
        with self._lock:
            future = self._futures.get(job_id)
        return future is not None and future.running()

    def wait(self, job_id: str, timeout: float) -> None:
        """Block up to `timeout` seconds for the job to finish (returns at once if it is not in flight)."""
        with self._lock:
            event = self._done.get(job_id)
        if event is not None and timeout > 0:
            event.wait(timeout)
