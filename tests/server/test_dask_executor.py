"""The service's Dask executor (a LocalCluster of 2 worker processes) against the local process pool: the
same jobs, the same decrypted results, the same key-set checks and job error codes."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import dataclasses

import numpy as np
import pytest

from server.dask_executor import DaskExecutor
from server.executor import LocalProcessExecutor
from server.job_messages import JobTask, KeySetCheck

from server_helpers import npy

pytest.importorskip("distributed")
pytestmark = [pytest.mark.fhe, pytest.mark.timeout(120)]
SLOTS = 32
WAIT = 60


@pytest.fixture(scope="module")
def executors():
    dask, local = DaskExecutor(workers=2), LocalProcessExecutor(1)
    yield dask, local
    dask.shutdown()
    local.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A @ B with A encrypted across 32 ciphertexts, its keys and B on disk as the service stores them."""
    root = tmp_path_factory.mktemp("dask-job")
    rng = np.random.default_rng(7)
    A, B = rng.standard_normal((8, 8)), rng.standard_normal((8, 12))
    plan = einfhe.compile("ij,jk->ik", einfhe.cipher(A.shape), B, slots=SLOTS)
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, SLOTS))
    (root / "keys.bin").write_bytes(einfhe.evaluation_keys_to_bytes(ctx))
    x = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, A, plan.input_layout(0)))
    (root / "b.npy").write_bytes(npy(B))
    task = JobTask("job-1", "keyset-1", str(root / "keys.bin"), ctx.params.to_json(), plan.to_json(),
                   (x,), ((1, str(root / "b.npy")),), 1024)
    return {"A": A, "B": B, "plan": plan, "ctx": ctx, "task": task}


def _decrypt(job, outcome):
    assert outcome.ok, (outcome.code, outcome.message)
    return einfhe.decrypt(job["ctx"], einfhe.tensor_from_bytes(job["ctx"], outcome.result))


def test_dask_job_matches_the_local_executor(executors, job):
    dask, local = executors
    assert job["plan"].cts_in >= 4
    got = _decrypt(job, dask.submit(job["task"]).result(WAIT))
    expected = _decrypt(job, local.submit(job["task"]).result(WAIT))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got, job["A"] @ job["B"], atol=1e-6)


def test_arrays_made_for_a_job_replace_its_stored_plains(executors, job):
    """A job's own plain operands (an encoder's key masks for a sentence's length) take the place of the stored
    ones, on a Dask worker as in a local worker process."""
    dask, local = executors
    other = -2 * job["B"]
    task = dataclasses.replace(job["task"], job_id="job-4", arrays=((1, other),))
    for executor in (dask, local):
        np.testing.assert_allclose(_decrypt(job, executor.submit(task).result(WAIT)), job["A"] @ other, atol=1e-6)


def test_keyset_check_matches_the_local_executor(executors, job):
    dask, local = executors
    check = KeySetCheck(job["task"].keyset_path, job["task"].params, job["plan"].rotations)
    on_dask, on_local = dask.check_keyset(check).result(WAIT), local.check_keyset(check).result(WAIT)
    assert on_dask.ok and on_local.ok and on_dask.key_tag == on_local.key_tag
    # the check cleared OpenFHE on its worker: jobs there must reload their keys, not use stale ones
    np.testing.assert_allclose(_decrypt(job, dask.submit(job["task"]).result(WAIT)), job["A"] @ job["B"],
                               atol=1e-6)


def test_foreign_ciphertexts_fail_with_key_mismatch(executors, job):
    dask, _ = executors
    other = einfhe.Context.for_plan(job["plan"], params=job["ctx"].params)
    foreign = einfhe.tensor_to_bytes(other, einfhe.encrypt(other, job["A"], job["plan"].input_layout(0)))
    task = JobTask("job-2", "keyset-1", job["task"].keyset_path, job["task"].params, job["task"].plan_json,
                   (foreign,), job["task"].plains, 1024)
    outcome = dask.submit(task).result(WAIT)
    assert not outcome.ok and outcome.code == "key_mismatch"


def test_a_malformed_tensor_fails_with_its_job_code(executors, job):
    dask, _ = executors
    task = JobTask("job-3", "keyset-1", job["task"].keyset_path, job["task"].params, job["task"].plan_json,
                   (b"not a tensor",), job["task"].plains, 1024)
    outcome = dask.submit(task).result(WAIT)
    assert not outcome.ok and outcome.code == "malformed_blob"
