"""ReLU by a composite minimax sign (Lee et al.): the stages are minimax (better than least squares), the reported
error is the error on the calibrated range, and a model with it runs simulated and on OpenFHE within that error."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler.activations import CompositeReLU, minimax_odd_sign
from einfhe.compiler.model import Linear, compile_model


@pytest.mark.parametrize("degree, lo", [(7, 2.0**-4), (15, 2.0**-5), (5, 0.5)])
def test_a_stage_is_minimax_not_least_squares(degree, lo):
    coeffs, error = minimax_odd_sign(degree, lo, 1.0)
    x = np.linspace(lo, 1, 5001)
    assert np.abs(np.polyval(coeffs[::-1], x) - 1).max() == pytest.approx(error, rel=1e-3)
    basis = np.stack([x ** k for k in range(1, degree + 1, 2)], axis=1)
    least_squares = np.linalg.lstsq(basis, np.ones_like(x), rcond=None)[0]
    assert error < np.abs(basis @ least_squares - 1).max()
    assert np.all(coeffs[::2] == 0)  # odd


@pytest.mark.parametrize("bound, degrees, eps", [(4.0, (7, 15, 27), 2.0**-7), (1.0, (7, 7), 2.0**-4),
                                                 (10.0, (15, 15), 2.0**-5)])
def test_the_reported_error_is_the_relu_error_on_the_range(bound, degrees, eps):
    relu = CompositeReLU.fit(bound, degrees, eps)
    x = np.random.default_rng(0).uniform(-bound, bound, 50000)
    measured = np.abs(relu(x) - np.maximum(x, 0)).max()
    assert measured <= relu.error * (1 + 1e-6)
    assert relu.error <= eps * bound  # below eps*bound the sign is not approximated; above it, it nearly is
    far = np.abs(x) > 2 * eps * bound
    assert np.abs(relu(x[far]) - np.maximum(x[far], 0)).max() < relu.error


def _relu_model(rng, relu):
    W1, W2 = rng.uniform(-1, 1, (4, 5)), rng.uniform(-0.5, 0.5, (3, 4))
    return [Linear(W1), relu, Linear(W2)], (lambda X: np.maximum(X @ W1.T, 0) @ W2.T), W2


def test_a_model_with_composite_relu_simulates_to_relu_within_the_reported_error():
    rng = np.random.default_rng(1)
    relu = CompositeReLU.fit(5.0, (7, 7), 2.0**-4)
    layers, reference, W2 = _relu_model(rng, relu)
    model = compile_model(layers, 5, batch=8, slots=8)
    assert model.plan.depth == 1 + relu.levels + 1
    X = rng.uniform(-1, 1, (8, 5))
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X), *model.plains))
    np.testing.assert_allclose(got, reference(X), atol=relu.error * np.abs(W2).sum(axis=1).max(), rtol=0)


@pytest.mark.fhe
def test_composite_relu_on_openfhe():
    """Within the reported error plus the CKKS error of its levels (einfhe.params.error_bound, the values stay
    below the bound 5), through the last layer's largest absolute row sum."""
    rng = np.random.default_rng(2)
    relu = CompositeReLU.fit(5.0, (7, 7), 2.0**-4)
    layers, reference, W2 = _relu_model(rng, relu)
    model = compile_model(layers, 5, batch=8, slots=8)
    params = einfhe.Parameters.insecure_for_tests(model.plan.depth, 8)
    ctx = einfhe.Context.for_plan(model.plan, params=params)
    X = rng.uniform(-1, 1, (8, 5))
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
    got = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe))))
    ckks = einfhe.params.error_bound(params, 5.0, 5, model.plan.depth, model.plan.keyswitches)
    assert np.abs(got - reference(X)).max() <= (relu.error + ckks) * np.abs(W2).sum(axis=1).max()
