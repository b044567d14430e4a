"""A worker process that exits while it starts is reported as such (worker_start_failed, with the likely cause: a
script that starts the service without `if __name__ == "__main__":`), never as the work's fault (issue 21)."""

from __future__ import annotations

import os

import pytest
from server_helpers import auth, seed_objects
from starlette.testclient import TestClient

import einfhe
from server import Settings, create_app
from server.executor import LocalProcessExecutor
from server.worker_start import WorkerStartFailed

pytestmark = pytest.mark.timeout(120)

_GUARD = 'under `if __name__ == "__main__":`'


def _small_cap_executor() -> LocalProcessExecutor:
    """One worker whose address-space cap is far below what a forked worker already maps, so that each worker
    process exits before it is ready (it cannot map its input buffer)."""
    return LocalProcessExecutor(1, memory_bytes=32 << 20)


def test_a_worker_that_exits_while_starting_fails_the_work_with_worker_start_failed_and_the_next_work_runs():
    executor = _small_cap_executor()
    try:
        with pytest.raises(WorkerStartFailed, match=r"exited \(exit code 0\) while starting") as failure:
            executor.submit_call(os.getpid).result(timeout=60)
        assert failure.value.code == "worker_start_failed" and failure.value.status == 503
        executor.memory_bytes = None  # the cause is gone: the next work starts a process that serves it
        assert executor.submit_call(os.getpid).result(timeout=60) != os.getpid()
    finally:
        executor.shutdown()


def test_a_job_whose_worker_cannot_start_fails_worker_start_failed_and_counts_no_crash(tmp_path, token_file, matvec):
    settings = Settings(data_dir=tmp_path / "data", token_file=token_file, workers=1, allow_insecure_test_params=True,
                        crash_limit=1)
    app = create_app(settings)
    with TestClient(app, base_url="http://einfhe", headers=auth("alice")) as alice:
        ids = seed_objects(alice, matvec)
    app = create_app(settings, _small_cap_executor())  # the same data: the plan and key set are there
    with TestClient(app, base_url="http://einfhe", headers=auth("alice")) as alice:
        tensor = einfhe.tensor_to_bytes(matvec["ctx"], einfhe.encrypt(matvec["ctx"], matvec["x"],
                                                                       matvec["plan"].input_layout(1)))
        for _ in range(2):  # crash_limit=1: a counted crash would refuse the second job (429 tenant_quarantined)
            job = alice.post("/jobs", content=tensor, headers={"Content-Type": "application/octet-stream"},
                             params={"plan_id": ids["plan_id"], "keyset_id": ids["keyset_id"], "wait": 30})
            assert job.status_code != 429, job.text
            row = alice.get(f"/jobs/{job.headers.get('X-Einfhe-Job') or job.json()['id']}").json()
            assert row["status"] == "failed" and row["error"]["code"] == "worker_start_failed", row
            assert _GUARD in row["error"]["message"]
