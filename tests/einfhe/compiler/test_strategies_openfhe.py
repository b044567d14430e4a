"""Every lowering strategy on OpenFHE (small insecure rings), against numpy within `error_bound`; hoisted
rotations use exactly the plan's keys, and their errors are translated."""

import numpy as np
import pytest

import einfhe
from einfhe.backends.openfhe import OpenFHEBackend
from einfhe.plan.keybasis import with_rotation_basis
from einfhe.params.precision import error_bound
from einfhe.compiler.strategies import strategy_names

pytestmark = pytest.mark.fhe


def _run(plan, W, x):
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, plan.slots))
    assert ctx.backend.rotation_key_indices() == set(plan.rotations)
    xe = einfhe.encrypt(ctx, x, plan.input_layout(1))
    return ctx, einfhe.decrypt(ctx, einfhe.run(ctx, plan, W, xe))


@pytest.mark.parametrize("strategy", strategy_names())
@pytest.mark.parametrize("m, n, slots", [(8, 8, 8), (6, 10, 64), (16, 16, 256), (5, 3, 32)])
def test_matvec_on_openfhe(strategy, m, n, slots):
    rng = np.random.default_rng(m * n)
    W, x = rng.uniform(-1, 1, (m, n)), rng.uniform(-1, 1, n)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher(x.shape), slots=slots, strategy=strategy)
    ctx, got = _run(plan, W, x)
    bound = error_bound(ctx.params, 1.0, n, plan.depth, plan.keyswitches)
    assert np.abs(got - W @ x).max() <= bound


def test_batched_bsgs_with_pow2_keys_on_openfhe():
    rng = np.random.default_rng(5)
    W, x = rng.uniform(-1, 1, (7, 7)), rng.uniform(-1, 1, (3, 7))
    plan = einfhe.compile("bj,ij->bi", einfhe.cipher(x.shape), W, slots=64, strategy="bsgs")
    assert plan.op_counts()["rotate_hoisted"] > 0
    plan = with_rotation_basis(plan, "pow2")
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, 64))
    got = einfhe.decrypt(ctx, einfhe.run(ctx, plan, einfhe.encrypt(ctx, x, plan.input_layout(0)), W))
    assert np.abs(got - x @ W.T).max() <= error_bound(ctx.params, 1.0, 7, plan.depth, plan.keyswitches)


def test_hoisted_rotation_errors_are_translated():
    backend = OpenFHEBackend.generate(einfhe.Parameters.insecure_for_tests(1, 8), [1])
    ct = backend.encrypt(np.ones(8))
    digits = backend.precompute_rotations(ct)
    with pytest.raises(einfhe.PlanError, match="no rotation key for offset 3"):
        backend.rotate_hoisted(ct, digits, 3)
    with pytest.raises(einfhe.BackendError):
        backend.precompute_rotations("not a ciphertext")
    with pytest.raises(einfhe.BackendError):
        backend.rotate_hoisted(ct, "not digits", 1)
    np.testing.assert_allclose(backend.decrypt(backend.rotate_hoisted(ct, digits, 1)), np.ones(8), atol=1e-6)


def test_bsgs_then_iteration_space_chain_on_openfhe():
    rng = np.random.default_rng(9)
    x, A, B = rng.uniform(-1, 1, 8), rng.uniform(-1, 1, (8, 8)), rng.uniform(-1, 1, (3, 8))
    plan = einfhe.compile("ki,ij,j->k", B, A, einfhe.cipher((8,)), slots=64, strategy="bsgs",
                          optimize=[(1, 2), (0, 1)])
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, 64))
    got = einfhe.decrypt(ctx, einfhe.run(ctx, plan, B, A, einfhe.encrypt(ctx, x, plan.input_layout(2))))
    assert np.abs(got - B @ A @ x).max() <= error_bound(ctx.params, 1.0, 64, plan.depth, plan.keyswitches)


def test_level_reduce_on_openfhe_keeps_values_and_checks_depth():
    backend = OpenFHEBackend.generate(einfhe.Parameters.insecure_for_tests(1, 8), [1])
    ct = backend.level_reduce(backend.encrypt(np.arange(8) / 8))
    assert backend.level(ct) == 1
    np.testing.assert_allclose(backend.decrypt(backend.rotate(ct, 1)), np.roll(np.arange(8) / 8, -1), atol=1e-6)
    with pytest.raises(einfhe.PlanError, match="levels of these parameters"):
        backend.level_reduce(ct)
    with pytest.raises(einfhe.BackendError):
        backend.level_reduce("not a ciphertext")
