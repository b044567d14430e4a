"""The thread-pool executor: the same result as one step at a time (bit for bit on OpenFHE), the same op
counts, errors raised from a worker thread, and the default number of workers."""

import numpy as np
import pytest

import einfhe
from einfhe.plan.cost import critical_path
from einfhe.runtime.interpreter import execute
from einfhe.runtime.scheduler import default_workers


def _bsgs(n=24, slots=256, seed=0):
    rng = np.random.default_rng(seed)
    W, x = rng.standard_normal((n, n)), rng.standard_normal(n)
    return einfhe.compile("ij,j->i", W, einfhe.cipher((n,)), slots=slots, strategy="bsgs"), W, x


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_run_equals_the_serial_one_on_the_simulator(workers):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((16, 16)), rng.standard_normal((16, 16))
    tiled = einfhe.compile("ij,jk->ik", einfhe.cipher(A.shape), einfhe.cipher(B.shape), slots=256)
    cases = [_bsgs(), (tiled, A, B)]
    for plan, *operands in cases:
        serial, parallel = einfhe.RunStats(), einfhe.RunStats()
        one = einfhe.simulate(plan, *operands, stats=serial, workers=1)
        many = einfhe.simulate(plan, *operands, stats=parallel, workers=workers)
        np.testing.assert_array_equal(many, one)
        np.testing.assert_allclose(one, np.einsum(plan.spec, *operands), rtol=1e-9, atol=1e-9)
        assert parallel.counts == serial.counts == {op: n for op, n in plan.op_counts().items() if n}


@pytest.mark.fhe
def test_parallel_run_gives_the_same_ciphertexts_on_openfhe():
    plan, W, x = _bsgs(32, 64, seed=2)
    assert plan.op_counts()["rotate_hoisted"] > 1 and plan.op_counts()["mul_plain"] > 1
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, plan.slots))
    xe = einfhe.encrypt(ctx, x, plan.input_layout(1))
    blobs = {w: [ctx.backend.serialize_ciphertext(ct) for ct in einfhe.run(ctx, plan, W, xe, workers=w).cts]
             for w in (1, 2)}
    assert blobs[1] == blobs[2]  # OpenFHE's ops are deterministic: threads change nothing but the order
    got = einfhe.decrypt(ctx, einfhe.run(ctx, plan, W, xe, workers=2))
    np.testing.assert_allclose(got, W @ x, atol=1e-3)


@pytest.mark.fhe
def test_an_error_in_a_worker_thread_reaches_the_caller():
    plan, W, x = _bsgs(32, 64, seed=3)
    other, _, _ = _bsgs(4, 64, seed=3)  # a context whose keys miss this plan's offsets
    params = einfhe.Parameters.insecure_for_tests(plan.depth, plan.slots)
    ctx = einfhe.Context.for_plan(other, params=params)
    xe = einfhe.encrypt(ctx, x, plan.input_layout(1))
    with pytest.raises(einfhe.PlanError, match="no rotation key"):
        execute(plan, ctx.backend, {1: list(xe.cts)}, {0: W}, workers=2)


def test_workers_must_be_positive():
    plan, W, x = _bsgs()
    with pytest.raises(einfhe.PlanError, match="workers must be at least 1"):
        einfhe.simulate(plan, W, x, workers=0)


def test_default_workers_follow_openmp_cores_and_the_plans_parallelism(monkeypatch):
    wide = einfhe.compile("ij,jk->ik", einfhe.cipher((64, 64)), einfhe.cipher((64, 64)), slots=8192)
    chain = einfhe.compile("ij,j->i", np.ones((64, 64)), einfhe.cipher((64,)), slots=8192)
    total, critical = critical_path(wide)
    assert critical <= total / 2  # 32 independent products
    total, critical = critical_path(chain)
    assert critical == pytest.approx(total)  # one product, then a rotate-and-sum chain
    monkeypatch.delenv("EINFHE_WORKERS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("os.getloadavg", lambda: (1.2, 1.0, 1.0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    empty = einfhe.compile("ij->ji", einfhe.cipher((4, 4)), slots=64)  # nothing to run
    assert (default_workers(wide), default_workers(chain), default_workers(empty)) == (2, 1, 1)
    monkeypatch.setattr("os.getloadavg", lambda: (3.7, 3.0, 2.0))  # other jobs hold the cores
    assert default_workers(wide) == 1
    monkeypatch.setattr("os.getloadavg", lambda: (1.2, 1.0, 1.0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert default_workers(wide) == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("OMP_NUM_THREADS")  # OpenFHE's OpenMP uses the cores: threads would oversubscribe them
    assert default_workers(wide) == 1
    monkeypatch.setenv("EINFHE_WORKERS", "3")
    assert default_workers(chain) == 3
    monkeypatch.setenv("EINFHE_WORKERS", "many")
    with pytest.raises(einfhe.PlanError, match="EINFHE_WORKERS must be a positive integer"):
        default_workers(chain)
