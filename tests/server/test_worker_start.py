"""A worker process that exits while it starts is reported as such, never as the work's fault (issue 21): a script
that starts the service in-process without `if __name__ == "__main__":` gets one error, worker_start_failed, that
says to add the guard, and no service starts inside its workers; the same script under the guard runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from server_helpers import TOKENS, auth, seed_objects
from starlette.testclient import TestClient

import einfhe
from einfhe.params import error_bound
from server import Settings, create_app
from server.executor import LocalProcessExecutor
from server.worker_start import WorkerStartFailed

pytestmark = pytest.mark.timeout(120)

_GUARD = 'under `if __name__ == "__main__":`'
_SCRIPT = """\
import json
import sys
from pathlib import Path

import numpy as np
from client import Client, ClientError
from server.local import LocalServer
from server.settings import Settings


def main():
    tmp = Path(sys.argv[1])
    settings = Settings(data_dir=tmp / "data", token_file=tmp / "tokens.txt", workers=1, worker_start=sys.argv[2])
    with LocalServer(settings) as url, Client(url, "alice-token-0123456789", progress=False) as client:
        a, x = np.arange(6.0).reshape(2, 3), np.ones(3)
        try:
            y = client.einsum("ij,j->i", a, x)
        except ClientError as exc:
            print(json.dumps({"error": type(exc).__name__, "code": exc.code, "status": exc.status,
                              "message": exc.message}))
        else:
            plan = client.plan("ij,j->i", a, x)  # the plan einsum ran, for its parameters and key switches
            print(json.dumps({"result": y.tolist(), "params": plan.params.to_json(),
                              "keyswitches": plan.plan.keyswitches}))


"""


def _run_script(tmp_path: Path, guarded: bool, start: str) -> tuple[dict, str, float]:
    """Run the in-process service script (under the guard or not) with `start` workers; its JSON line, its stderr
    and the seconds it took."""
    (tmp_path / "tokens.txt").write_text(f"alice:{TOKENS['alice']}\n")
    script = tmp_path / "script.py"
    script.write_text(_SCRIPT + ('if __name__ == "__main__":\n    main()\n' if guarded else "main()\n"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    begin = time.monotonic()
    done = subprocess.run([sys.executable, str(script), str(tmp_path), start], env=env, capture_output=True,
                          text=True, timeout=60)
    seconds = time.monotonic() - begin
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr, seconds


@pytest.mark.parametrize("start", ["forkserver", "spawn"])
def test_an_unguarded_script_gets_worker_start_failed_and_nothing_starts_in_its_workers(tmp_path, start):
    answer, stderr, seconds = _run_script(tmp_path, guarded=False, start=start)
    assert answer["error"] == "WorkerStartFailed" and answer["code"] == "worker_start_failed", answer
    assert answer["status"] == 503
    assert "exited (exit code 1) while starting" in answer["message"] and _GUARD in answer["message"]
    # the one worker started refused the nested service at once (no retry started another), and nothing nested ran
    assert stderr.count("WorkerStartFailed: the einfhe service refused to start inside a worker") == 1, stderr
    assert "bootstrapping phase" not in stderr and "unhandled error" not in stderr, stderr
    assert seconds < 60


def test_the_same_script_under_the_guard_runs(tmp_path):
    answer, stderr, _ = _run_script(tmp_path, guarded=True, start="forkserver")
    assert "result" in answer, (answer, stderr)
    # both operands encrypted: sums of 3 products of magnitude at most 5, one level, the plan's key switches
    atol = error_bound(einfhe.Parameters.from_json(answer["params"]), 5.0, 3, 1, answer["keyswitches"])
    np.testing.assert_allclose(answer["result"], np.arange(6.0).reshape(2, 3) @ np.ones(3), atol=atol)


_PATH_SCRIPT = """\
import sys

sys.path.insert(0, sys.argv[1])  # the checkout first, as a notebook beside it does
import server.executor


def executor_file():
    return server.executor.__file__


if __name__ == "__main__":
    executor = server.executor.LocalProcessExecutor(1)
    print(server.executor.__file__, executor.submit_call(executor_file).result(timeout=60))
    executor.shutdown()
"""


def test_forked_workers_run_the_checkout_their_service_put_first_on_sys_path(tmp_path):
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "script.py").write_text(_PATH_SCRIPT)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "script.py", str(root)], cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    service, worker = done.stdout.split()
    assert service == worker == str(root / "server" / "executor.py")


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
