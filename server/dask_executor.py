"""The service's jobs on Dask distributed: `DaskExecutor`, the same `Executor` interface as the local pool.

    DaskExecutor("tcp://scheduler:8786")       # an existing cluster
    DaskExecutor(workers=2)                    # a LocalCluster of 2 single-threaded worker processes

A job's plan is split into parts (`einfhe.plan.partition`) that run as Dask tasks (`einfhe.runtime.dask_runner`):
the API process reads the job's key set and tensor blobs and hands them over as bytes (it never loads keys into
OpenFHE), so the workers need no shared filesystem. Each worker keeps at most `cache_size` key sets
(default 1, the local pool's isolation: loading another tenant's keys first clears every OpenFHE cache), and
refuses ciphertexts whose key tag is not the job's key set's. A worker lost mid-job is replaced by the
engine and its tasks re-run; a job that still cannot finish fails with `worker_crashed`, never silently.
Workers of an external cluster run one thread each (`dask worker tcp://... --nthreads 1`, with
OMP_NUM_THREADS=1 or more where cores allow): OpenFHE's key cache is shared by a process's threads.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from einfhe import Plan
from einfhe.runtime.dask_runner import DaskRunner

from .executor import Executor
from .job_messages import JobOutcome, JobTask, KeySetCheck, job_error_code

__all__ = ["DaskExecutor"]


def _check_keyset_bytes(data: bytes, params: dict, rotations: tuple[int, ...]) -> JobOutcome:
    """Worker side of a key-set check: the local pool's check on a private copy of the uploaded bytes."""
    from . import worker

    with tempfile.TemporaryDirectory(prefix="einfhe-keyset-") as tmp:
        path = Path(tmp) / "keyset.bin"
        path.write_bytes(data)
        return worker.check_keyset(KeySetCheck(str(path), params, rotations))


class DaskExecutor(Executor):
    """Runs jobs on a Dask cluster: at `scheduler` when given, else on a LocalCluster it starts itself."""

    def __init__(self, scheduler: str | None = None, *, workers: int = 2, threads: int = 1, retries: int = 2,
                 cache_size: int = 1, timeout: float = 3600.0, max_jobs: int = 8) -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler is None:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=":0", env={"OMP_NUM_THREADS": str(threads)})
            scheduler = self.cluster.scheduler_address
        self.client = Client(scheduler, set_as_default=False)
        self.runner = DaskRunner(self.client, retries=retries, timeout=timeout, cache_size=cache_size)
        self.timeout = timeout
        self._jobs = ThreadPoolExecutor(max_jobs, thread_name_prefix="einfhe-dask-job")

    def _run(self, task: JobTask) -> JobOutcome:
        start = time.perf_counter()
        try:
            plan = Plan.from_json(task.plan_json)
            keys = Path(task.keyset_path).read_bytes()
            inputs = dict(zip((op.operand for op in plan.cipher_inputs), task.inputs))
            plains = {position: np.load(path, allow_pickle=False) for position, path in task.plains}
            plains.update(task.arrays)
            result = self.runner.run(plan, task.keyset_id, keys, inputs, plains, params=task.params,
                                     max_cts=task.max_cts)
        except Exception as exc:  # noqa: BLE001 -- mapped to a job code; unknown kinds re-raised
            code = job_error_code(exc)
            if code is None:
                raise
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            return JobOutcome(False, time.perf_counter() - start, code=code, message=message)
        return JobOutcome(True, time.perf_counter() - start, result=result)

    def _check(self, check: KeySetCheck) -> JobOutcome:
        data = Path(check.path).read_bytes()
        future = self.client.submit(_check_keyset_bytes, data, check.params, tuple(check.rotations), pure=False)
        return future.result(timeout=self.timeout)

    def submit(self, task: JobTask) -> Future:
        """Run the job's parts on the cluster."""
        return self._jobs.submit(self._run, task)

    def check_keyset(self, check: KeySetCheck) -> Future:
        """Check the key set on a worker (the API process never loads keys)."""
        return self._jobs.submit(self._check, check)

    def submit_call(self, fn, *args) -> Future:
        """Run the module-level function `fn(*args)` on a cluster worker."""
        return self._jobs.submit(lambda: self.client.submit(fn, *args, pure=False).result(timeout=self.timeout))

    def forget_keyset(self, keyset_id: str) -> None:
        """Release the cluster's copy of a deleted key set's blob."""
        self.runner.forget(keyset_id)

    def shutdown(self) -> None:
        """Cancel queued jobs, close the client, and stop the cluster when this executor started it."""
        self._jobs.shutdown(wait=True, cancel_futures=True)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
