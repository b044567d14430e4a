"""Declared input bounds: the results' bounds they give, and the default ring choice they open (the small ring
only where the results stay within its safe range)."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler.bounds import SAFE_BOUND, einsum_bound, model_bound
from einfhe.compiler.model import Linear, Quadratic, Square, compile_model
from einfhe.params import error_bound
from einfhe.spec import parse_einsum

RNG = np.random.default_rng(17)


def _sizes(spec, *shapes):
    return parse_einsum(spec, *shapes).sizes


def test_a_matvec_bound_is_the_largest_row_sum_and_an_input_reaches_it():
    W, b = RNG.uniform(-1, 1, (32, 64)), 0.75
    x = einfhe.cipher((64,), bound=b)
    bound = einsum_bound("ij,j->i", [W, x], _sizes("ij,j->i", W.shape, (64,)))
    row = int(np.abs(W).sum(axis=1).argmax())
    np.testing.assert_allclose(bound, b * np.abs(W[row]).sum(), rtol=1e-12)
    np.testing.assert_allclose((W @ (b * np.sign(W[row])))[row], bound, rtol=1e-12)  # tight
    assert einsum_bound("ij,j->i", [W, einfhe.cipher((64,))], _sizes("ij,j->i", W.shape, (64,))) is None


def test_a_model_bound_holds_over_sampled_inputs_and_is_exact_for_one_linear_layer():
    W1, b1 = RNG.uniform(-0.3, 0.3, (16, 8)), RNG.uniform(-0.3, 0.3, 16)
    W2, b2 = RNG.uniform(-0.3, 0.3, (4, 16)), RNG.uniform(-0.3, 0.3, 4)
    layers = [Linear(W1, b1), Quadratic(0.5, -0.2, 0.1), Linear(W2, b2), Square()]
    bound = model_bound(layers, 8, 2.0)
    X = RNG.uniform(-2, 2, (2000, 8))
    H = X @ W1.T + b1
    Y = ((0.5 * H**2 - 0.2 * H + 0.1) @ W2.T + b2) ** 2
    assert np.abs(Y).max() <= bound
    np.testing.assert_allclose(model_bound(layers[:1], 8, 2.0), (2 * np.abs(W1).sum(1) + np.abs(b1)).max())
    assert model_bound(layers, 8, None) is None
    assert model_bound([layers[0], einfhe.ChebyshevActivation((0.0, 1.0), -1.0, 1.0)], 8, 2.0) is None


def test_compile_takes_the_small_ring_by_default_only_where_declared_bounds_keep_results_safe():
    W = RNG.uniform(-1, 1, (64, 64))
    bounded = einfhe.compile("ij,j->i", W, einfhe.cipher((64,), bound=1.0))
    assert bounded.chosen_ring is not None and bounded.slots == 4096
    assert einfhe.compile("ij,j->i", W, einfhe.cipher((64,))).slots == 8192  # no bound: as before
    large = 2 * SAFE_BOUND / np.abs(W).sum(1).max()
    assert einfhe.compile("ij,j->i", W, einfhe.cipher((64,), bound=large)).slots == 8192
    assert einfhe.compile("ij,j->i", W, einfhe.cipher((64,), bound=1.0), slots=8192).slots == 8192
    with pytest.raises(einfhe.EinsumError, match="bound"):
        einfhe.cipher((64,), bound=-1.0)


def test_compile_model_takes_the_small_ring_by_default_with_an_input_bound():
    W1, b1 = RNG.uniform(-0.3, 0.3, (32, 64)), RNG.uniform(-0.3, 0.3, 32)
    W2, b2 = RNG.uniform(-0.3, 0.3, (10, 32)), RNG.uniform(-0.3, 0.3, 10)
    layers = [Linear(W1, b1), Square(), Linear(W2, b2)]
    model = compile_model(layers, 64, batch=1, input_bound=1.0)
    assert model.plan.slots == 4096 and model.plan.strategy == "quadratic-form"
    assert compile_model(layers, 64, batch=1).plan.slots == 8192
    assert compile_model(layers, 64, batch=1, input_bound=1e4).plan.slots == 8192
    with pytest.raises(einfhe.ModelError, match="input_bound"):
        compile_model(layers, 64, input_bound=float("nan"))


@pytest.mark.fhe
def test_a_bounded_matvec_on_the_small_ring_decrypts_within_its_bound():
    W, x = RNG.uniform(-1, 1, (64, 64)), RNG.uniform(-1, 1, 64)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((64,), bound=1.0))
    ctx = einfhe.Context.for_plan(plan)
    assert ctx.params.ring_dim == 8192 and ctx.params.secure
    y = einfhe.decrypt(ctx, einfhe.run(ctx, plan, W, einfhe.encrypt(ctx, x, plan.input_layout(1))))
    assert np.abs(y - W @ x).max() < error_bound(ctx.params, 1.0, terms=64, depth=1, keyswitches=plan.keyswitches)
