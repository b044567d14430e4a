"""Job lifecycle in the API process: submit to the executor, record outcomes, let requests wait for them."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool

from .errors import ServiceError
from .executor import Executor
from .job_messages import JobOutcome, JobTask
from .quarantine import Quarantine
from .store import Store
from .worker_start import WorkerStartFailed

__all__ = ["JobRunner"]

log = logging.getLogger("einfhe.server")


@dataclass
class _Flight:
    """A job this process admitted and has not finished recording."""

    tenant: str
    keyset_id: str
    input_bytes: int        # its inputs, held in memory until the worker is done with them
    keep: bool
    plain_paths: frozenset[str]  # the plain operands' blobs it reads
    quarantined: bool = False  # its tenant was quarantined while it waited: cancelled
    inline: str = "queued"  # keep=False only: "queued", "waiting" (a request awaits it inline), "claimed"
    done: Future = field(default_factory=Future)  # resolves once the outcome is recorded
    future: Future | None = None                  # the executor's, once submitted


class JobRunner:
    """Tracks the jobs this process started; their final state goes to the store (and so survives restarts).

    Queued and running jobs hold their input tensors in memory, at most `max_input_bytes` of them in all: past
    that, a new job is refused with `server_busy` (503) until earlier ones finish (one job alone is always admitted;
    its size is capped by the request body limit).

    A job submitted with `keep=False` whose result is handed to a request waiting for it inline is not written to
    storage (its row still records the success and the size); if no request is waiting when it finishes (the
    wait ran out, or nobody asked), the result is stored as usual, so it can still be fetched.
    """

    def __init__(self, store: Store, executor: Executor, max_input_bytes: int = 2 << 30,
                 quarantine: Quarantine | None = None) -> None:
        self.store = store
        self.executor = executor
        self.max_input_bytes = max_input_bytes
        self.quarantine = quarantine or Quarantine()
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def submit(self, task: JobTask, record: Callable[[], object], *, keep: bool = True) -> Future:
        """Admit the job (its inputs must fit in the memory left), `record()` it (its row), then hand it to the
        executor; the returned future resolves, once the outcome is recorded, to the result's bytes (None when the
        job failed). `keep=False`: a result answered inline is not stored (see the class docstring)."""
        wait = self.quarantine.retry_after(task.tenant)
        if wait is not None:
            raise ServiceError("tenant_quarantined", f"this tenant's jobs crashed {self.quarantine.limit} worker "
                                                     f"processes within {self.quarantine.window:.0f} s: jobs are "
                                                     f"refused for {wait:.0f} s more", {"Retry-After": str(math.ceil(wait))})
        flight = _Flight(task.tenant, task.keyset_id, sum(len(blob) for blob in task.inputs), keep,
                         frozenset(path for _, path in task.plains))
        with self._lock:
            held = sum(f.input_bytes for f in self._flights.values())
            if held and held + flight.input_bytes > self.max_input_bytes:
                raise ServiceError("server_busy", f"the server holds {held} bytes of queued job inputs (limit "
                                                  f"{self.max_input_bytes}): submit again when earlier jobs finish")
            self._flights[task.job_id] = flight
        try:
            record()
        except BaseException:
            with self._lock:
                del self._flights[task.job_id]
            raise
        with self._lock:
            flight.future = self.executor.submit(task)
        flight.future.add_done_callback(lambda f: self._finish(task.job_id, flight, f))
        return flight.done

    def _finish(self, job_id: str, flight: _Flight, future: Future) -> None:
        with self._lock:
            flight.input_bytes = 0
        result = None
        try:
            result = self._record(job_id, flight, future)
        except ServiceError as exc:  # the database cannot be written: the next start fails the job 'interrupted'
            log.error("job %s: its outcome could not be recorded: %s", job_id, exc.message)
        except Exception:  # noqa: BLE001 -- a bug while recording: the job fails, it never stays queued for good
            log.exception("job %s: recording its outcome raised", job_id)
            try:
                self.store.finish_job(job_id, "failed", error_code="internal_error",
                                      error_message="the server failed while recording the job's outcome")
            except ServiceError as exc:
                log.error("job %s: its failure could not be recorded: %s", job_id, exc.message)
        finally:
            # the flight goes before `done` resolves: a request answered from it may at once delete the job or its
            # key set, which is refused while the job is in flight (a waiter whose wait ran out holds `flight` and
            # `done` themselves, so it still finds the result)
            with self._lock:
                self._flights.pop(job_id, None)
            flight.done.set_result(result)

    def _record(self, job_id: str, flight: _Flight, future: Future) -> bytes | None:
        """Store the finished future's outcome (the result blob and row, or the job's error code); return the
        result's bytes when the job succeeded."""
        try:
            outcome: JobOutcome = future.result()
        except CancelledError:
            if flight.quarantined:
                self.store.finish_job(job_id, "failed", error_code="quarantined",
                                      error_message="this tenant's jobs crashed worker processes: queued jobs dropped")
            else:
                self.store.finish_job(job_id, "failed", error_code="interrupted", error_message="the server stopped")
        except BrokenProcessPool:
            self.store.finish_job(job_id, "failed", error_code="worker_crashed",
                                  error_message="the worker process running this job died (malformed input?)")
            self.crashed(flight.tenant)
        except WorkerStartFailed as exc:  # no worker could take the job: not its tenant's fault, no crash counted
            self.store.finish_job(job_id, "failed", error_code=exc.code, error_message=exc.message)
        except Exception:  # noqa: BLE001 -- recorded as a failed job, never lost
            log.exception("job %s raised", job_id)
            self.store.finish_job(job_id, "failed", error_code="internal_error", error_message="the job raised")
        else:
            if outcome.ok:
                with self._lock:
                    handed_over = not flight.keep and flight.inline == "waiting"
                    if handed_over:
                        flight.inline = "claimed"
                if handed_over:  # the waiting request answers it; as its client asked, it is not kept
                    self.store.finish_job(job_id, "succeeded", seconds=outcome.seconds, result_size=len(outcome.result))
                    return outcome.result
                return self._store_result(job_id, outcome)
            self.store.finish_job(job_id, "failed", error_code=outcome.code, error_message=outcome.message,
                                  seconds=outcome.seconds)
        return None

    def _store_result(self, job_id: str, outcome: JobOutcome) -> bytes | None:
        """Write the result blob, then the row; a full disk fails the job with the storage error's code."""
        try:
            self.store.write_blob("results", job_id, outcome.result)
        except ServiceError as exc:
            log.error("job %s: %s", job_id, exc.message)
            self.store.finish_job(job_id, "failed", error_code=exc.code, error_message=exc.message,
                                  seconds=outcome.seconds)
            return None
        self.store.finish_job(job_id, "succeeded", seconds=outcome.seconds, result_size=len(outcome.result))
        return outcome.result

    def crashed(self, tenant: str) -> None:
        """Count a worker crash against `tenant`; once it is quarantined, its queued jobs are cancelled."""
        if not self.quarantine.record_crash(tenant):
            return
        log.warning("tenant %s quarantined for %.0f s: its jobs crashed %d worker processes", tenant,
                    self.quarantine.seconds, self.quarantine.limit)
        with self._lock:
            queued = [f for f in self._flights.values() if f.tenant == tenant and f.future is not None]
            for flight in queued:
                flight.quarantined = True
        for flight in queued:
            if not flight.future.cancel():  # running already: it ends on its own
                flight.quarantined = False

    def in_flight(self, job_id: str) -> bool:
        """True while the job is queued or running in this process."""
        with self._lock:
            return job_id in self._flights

    def keyset_in_use(self, keyset_id: str) -> bool:
        """True while a job in flight runs with the key set."""
        with self._lock:
            return any(flight.keyset_id == keyset_id for flight in self._flights.values())

    def plain_in_use(self, path: str) -> bool:
        """True while a job in flight reads the plain operand blob at `path`."""
        with self._lock:
            return any(path in flight.plain_paths for flight in self._flights.values())

    def is_running(self, job_id: str) -> bool:
        """True while a worker is executing the job."""
        with self._lock:
            flight = self._flights.get(job_id)
        return flight is not None and flight.future is not None and flight.future.running()

    async def wait(self, job_id: str, timeout: float) -> None:
        """Wait on the event loop up to `timeout` seconds for the job to finish (at once if it is not in flight)."""
        with self._lock:
            flight = self._flights.get(job_id)
        if flight is not None and timeout > 0:
            await _wait(flight.done, timeout)

    async def inline_result(self, job_id: str, done: Future, timeout: float) -> bytes | None:
        """Await a submitted job's `done` future on the event loop (no thread waits) for up to `timeout` seconds:
        the result's bytes if the job succeeded by then, else None. A keep=False result handed over here is the
        caller's to answer: it is not stored."""
        with self._lock:
            flight = self._flights.get(job_id)
            if flight is not None and not flight.keep and flight.inline == "queued":
                flight.inline = "waiting"
        if await _wait(done, timeout):
            return done.result()
        with self._lock:
            claimed = flight is not None and flight.inline == "claimed"
            if flight is not None and flight.inline == "waiting":
                flight.inline = "queued"  # nobody is waiting any more: the result will be stored
        if claimed or done.done():  # it finished as the wait ran out: this request must answer it
            await asyncio.wrap_future(done)
            return done.result()
        return None


async def _wait(done: Future, timeout: float) -> bool:
    """Wait on the event loop up to `timeout` seconds for a concurrent future; True when it is done."""
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(done)), timeout)
    except asyncio.TimeoutError:
        pass
    return done.done()
