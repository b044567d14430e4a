"""Faults (issue 8): `einfhe serve` killed with SIGKILL in the middle of jobs, restarted on the same data directory.

Nothing acknowledged is lost: key sets, the registered model and finished results are read back and decrypted
against numpy and the quantized model's own torch output; every job ends succeeded (its result right) or failed
with the code `interrupted`, none stays queued or running; the killed server's worker processes are gone. A crash
between writing a job's result blob and recording it, and torn temporary files, are settled at the next start.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from server_helpers import TOKENS, free_port, start_server

from einfhe.params.precision import error_bound

from client import Client, EncryptedModel, JobFailed
from server import create_app

SLOTS = 4096  # jobs of ~20-50 ms each, submitted faster than that: a queue is still running when the server is killed
N = 64
MODEL_SLOTS = 32
SERVER_ENV = {"EINFHE_ALLOW_INSECURE_TEST_PARAMS": "1", "EINFHE_OPERATORS": '["alice"]', "OMP_NUM_THREADS": "1"}


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (its worker pool and their helpers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigkill_mid_job_loses_nothing_acknowledged(tmp_path, token_file, mlp_export):
    port, data_dir = free_port(), tmp_path / "data"
    url = f"http://127.0.0.1:{port}"
    rng = np.random.default_rng(8)
    W = rng.standard_normal((N, N))
    xs = rng.standard_normal((40, N))
    params = einfhe.Parameters.insecure_for_tests(2, SLOTS)
    process = start_server(port, data_dir, token_file, "--workers", "1", env=SERVER_ENV,
                           output=(tmp_path / "first.log").open("w"))
    try:
        with Client(url, TOKENS["alice"], progress=False) as client, \
                EncryptedModel(url, "mlp", token=TOKENS["alice"], progress=False) as model:
            client.register_model("mlp", mlp_export["dir"], slots=MODEL_SLOTS, insecure_test_params=True)
            before = model.infer(mlp_export["X"])  # the model's key sets are uploaded here, once
            client.register_operand("W", W)
            plan = client.plan("ij,j->i", "W", xs[0], slots=SLOTS, params=params)
            atol = error_bound(params, float(np.abs(W).max() * np.abs(xs).max()), N, 1, plan.plan.keyswitches)
            np.testing.assert_allclose(client.einsum("ij,j->i", "W", xs[0], slots=SLOTS, params=params), W @ xs[0],
                                       atol=atol)
            ctx, keyset_id = client.context_for(plan)
            layout = plan.plan.cipher_inputs[0].layout
            finished = client.submit(plan.id, keyset_id, [einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, xs[1], layout))])
            client.wait(finished["id"])
            # encrypted first and submitted 8 at a time, so that a queue builds up in front of the one worker
            payloads = [einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, x, layout)) for x in xs[2:]]
            with ThreadPoolExecutor(8) as pool:
                jobs = list(pool.map(lambda payload: client.submit(plan.id, keyset_id, [payload])["id"], payloads))
            deadline = time.monotonic() + 30
            while True:
                statuses = [client.http.request("GET", f"/jobs/{j}").json()["status"] for j in jobs]
                if "running" in statuses:
                    break
                assert "queued" in statuses, f"every job finished before one was seen running: {statuses}"
                assert time.monotonic() < deadline, "no job was seen running"
            workers = _descendants(process.pid)
            process.send_signal(signal.SIGKILL)  # mid-job: no shutdown hook, no lifespan, nothing flushed
            process.wait(timeout=10)
            assert workers, "the server had no worker processes"
            deadline = time.monotonic() + 10
            while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(_alive(pid) for pid in workers), "worker processes outlived the killed server"

            process = start_server(port, data_dir, token_file, "--workers", "1", env=SERVER_ENV,
                                   output=(tmp_path / "second.log").open("w"))
            keysets = client.http.request("GET", "/keysets").json()
            assert keyset_id in {k["id"] for k in keysets}
            result = einfhe.tensor_from_bytes(ctx, client.result(finished["id"]))
            np.testing.assert_allclose(einfhe.decrypt(ctx, result), W @ xs[1], atol=atol)
            outcomes = {"succeeded": 0, "interrupted": 0}
            for job_id, x in zip(jobs, xs[2:]):
                job = client.http.request("GET", f"/jobs/{job_id}").json()
                if job["status"] == "succeeded":
                    y = einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, client.result(job_id)))
                    np.testing.assert_allclose(y, W @ x, atol=atol)
                    outcomes["succeeded"] += 1
                else:
                    assert job["status"] == "failed" and job["error"]["code"] == "interrupted", job
                    with pytest.raises(JobFailed) as failure:
                        client.wait(job_id)
                    assert failure.value.code == "interrupted"
                    outcomes["interrupted"] += 1
            assert outcomes["interrupted"] >= 1, outcomes
            # the key sets uploaded before the crash still compute: no new upload for the einsum or the model
            np.testing.assert_allclose(client.einsum("ij,j->i", "W", xs[-1], slots=SLOTS, params=params),
                                       W @ xs[-1], atol=atol)
            after = model.infer(mlp_export["X"])
            assert len(client.http.request("GET", "/keysets").json()) == len(keysets)
        # the quantized model's torch output in fp32; CKKS at scale 2^40 adds ~1e-9
        for y in (before, after):
            np.testing.assert_allclose(y, mlp_export["expected"], rtol=1e-4, atol=1e-5)
        print(f"\nSIGKILL with {len(jobs)} jobs in flight: {outcomes}; {len(workers)} worker process(es) ended with it")
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_result_written_before_its_row_is_recovered_and_torn_writes_removed(settings):
    """A crash between a job's result blob and its row, a half-written temporary file, a key set written but never
    acknowledged (its check was running), and a job input an earlier version left on disk: the next start finishes
    the job and removes the rest."""
    service = create_app(settings).state.service
    store = service.store
    job = dict(tenant="alice", plan_id="p", keyset_id="k", inputs=[], plains=[], status="running", error_code=None,
               error_message=None, finished=None, seconds=None, result_size=None)
    store.insert("jobs", id="written", **job)
    store.insert("jobs", id="torn", **job)
    result = einfhe.crypto.blobs.pack_blob("tensor", bytes(16), einfhe.crypto.blobs.pack_parts({"layout": {}}, [b"ct"]))
    store.write_blob("results", "written", result)
    store.blob_path("results", "torn").write_bytes(result[:-1])  # not through write_blob: a torn file
    temporary = store.blob_path("inputs", ".x.0.123.456.tmp")
    temporary.write_bytes(b"half")
    old_input = store.blob_path("inputs", "written.0")  # earlier versions kept every job's input here, forever
    old_input.write_bytes(b"input")
    unacknowledged = store.write_blob("keysets", "never-acknowledged", b"keys")
    service.close()  # the process dies here: the jobs' rows still say running

    restarted = create_app(settings).state.service
    try:
        written, torn = (restarted.store.get("jobs", "alice", id=i) for i in ("written", "torn"))
        assert (written["status"], written["result_size"]) == ("succeeded", len(result))
        assert restarted.store.blob_path("results", "written").read_bytes() == result
        assert (torn["status"], torn["error_code"]) == ("failed", "interrupted")
        assert not restarted.store.blob_path("results", "torn").exists()
        assert not temporary.exists() and not unacknowledged.exists() and not old_input.exists()
    finally:
        restarted.close()
