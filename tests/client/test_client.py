"""The client against a real uvicorn server on loopback: encrypted einsums, keys once, restart, tenants."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from client_helpers import SLOTS, TEST_PARAMS, TOKENS

from client import BadRequest, Client, JobFailed, NotFound, Unauthorized
from server import LocalServer

# CKKS at scale 2^40 encodes each slot with absolute error ~2^-40 * (ring noise) ~ 1e-10 here (measured
# ~1e-9 after a product and a rotate-and-sum of 8 terms); 1e-6 is three orders above that and six below the
# O(1) error any layout or rotation bug produces.
ATOL = 1e-6


def _matvec_job(client: Client, seed: int):
    """Register a random 4x8 W as "W", plan ij,j->i for a random x, make and upload keys:
    (W, x, plan, context, key set id, x encrypted as a tensor blob)."""
    rng = np.random.default_rng(seed)
    W, x = rng.standard_normal((4, 8)), rng.standard_normal(8)
    client.register_operand("W", W)
    plan = client.plan("ij,j->i", "W", x, slots=SLOTS, params=TEST_PARAMS)
    ctx, keyset_id = client.context_for(plan)
    return W, x, plan, ctx, keyset_id, einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, x, plan.plan.input_layout(1)))


def test_encrypted_einsum_matches_numpy(live_server):
    rng = np.random.default_rng(1)
    W, x = rng.standard_normal((4, 8)), rng.standard_normal(8)
    with Client(live_server, TOKENS["alice"], progress=False) as client:
        client.register_operand("W", W)
        y = client.einsum("ij,j->i", "W", x, slots=SLOTS, params=TEST_PARAMS)
    np.testing.assert_allclose(y, W @ x, atol=ATOL)


def test_two_cipher_operands_travel_as_msgpack(live_server):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    with Client(live_server, TOKENS["alice"], progress=False) as client:
        y = client.einsum("ij,ij->i", a, b, slots=SLOTS, params=TEST_PARAMS)
    np.testing.assert_allclose(y, np.einsum("ij,ij->i", a, b), atol=ATOL)


def test_keys_uploaded_once_for_several_requests(live_server):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 8))
    with Client(live_server, TOKENS["alice"], progress=False) as client:
        client.register_operand("W", W)
        for _ in range(3):
            x = rng.standard_normal(8)
            np.testing.assert_allclose(client.einsum("ij,j->i", "W", x, slots=SLOTS, params=TEST_PARAMS), W @ x,
                                       atol=ATOL)
        assert len(client.http.request("GET", "/keysets").json()) == 1
        assert len(client.http.request("GET", "/jobs").json()) == 3


def test_concurrent_clients(live_server):
    rng = np.random.default_rng(4)
    W = rng.standard_normal((4, 8))
    xs = rng.standard_normal((6, 8))
    with Client(live_server, TOKENS["alice"], progress=False) as setup:
        setup.register_operand("W", W)

    def one(x):
        with Client(live_server, TOKENS["alice"], progress=False) as client:
            return client.einsum("ij,j->i", "W", x, slots=SLOTS, params=TEST_PARAMS)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, xs))
    for x, y in zip(xs, results):
        np.testing.assert_allclose(y, W @ x, atol=ATOL)


def test_deleted_keys_and_jobs_are_gone_and_new_keys_come_when_needed(live_server):
    rng = np.random.default_rng(4)
    W = rng.standard_normal((4, 8))
    with Client(live_server, TOKENS["alice"], progress=False) as client:
        client.register_operand("W", W)
        x = rng.standard_normal(8)
        np.testing.assert_allclose(client.einsum("ij,j->i", "W", x, slots=SLOTS, params=TEST_PARAMS), W @ x, atol=ATOL)
        (keyset,) = client.http.request("GET", "/keysets").json()
        (job,) = client.http.request("GET", "/jobs").json()
        client.delete_job(job["id"])
        client.delete_keys(keyset["id"])
        assert client.http.request("GET", "/jobs").json() == []
        assert client.http.request("GET", "/keysets").json() == []
        with pytest.raises(NotFound):
            client.delete_job(job["id"])
        np.testing.assert_allclose(client.einsum("ij,j->i", "W", x, slots=SLOTS, params=TEST_PARAMS), W @ x, atol=ATOL)
        (fresh,) = client.http.request("GET", "/keysets").json()
        assert fresh["id"] != keyset["id"]


def test_finished_result_survives_restart(settings):
    with LocalServer(settings) as url, Client(url, TOKENS["alice"], progress=False) as client:
        W, x, plan, ctx, keyset_id, blob = _matvec_job(client, 5)
        job = client.submit(plan.id, keyset_id, [blob])
        client.wait(job["id"])
    with LocalServer(settings) as url, Client(url, TOKENS["alice"], progress=False) as client:
        assert client.http.request("GET", f"/jobs/{job['id']}").json()["status"] == "succeeded"
        y = einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, client.result(job["id"])))
        np.testing.assert_allclose(y, W @ x, atol=ATOL)
        # the same key set still serves new jobs after the restart
        job2 = client.submit(plan.id, keyset_id, [blob])
        client.wait(job2["id"])


def test_other_tenant_refused(live_server):
    with Client(live_server, TOKENS["alice"], progress=False) as alice:
        W, x, plan, ctx, keyset_id, blob = _matvec_job(alice, 6)
        job = alice.submit(plan.id, keyset_id, [blob])
        alice.wait(job["id"])
    with Client(live_server, TOKENS["bob"], progress=False) as bob:
        with pytest.raises(NotFound) as info:
            bob.result(job["id"])
        assert info.value.code == "not_found" and info.value.status == 404
        with pytest.raises(NotFound):
            bob.submit(plan.id, keyset_id, [blob])
        with pytest.raises(NotFound):
            bob.einsum("ij,j->i", "W", x, slots=SLOTS, params=TEST_PARAMS)  # alice's operand is invisible
    with Client(live_server, "not-a-token", progress=False, retries=0) as nobody, pytest.raises(Unauthorized):
        nobody.register_operand("W", W)


def test_job_failure_is_typed(live_server):
    """A ciphertext under bob's keys submitted with alice's key set fails the job with key_mismatch."""
    with Client(live_server, TOKENS["alice"], progress=False) as client:
        W, x, plan, _, keyset_id, _ = _matvec_job(client, 7)
        foreign = einfhe.Context.for_plan(plan.plan, params=plan.params)
        blob = einfhe.tensor_to_bytes(foreign, einfhe.encrypt(foreign, x, plan.plan.input_layout(1)))
        job = client.submit(plan.id, keyset_id, [blob])
        with pytest.raises(JobFailed) as info:
            client.wait(job["id"])
        assert info.value.code == "key_mismatch"
        # the worker recovers: the next job with the right keys succeeds
        np.testing.assert_allclose(client.einsum("ij,j->i", "W", x, slots=SLOTS, params=TEST_PARAMS), W @ x,
                                   atol=ATOL)


def test_a_plan_over_its_budget_is_a_typed_error_and_the_named_budget_plans(live_server):
    """key_budget travels with the plan request: too small answers over_budget with the bytes to ask for."""
    with Client(live_server, TOKENS["alice"], progress=False) as client:
        client.register_operand("W", np.ones((4, 8)))
        with pytest.raises(BadRequest) as info:
            client.plan("ij,j->i", "W", np.ones(8), slots=SLOTS, params=TEST_PARAMS, key_budget=1024)
        assert info.value.code == "over_budget"
        needed = int(re.search(r"set key_budget=(\d+)", str(info.value)).group(1))
        plan = client.plan("ij,j->i", "W", np.ones(8), slots=SLOTS, params=TEST_PARAMS, key_budget=needed)
        assert plan.plan.choice.budget.key_bytes == needed >= plan.plan.choice.chosen.key_bytes


def test_wait_shows_progress_for_long_jobs(live_server, monkeypatch):
    """wait() long-polls and returns once the job is done even when the first poll sees it unfinished."""
    with Client(live_server, TOKENS["alice"], progress=True, poll_seconds=0.05) as client:
        W, x, plan, ctx, keyset_id, blob = _matvec_job(client, 8)
        real = client.http.request
        polls = []

        def slow_first(method, path, **kwargs):
            if method == "GET" and path.startswith("/jobs/") and not polls:
                polls.append(path)
                return real(method, path, params={"wait": 0})  # report whatever state it is in at once
            return real(method, path, **kwargs)

        monkeypatch.setattr(client.http, "request", slow_first)
        job = client.submit(plan.id, keyset_id, [blob])
        assert client.wait(job["id"], timeout=30)["status"] == "succeeded"


def test_a_declared_bound_lets_the_server_take_the_small_ring(live_server):
    """With the inputs' range declared (public: the server sees it), the default ring choice prices N=2^13 and the
    128-bit plan there decrypts to numpy's result; without it the plan keeps 8192 slots."""
    rng = np.random.default_rng(23)
    W, x = rng.uniform(-1, 1, (64, 64)), rng.uniform(-1, 1, 64)
    with Client(live_server, TOKENS["alice"], progress=False) as client:
        client.register_operand("W", W)
        assert client.plan("ij,j->i", "W", x).plan.slots == 8192
        plan = client.plan("ij,j->i", "W", x, bound=1.0)
        assert plan.plan.slots == 4096 and plan.params.ring_dim == 8192 and plan.params.secure
        y = client.einsum("ij,j->i", "W", x, bound=1.0)
    bound = einfhe.params.error_bound(plan.params, 1.0, terms=64, depth=1, keyswitches=plan.plan.keyswitches)
    assert np.abs(y - W @ x).max() < bound
