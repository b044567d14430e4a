"""Per-layer ReLU choice: the chosen polynomial meets the layer's error budget on its range (measured against
numpy's maximum), nothing with fewer levels does, a layer with a smaller range takes a cheaper polynomial, the
level map prints each choice, and a compiled model simulates to the chosen polynomials."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler import ChebyshevActivation, Linear, ReLUWithin, choose_relu, compile_model
from einfhe.compiler.activation_choice import CANDIDATES, _candidate


def _evaluate(activation, x):
    """The activation in float, independently of the compiler: numpy's Chebyshev series or the composite's stages."""
    if isinstance(activation, ChebyshevActivation):
        coeffs = np.array(activation.coeffs)
        coeffs[0] /= 2
        t = (2 * x - activation.lo - activation.hi) / (activation.hi - activation.lo)
        return np.polynomial.chebyshev.chebval(t, coeffs)
    return activation(x)


def _sampled_error(activation, bound):
    x = np.linspace(-bound, bound, 200001)
    return np.abs(_evaluate(activation, x) - np.maximum(x, 0)).max()


@pytest.mark.parametrize("bound, budget", [(0.5, 0.1), (0.5, 0.02), (2.0, 0.02), (8.0, 0.1), (8.0, 0.005)])
def test_the_choice_meets_the_budget_and_nothing_cheaper_does(bound, budget):
    chosen = choose_relu(bound, budget)
    assert _sampled_error(chosen.activation, bound) <= budget
    for kind, spec in CANDIDATES:
        other = _candidate(kind, spec, bound)
        if other.levels < chosen.levels:
            assert _sampled_error(other.activation, bound) > budget, (other.label, chosen.label)


def test_a_smaller_range_takes_fewer_levels_for_the_same_error():
    assert choose_relu(0.5, 0.02).levels < choose_relu(2.0, 0.02).levels < choose_relu(8.0, 0.02).levels


def test_an_unreachable_budget_is_a_clear_error():
    with pytest.raises(einfhe.ModelError, match="no ReLU polynomial reaches an error of 1e-07"):
        choose_relu(8.0, 1e-7)
    with pytest.raises(einfhe.ModelError, match="bound > 0"):
        choose_relu(-1.0, 0.1)


def _two_relu_model(rng):
    """Inputs in [-1, 1]: the first ReLU sees at most 0.5 in magnitude, the second at most ~7.3."""
    W1, W2, W3 = rng.uniform(-0.1, 0.1, (4, 5)), rng.uniform(-3.5, 3.5, (4, 4)), rng.uniform(-0.5, 0.5, (3, 4))
    layers = [Linear(W1), ReLUWithin(0.5, 0.02), Linear(W2), ReLUWithin(8.0, 0.02), Linear(W3)]
    return layers, (W1, W2, W3)


def test_each_layer_gets_its_own_choice_in_the_level_map_and_the_model_simulates_to_it():
    rng = np.random.default_rng(4)
    layers, (W1, W2, W3) = _two_relu_model(rng)
    model = compile_model(layers, 5, batch=8, slots=8, max_depth=20)
    narrow, wide = choose_relu(0.5, 0.02), choose_relu(8.0, 0.02)
    relus = [layer for layer in model.levels.layers if layer.choice]
    assert [layer.levels for layer in relus] == [narrow.levels, wide.levels] and narrow.levels < wide.levels
    assert narrow.label in str(model.levels) and wide.label in str(model.levels)
    X = rng.uniform(-1, 1, (8, 5))
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X), *model.plains))
    h = _evaluate(narrow.activation, X @ W1.T)
    expected = _evaluate(wide.activation, h @ W2.T) @ W3.T
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_cheaper_choices_need_fewer_bootstraps():
    """With the wide layer's polynomial at both ReLUs, 8-level stretches need two refreshes; with each layer's own
    choice (3 levels where the range is small), one."""
    layers, _ = _two_relu_model(np.random.default_rng(5))
    layers[1], layers[3] = ReLUWithin(0.5, 0.1), ReLUWithin(8.0, 0.1)
    chosen = compile_model(layers, 5, batch=8, slots=8, max_depth=8)
    wide = choose_relu(8.0, 0.1).activation
    fixed = compile_model([layers[0], wide, layers[2], wide, layers[4]], 5, batch=8, slots=8, max_depth=8)
    assert len(chosen.levels.bootstrap_before) == 1 < len(fixed.levels.bootstrap_before) == 2
    assert chosen.levels.seconds < fixed.levels.seconds
