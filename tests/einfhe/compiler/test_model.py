"""Sequential models (Linear, Square) compiled to one plan, single-sample and batched, against numpy."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler.model import IntLinear, Linear, Square, compile_model
from einfhe.params.precision import error_bound


def _mlp(rng):
    W1, b1 = rng.uniform(-0.3, 0.3, (12, 20)), rng.uniform(-0.3, 0.3, 12)
    W2, b2 = rng.uniform(-0.3, 0.3, (5, 12)), rng.uniform(-0.3, 0.3, 5)
    layers = [Linear(W1, b1), Square(), Linear(W2, b2)]
    return layers, lambda X: ((X @ W1.T + b1) ** 2) @ W2.T + b2


@pytest.mark.parametrize("batch, slots", [(None, 64), (None, 1024), (7, 8), (16, 16)])
def test_model_matches_numpy_on_the_simulator(batch, slots):
    rng = np.random.default_rng(2)
    layers, reference = _mlp(rng)
    model = compile_model(layers, 20, batch=batch, slots=slots)
    X = rng.uniform(0, 1, (batch or 1, 20))
    x = X if batch else X[0]
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(x), *model.plains))
    np.testing.assert_allclose(got, reference(X) if batch else reference(X)[0], rtol=1e-12, atol=1e-12)
    # depth 1 where the one-sample program collapses the block onto the input's monomials (cheaper at 1024 slots)
    assert model.plan.depth == (1 if model.plan.strategy == "quadratic-form" else 3)


def test_batched_layout_needs_no_rotation():
    layers, _ = _mlp(np.random.default_rng(0))
    assert compile_model(layers, 20, batch=16, slots=16).plan.rotations == ()


@pytest.mark.fhe
@pytest.mark.parametrize("batch", [None, 8])
def test_model_on_openfhe(batch):
    rng = np.random.default_rng(5)
    layers, reference = _mlp(rng)
    model = compile_model(layers, 20, batch=batch, slots=64)
    ctx = einfhe.Context.for_plan(model.plan, params=einfhe.Parameters.insecure_for_tests(model.plan.depth, 64))
    X = rng.uniform(0, 1, (batch or 1, 20))
    x = X if batch else X[0]
    xe = einfhe.encrypt(ctx, model.pack_input(x), model.input_layout)
    got = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe))))
    expected = reference(X) if batch else reference(X)[0]
    # the hidden layer sums 20 products of size <= 0.3 and is squared (magnitude ~ 6^2), then 12 more terms
    assert np.abs(got - expected).max() <= error_bound(ctx.params, 36.0, 20 * 12, model.plan.depth, model.plan.keyswitches)


def test_bad_models_are_refused():
    with pytest.raises(einfhe.ModelError, match="expects 3 inputs"):
        compile_model([Linear(np.ones((2, 3)))], 4)
    with pytest.raises(einfhe.ModelError, match="starts with a Linear"):
        compile_model([Square()], 4)
    with pytest.raises(einfhe.ModelError, match="batch"):
        compile_model([Linear(np.ones((2, 4)))], 4, batch=100, slots=64)


def _deep_mlp(rng, layers=4):
    widths = [6] * (layers + 1)
    model, weights = [], []
    for i in range(layers):
        W, b = rng.uniform(-0.4, 0.4, (widths[i + 1], widths[i])), rng.uniform(-0.2, 0.2, widths[i + 1])
        model += [Linear(W, b), Square()] if i < layers - 1 else [Linear(W, b)]
        weights.append((W, b))

    def reference(X):
        for i, (W, b) in enumerate(weights):
            X = X @ W.T + b
            X = X**2 if i < len(weights) - 1 else X
        return X

    return model, reference


@pytest.mark.parametrize("batch, slots", [(None, 64), (8, 8)])
def test_bootstraps_are_placed_when_the_program_is_deeper_than_allowed(batch, slots):
    rng = np.random.default_rng(9)
    layers, reference = _deep_mlp(rng)
    deep = compile_model(layers, 6, batch=batch, slots=slots)
    capped = compile_model(layers, 6, batch=batch, slots=slots, max_depth=3)
    # 7 levels layer by layer, 5 with the first block collapsed onto the monomials (the one-sample program's choice)
    assert deep.plan.depth == (5 if deep.plan.strategy == "quadratic-form" else 7) and deep.plan.bootstraps == 0
    assert capped.plan.depth <= 3 and capped.plan.bootstraps > 0
    X = rng.uniform(-1, 1, (batch or 1, 6))
    x = X if batch else X[0]
    got = capped.unpack_output(einfhe.simulate(capped.plan, capped.pack_input(x), *capped.plains))
    np.testing.assert_allclose(got, reference(X) if batch else reference(X)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.fhe
def test_bootstrapped_model_on_openfhe():
    rng = np.random.default_rng(10)
    layers, reference = _deep_mlp(rng, layers=3)
    model = compile_model(layers, 6, batch=8, slots=8, max_depth=2)
    assert model.plan.bootstraps > 0
    params = einfhe.Parameters.insecure_for_tests(model.plan.depth, 8, bootstrap=True)
    ctx = einfhe.Context.for_plan(model.plan, params=params)
    X = rng.uniform(-1, 1, (8, 6))
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
    got = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe))))
    # bootstrapping's approximate modular reduction dominates the error (about 2^-20 relative here, measured
    # by OpenFHE's examples at these sizes); the values stay below 4 in magnitude
    assert np.abs(got - reference(X)).max() <= 4 * 2.0**-12


def test_bootstrap_depth_matches_openfhe():
    import openfhe

    from einfhe.params import BOOTSTRAP_DEPTH, BOOTSTRAP_LEVEL_BUDGET

    depth = openfhe.CryptoContext.GetBootstrapDepth(list(BOOTSTRAP_LEVEL_BUDGET), openfhe.SecretKeyDist.UNIFORM_TERNARY)
    assert depth == BOOTSTRAP_DEPTH


@pytest.mark.parametrize("integer", [False, True])
def test_residual_block_matches_numpy(integer):
    rng = np.random.default_rng(12)
    q1, s1, b1 = rng.integers(-7, 8, (6, 6)), rng.uniform(0.02, 0.05, 6), rng.uniform(-0.1, 0.1, 6)
    W0, b0 = rng.uniform(-0.3, 0.3, (6, 5)), rng.uniform(-0.1, 0.1, 6)
    Wout = rng.uniform(-0.3, 0.3, (3, 6))
    inner = IntLinear(q1, s1, b1) if integer else Linear(q1 * s1[:, None], b1)
    layers = [Linear(W0, b0), einfhe.Residual((inner, Square())), Linear(Wout)]
    model = compile_model(layers, 5, batch=8, slots=8)
    X = rng.uniform(-1, 1, (8, 5))
    h = X @ W0.T + b0
    expected = (h + (h @ (q1 * s1[:, None]).T + b1) ** 2) @ Wout.T
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X), *model.plains))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(einfhe.ModelError, match="batched packing"):
        compile_model(layers, 5)
