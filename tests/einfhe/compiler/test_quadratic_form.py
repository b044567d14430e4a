"""The one-sample program that collapses a model's opening Linear, Square (or Quadratic), Linear into a quadratic form
of the input's monomials (einfhe.compiler.quadratic_form)."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler.model import IntLinear, Linear, Quadratic, Square, _compile_program, compile_model
from einfhe.compiler.quadratic_form import monomial_count, monomials, quadratic_form
from einfhe.params import Parameters, error_bound
from einfhe.plan import Rescale, Rotate

RNG = np.random.default_rng(23)
ACTIVATIONS = [(Square(), lambda h: h**2), (Quadratic(0.3, -0.5, 0.2), lambda h: 0.3 * h**2 - 0.5 * h + 0.2)]


def _mlp(n=64, hidden=32, classes=10, activation=Square()):
    W1, b1 = RNG.uniform(-0.3, 0.3, (hidden, n)), RNG.uniform(-0.3, 0.3, hidden)
    W2, b2 = RNG.uniform(-0.3, 0.3, (classes, hidden)), RNG.uniform(-0.3, 0.3, classes)
    return [Linear(W1, b1), activation, Linear(W2, b2)]


def _float64(layers, x):
    for layer in layers:
        if isinstance(layer, Square):
            x = x**2
        elif isinstance(layer, Quadratic):
            x = layer.a * x**2 + layer.b * x + layer.c
        else:
            x = np.asarray(layer.weight) @ x + layer.bias
    return x


def _simulate(model, x):
    return model.unpack_output(einfhe.simulate(model.plan, model.pack_input(x), *model.plains))


def test_monomials_are_the_upper_triangle_of_the_outer_product_then_the_features():
    x = RNG.uniform(-1, 1, 7)
    outer = np.outer(x, x)
    expected = [outer[j, l] for j in range(7) for l in range(j, 7)] + list(x)
    np.testing.assert_array_equal(monomials(x), expected)
    assert monomial_count(7) == len(expected) == 35
    np.testing.assert_array_equal(monomials(np.stack([x, 2 * x]))[1], monomials(2 * x))


@pytest.mark.parametrize("activation, fn", ACTIVATIONS)
def test_the_form_of_the_monomials_is_the_model(activation, fn):
    layers = _mlp(16, 8, 5, activation)
    form = quadratic_form(layers, 16, 256)
    for x in RNG.uniform(-1, 1, (4, 16)):
        np.testing.assert_allclose(form.matrix @ monomials(x) + form.constant, _float64(layers, x), rtol=1e-12,
                                   atol=1e-12)


def test_no_form_where_the_model_does_not_open_with_the_block_or_the_monomials_do_not_fit():
    layers = _mlp(16, 8, 5)
    assert quadratic_form(layers, 16, 256) is not None
    assert quadratic_form(layers, 16, 128) is None  # 152 monomials
    assert quadratic_form([layers[0], layers[2]], 16, 256) is None
    assert quadratic_form([layers[0], einfhe.ChebyshevActivation((0.0, 1.0), -1.0, 1.0), layers[2]], 16, 256) is None


@pytest.mark.parametrize("activation, fn", ACTIVATIONS)
@pytest.mark.parametrize("batch", [None, 1])
def test_auto_ring_compiles_the_digits_mlp_as_the_form_at_depth_one(activation, fn, batch):
    layers = _mlp(activation=activation)
    model = compile_model(layers, 64, batch=batch, slots="auto")
    assert model.plan.strategy == "quadratic-form" and model.plan.depth == 1 and model.plan.slots == 4096
    assert model.plan.cts_in == 1 and model.input_layout.shape == (monomial_count(64),)
    x = RNG.uniform(0, 1, (1, 64)) if batch else RNG.uniform(0, 1, 64)
    np.testing.assert_allclose(_simulate(model, x).reshape(-1), _float64(layers, x.reshape(-1)), rtol=1e-9, atol=1e-9)
    rotations = [k for k, step in enumerate(model.plan.steps) if isinstance(step, Rotate)]
    rescales = [k for k, step in enumerate(model.plan.steps) if isinstance(step, Rescale)]
    assert len(rescales) == 1 and max(rotations) < rescales[0]  # every key switch before the one rescale


def test_layers_after_the_block_and_the_input_smoothing_run_on_the_form():
    layers = _mlp(16, 8, 5) + [Square(), Linear(RNG.normal(size=(3, 5)), RNG.normal(size=3))]
    q = RNG.integers(-8, 8, (8, 16))
    scale, smooth = RNG.uniform(0.01, 0.1, 8), RNG.uniform(0.5, 2, 16)
    layers[0] = IntLinear(q, scale, layers[0].bias, smooth)
    model = _compile_program(layers, 16, None, slots=256, max_cts=1 << 16, max_depth=None, placement="cost",
                             ring_dim=65536, expand=True)
    assert model.plan.strategy == "quadratic-form" and model.plan.depth == 3
    x = RNG.uniform(-1, 1, 16)
    np.testing.assert_allclose(_simulate(model, x), _float64(layers, x), rtol=1e-9, atol=1e-9)


def test_the_layer_by_layer_program_is_kept_where_it_is_estimated_cheaper_or_the_form_does_not_fit():
    assert compile_model(_mlp(), 64).plan.strategy == "iteration-space"  # N=2^14 either way: depth 3 prices lower
    wide = compile_model(_mlp(128), 128, slots="auto")  # 8,384 monomials fit no candidate
    assert wide.plan.strategy == "iteration-space"


@pytest.mark.fhe
def test_the_form_decrypts_within_its_bound_on_openfhe():
    layers = _mlp(16, 8, 5)
    model = _compile_program(layers, 16, None, slots=256, max_cts=1 << 16, max_depth=None, placement="cost",
                             ring_dim=65536, expand=True)
    params = Parameters.insecure_for_tests(1, 256)
    ctx = einfhe.Context.for_plan(model.plan, params=params)
    x = RNG.uniform(-1, 1, 16)
    out = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(
        einfhe.encrypt(ctx, model.pack_input(x), model.input_layout)))))
    magnitude = np.abs(model.plains[0]).max()
    bound = error_bound(params, magnitude, terms=monomial_count(16), depth=1, keyswitches=0)
    assert np.abs(out - _float64(layers, x)).max() < bound


def test_no_form_for_more_outputs_than_the_diagonal_method_pays_for():
    from einfhe.compiler.quadratic_form import MAX_OUTPUTS

    W1, W2 = RNG.normal(size=(8, 16)), RNG.normal(size=(MAX_OUTPUTS + 1, 8))
    assert quadratic_form([Linear(W1), Square(), Linear(W2)], 16, 4096) is None
    assert quadratic_form([Linear(W1), Square(), Linear(W2[:MAX_OUTPUTS])], 16, 4096) is not None
