"""Sequential models (Linear, Square) compiled to one plan, single-sample and batched, against numpy."""

import numpy as np
import pytest

import einfhe
from einfhe.model import Linear, Square, compile_model
from einfhe.precision import error_bound


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
    assert model.plan.depth == 3


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
