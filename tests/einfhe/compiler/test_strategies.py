"""Lowering strategies on the exact simulator: every strategy equals numpy, the BSGS diagonals equal a loop
over the definition, rotation bases keep the result, and strategies are looked up by name."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einfhe
from einfhe.plan import diagonals
from einfhe.plan.keybasis import basis_tradeoff, with_rotation_basis
from einfhe.plan import Diagonals
from einfhe.compiler.strategies import strategy_names
from einfhe.compiler.strategies.bsgs import replicas_for
from einfhe.layout import next_pow2

NAMES = strategy_names()


def _matvec(m, n, batch, slots, strategy, rng, transpose=False):
    W = rng.standard_normal((m, n))
    if batch:
        x = rng.standard_normal((batch, n))
        plain = W.T if transpose else W
        spec = "bj,ji->bi" if transpose else "bj,ij->bi"
        plan = einfhe.compile(spec, einfhe.cipher(x.shape), plain, slots=slots, strategy=strategy)
        return plan, einfhe.simulate(plan, x, plain), x @ W.T
    x = rng.standard_normal(n)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher(x.shape), slots=slots, strategy=strategy)
    return plan, einfhe.simulate(plan, W, x), W @ x


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 40), n=st.integers(1, 40), batch=st.sampled_from([None, 1, 2, 3]),
       slots=st.sampled_from([16, 64, 256, 2048]), strategy=st.sampled_from(NAMES),
       transpose=st.booleans(), seed=st.integers(0, 2**16))
def test_every_strategy_matches_numpy(m, n, batch, slots, strategy, transpose, seed):
    rng = np.random.default_rng(seed)
    plan, got, expected = _matvec(m, n, batch, slots, strategy, rng, transpose)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * (1 + np.abs(expected).max()))
    assert einfhe.Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("n, slots, replicas", [(64, 8192, 64), (256, 8192, 32), (1024, 8192, 8), (1024, 16384, 16),
                                                (8, 8, 1), (16, 128, 8)])
def test_bsgs_fills_the_slots_with_extended_diagonals(n, slots, replicas):
    rng = np.random.default_rng(n)
    plan, got, expected = _matvec(n, n, None, slots, "bsgs", rng)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert replicas_for(n, slots) == replicas
    assert plan.strategy == "bsgs" and plan.cts_in == 1
    counts = plan.op_counts()
    assert counts["mul_plain"] == n // replicas == -(-n * n // slots)  # ceil(P / slots): every slot does work
    assert counts["hoist"] == (1 if counts["rotate_hoisted"] else 0)


def test_bsgs_rotation_set_is_exactly_the_offsets_used():
    rng = np.random.default_rng(0)
    plan, _, _ = _matvec(256, 256, None, 8192, "bsgs", rng)
    offsets = {s.offset % plan.slots for s in plan.steps if s.op in ("rotate", "rotate_hoisted")}
    assert set(plan.rotations) == offsets
    assert plan.depth == 1


def _diagonals_by_loop(W, op):
    """The definition of `Diagonals`, one slot at a time: row g*baby + b multiplies x shifted by m*(g*baby + b)
    at output slot u = s - m*g*baby, which belongs to row u // m and holds x[(u + m*(g*baby + b)) mod d]."""
    d, baby, m, out = op.d, op.baby, op.replicas, np.zeros((op.giant * op.baby, op.span))
    padded = np.zeros((d, d))
    padded[: W.shape[0], : W.shape[1]] = W
    for k in range(op.giant * baby):
        g, b = divmod(k, baby)
        for s in range(op.span):
            u = (s - m * g * baby) % op.span
            out[k, s] = padded[u // m, (u + m * k) % d]
    return out


@pytest.mark.parametrize("shape, op", [
    ((8, 8), Diagonals("o", "w", 8, 4, 2, 1, 8)),
    ((5, 8), Diagonals("o", "w", 8, 2, 2, 2, 16)),
    ((8, 3), Diagonals("o", "w", 8, 1, 2, 4, 32)),
    ((8, 8), Diagonals("o", "w", 8, 1, 1, 8, 64)),
])
def test_diagonals_match_their_definition(shape, op):
    W = np.random.default_rng(1).standard_normal(shape)
    np.testing.assert_array_equal(diagonals(W, op), _diagonals_by_loop(W, op))


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(einfhe.PlanError, match="valid strategies: auto, iteration-space, bsgs, diagonal"):
        einfhe.compile("ij,j->i", np.ones((4, 4)), einfhe.cipher((4,)), strategy="baby-steps")


def test_named_strategy_that_does_not_fit_falls_back_to_iteration_space():
    plan = einfhe.compile("ij,jk->ik", einfhe.cipher((4, 4)), einfhe.cipher((4, 4)), slots=64, strategy="bsgs")
    assert plan.strategy == "iteration-space"


def test_pow2_basis_keeps_the_result_with_power_of_two_keys():
    rng = np.random.default_rng(2)
    W, x = rng.standard_normal((40, 40)), rng.standard_normal(40)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((40,)), slots=256, strategy="bsgs")
    pow2 = with_rotation_basis(plan, "pow2")
    assert all(r & (r - 1) == 0 for r in pow2.rotations)
    np.testing.assert_allclose(einfhe.simulate(pow2, W, x), W @ x, rtol=1e-9, atol=1e-9)
    assert einfhe.compile("ij,j->i", W, einfhe.cipher((40,)), slots=256, strategy="bsgs",
                          rotation_basis="pow2") == pow2
    rows = {r["basis"]: r for r in basis_tradeoff(plan)}
    assert rows["pow2"]["rotations"] >= rows["plan"]["rotations"]
    assert rows["plan"]["keys"] == len(plan.rotations) and rows["pow2"]["keys"] == len(pow2.rotations)
    with pytest.raises(einfhe.PlanError, match="valid bases: plan, bsgs, pow2"):
        with_rotation_basis(plan, "naf")


@pytest.mark.parametrize("n, slots", [(8, 256), (5, 64), (30, 4096)])
def test_bsgs_result_with_junk_blocks_feeds_the_next_contraction(n, slots):
    rng = np.random.default_rng(n)
    x, A, B = rng.standard_normal(n), rng.standard_normal((n, n)), rng.standard_normal((3, n))
    plan = einfhe.compile("ki,ij,j->k", B, A, einfhe.cipher((n,)), slots=slots, strategy="bsgs",
                          optimize=[(1, 2), (0, 1)])
    assert plan.strategy == "bsgs+iteration-space" and plan.depth == 2
    np.testing.assert_allclose(einfhe.simulate(plan, B, A, x), B @ A @ x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n, slots", [(64, 8192), (16, 16)])
def test_diagonal_method_hoists_every_rotation(n, slots):
    rng = np.random.default_rng(n + 1)
    plan, got, expected = _matvec(n, n, None, slots, "diagonal", rng)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    bsgs, _, _ = _matvec(n, n, None, slots, "bsgs", rng)
    counts, replicas = plan.op_counts(), replicas_for(n, slots)
    assert plan.strategy == "diagonal" and counts["rotate"] == replicas.bit_length() - 1  # only replica sums
    assert counts["rotate_hoisted"] == n // replicas - 1 and len(plan.rotations) >= len(bsgs.rotations)


def test_a_product_too_large_for_the_iteration_space_is_lowered_by_a_strategy_that_fits():
    """A plain matrix times a batch of cipher vectors whose iteration space passes max_cts: bsgs fits it in one
    ciphertext, so `auto` takes it; a batch too wide for one ciphertext is split into tiles that each fit one."""
    rng = np.random.default_rng(3)
    W, X = rng.standard_normal((64, 64)), rng.standard_normal((64, 8))
    plan = einfhe.compile("ij,jk->ik", W, einfhe.cipher(X.shape), slots=512, max_cts=16)
    assert plan.strategy == "bsgs" and plan.cts_in == 1
    np.testing.assert_allclose(einfhe.simulate(plan, W, X), W @ X, atol=1e-9)
    X = rng.standard_normal((64, 16))
    plan = einfhe.compile("ij,jk->ik", W, einfhe.cipher(X.shape), slots=512, max_cts=16)
    assert (plan.spec, plan.strategy, plan.cts_in) == ("ij,jtk->itk", "bsgs", 2)
    np.testing.assert_allclose(einfhe.simulate(plan, W, X), W @ X, atol=1e-9)


@pytest.mark.parametrize("strategy", ["bsgs", "diagonal"])
@pytest.mark.parametrize("n, tiles, k, slots", [(16, 4, 4, 64), (16, 3, 2, 32), (12, 2, 4, 64), (8, 5, 4, 32)])
def test_a_batch_too_large_for_one_ciphertext_tiles_it_with_each_diagonal_taken_once(n, tiles, k, slots, strategy):
    """W @ X for X of n x tiles x k: each ciphertext holds one tile [j | k], all take the same diagonals, and the
    products of one diagonal are consecutive steps (its plaintext is encoded once while the cache holds it)."""
    rng = np.random.default_rng(n + tiles)
    W, X = rng.standard_normal((n, n)), rng.standard_normal((n, tiles, k))
    plan = einfhe.compile("ij,jtk->itk", W, einfhe.cipher(X.shape), slots=slots, strategy=strategy)
    assert plan.strategy == strategy and plan.cts_in == plan.cts_out == next_pow2(tiles)
    np.testing.assert_allclose(einfhe.simulate(plan, W, X), np.einsum("ij,jtk->itk", W, X), atol=1e-9)
    diagonals_used = [s.plain.index for s in plan.steps if s.op == "mul_plain"]
    runs = [d for position, d in enumerate(diagonals_used) if position == 0 or diagonals_used[position - 1] != d]
    assert len(runs) == len(set(runs)) and len(diagonals_used) == len(runs) * plan.cts_in
