"""The transformer's polynomial blocks (softmax, LayerNorm, GELU): each fit is within its reported error of the exact
function (numpy) on its calibrated range, each plan piece computes its fit on the simulator, and on OpenFHE within
the fit's error plus the CKKS error of its levels (einfhe.params.error_bound)."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler.layers import ChebyshevActivation
from einfhe.compiler.transformer import (PolyGelu, PolyLayerNorm, PolySoftmax, gelu, gelu_piece, layernorm_piece,
                                         softmax_piece)
from einfhe.compiler.transformer.approx import inverse_fit
from einfhe.errors import ModelError
from einfhe.layout import Dim, Layout, natural_layout
from einfhe.params.precision import error_bound

SLOTS = 256


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _scores(rng, shape=(2, 5, 5), bound=4.0):
    """Scores in [-bound, bound] and a softmax fitted on the range of scores less their row mean."""
    x = rng.uniform(-bound, bound, shape)
    centred = x - x.mean(axis=-1, keepdims=True)
    return x, PolySoftmax.fit(centred.min() * 1.1, centred.max() * 1.1, shape[-1])


def _layernorm(rng, width=12):
    x = rng.normal(size=(5, width)) * 2 + rng.normal(size=(5, 1))
    var = x.var(axis=-1)
    norm = PolyLayerNorm.fit(rng.normal(size=width), rng.normal(size=width), var.min() / 2, var.max() * 2, eps=1e-5)
    return x, norm


def test_softmax_fit_is_within_its_bound_of_numpy():
    rng = np.random.default_rng(0)
    x, softmax = _scores(rng, (40, 8))
    assert np.abs(softmax(x) - _softmax(x)).max() <= softmax.error_bound
    assert softmax.error_bound < 1e-3  # rows of 8 in [-4, 4]: centred scores up to ~8, exp(8) ~ 3000
    sums = np.linspace(softmax.reciprocal.lo, softmax.reciprocal.hi, 1001)
    assert np.abs(1 - sums * softmax.invert(sums)).max() <= softmax.reciprocal_error * (1 + 1e-9)
    centred_sums = np.exp(x - x.mean(axis=-1, keepdims=True)).sum(axis=-1)
    assert centred_sums.min() >= 1 >= softmax.reciprocal.lo  # a row's maximum is at least its mean


def test_the_inverse_square_roots_first_guess_minimises_the_relative_error():
    """Newton's iteration converges by the first guess's relative error: `inverse_fit` beats the interpolant on it
    (for 1/x the interpolant at Chebyshev nodes is already the relative minimax, for 1/sqrt(x) it is not)."""
    lo, hi = 0.05, 20.0
    v = np.linspace(lo, hi, 20001)
    fitted = inverse_fit(0.5, lo, hi, 13)
    interpolant = ChebyshevActivation.fit(lambda t: t ** -0.5, lo, hi, 13)
    relative = [np.abs(1 - np.sqrt(v) * PolyGelu(f, 0.0)(v)).max() for f in (fitted, interpolant)]
    assert relative[0] < 0.75 * relative[1]


def test_layernorm_fit_is_within_its_bound_of_numpy():
    rng = np.random.default_rng(1)
    x, norm = _layernorm(rng)
    normalized = norm.exact(x) - norm.beta  # (x - mean) * gamma / sqrt(var + eps)
    assert np.all(np.abs(norm(x) - norm.exact(x)) <= norm.error * np.abs(normalized) + 1e-12)
    assert norm.error < 1e-5


def test_gelu_fit_is_within_its_error_of_numpy():
    activation = PolyGelu.fit(-6.0, 6.0, 31)
    x = np.random.default_rng(2).uniform(-6, 6, 5000)
    assert np.abs(activation(x) - gelu(x)).max() <= activation.error
    assert activation.error < 1e-5


def _wide_scores(rng, shape=(2, 4, 8), bound=30.0):
    """Scores as wide as MiniLM's first layer's, and a softmax that halves them three times and squares back."""
    x = rng.uniform(-bound, bound, shape)
    centred = x - x.mean(axis=-1, keepdims=True)
    return x, PolySoftmax.fit(centred.min() * 1.1, centred.max() * 1.1, shape[-1], squarings=3)


def test_a_wide_softmax_is_squared_back_within_its_bound():
    """exp(30) overflows a ciphertext; exp(30 / 8) does not, and softmax(2z) = softmax(z)^2 / sum softmax(z)^2."""
    rng = np.random.default_rng(7)
    x, softmax = _wide_scores(rng, (50, 8))
    error = np.abs(softmax(x) - _softmax(x)).max()
    assert error <= softmax.error_bound  # the propagated bound is loose (x 4 length per squaring)
    assert error < 1e-4
    with pytest.raises(ModelError, match="swamps"):
        PolySoftmax.fit(-30.0, 30.0, 8)  # the same range without squarings


@pytest.mark.parametrize("make", ["softmax", "wide softmax", "layernorm", "gelu"])
def test_each_piece_computes_its_fit_on_the_simulator(make):
    rng = np.random.default_rng(3)
    if make in ("softmax", "wide softmax"):
        x, block = _scores(rng) if make == "softmax" else _wide_scores(rng)
        piece, levels = softmax_piece(natural_layout(x.shape, SLOTS), block), block.levels
    elif make == "layernorm":
        x, block = _layernorm(rng)
        piece, levels = layernorm_piece(natural_layout(x.shape, SLOTS), block), block.levels
    else:
        x, block = rng.uniform(-6, 6, (3, 7)), PolyGelu.fit(-6.0, 6.0, 31)
        piece, levels = gelu_piece(natural_layout(x.shape, SLOTS), block), block.levels
    got = einfhe.simulate(piece.plan, x, *piece.plains)
    np.testing.assert_allclose(got, block(x), rtol=1e-9, atol=1e-12)
    assert piece.plan.depth == levels - (make == "wide softmax")  # rows of 8: no padding to mask


def test_a_piece_moves_an_input_in_another_layout_to_its_natural_one():
    rng = np.random.default_rng(4)
    x, softmax = _scores(rng)
    layout = Layout((Dim("h", 2, "axis", 2), Dim("r", 2, "rep"), Dim("q", 8, "axis", 5), Dim("k", 8, "axis", 5)),
                    SLOTS, "hqk", x.shape)  # a copy of each head beside it, as a contraction may leave it
    piece = softmax_piece(layout, softmax)
    np.testing.assert_allclose(einfhe.simulate(piece.plan, x, *piece.plains), softmax(x), rtol=1e-9, atol=1e-12)
    assert piece.plan.depth == softmax.levels + 1  # the relayout


@pytest.mark.parametrize("make", ["softmax", "wide softmax", "layernorm"])
def test_every_slot_a_series_reads_lies_in_its_range(make):
    """A bootstrap adds noise to every slot, rows that hold no element included; a reciprocal's series read there
    at a sum of 0 (outside its range) blows that noise past the next bootstrap's headroom. So every slot each series
    reads, padding rows included (rows 5 to 7 of 8 here), must lie in the range it was fitted on."""
    rng = np.random.default_rng(8)
    x, block = (_scores(rng) if make == "softmax" else _wide_scores(rng)) if make != "layernorm" else _layernorm(rng)
    make_piece = layernorm_piece if make == "layernorm" else softmax_piece
    piece = make_piece(natural_layout(x.shape, SLOTS), block)
    params = einfhe.Parameters.insecure_for_tests(piece.plan.depth, SLOTS)
    ctx = einfhe.Context.for_plan(piece.plan, backend="simulator", params=params)
    series, read = ctx.backend.chebyshev, []

    def recorded(ct, coeffs, lo, hi):
        read.append((ct.values.min(), ct.values.max(), lo, hi))
        return series(ct, coeffs, lo, hi)

    ctx.backend.chebyshev = recorded
    out = einfhe.run(ctx, piece.plan, *piece.operands(einfhe.encrypt(ctx, x, piece.plan.input_layout(0))))
    np.testing.assert_allclose(einfhe.decrypt(ctx, out), block(x), rtol=1e-9, atol=1e-12)
    assert len(read) == (1 if make == "layernorm" else 2 + block.squarings)
    for smallest, largest, lo, hi in read:
        assert lo <= smallest and largest <= hi, (smallest, largest, lo, hi)


def test_bad_input_is_refused():
    rng = np.random.default_rng(5)
    x, softmax = _scores(rng)
    with pytest.raises(ModelError, match="rows of 5"):
        softmax_piece(natural_layout((2, 5, 6), SLOTS), softmax)
    with pytest.raises(ModelError, match="swamps"):
        PolySoftmax.fit(-4.0, 12.0, 5)
    with pytest.raises(ModelError, match="Newton"):
        PolySoftmax.fit(-4.0, 12.0, 5, exp_degree=63, reciprocal_degrees=(3,))
    with pytest.raises(ModelError, match="centred"):
        PolySoftmax.fit(1.0, 4.0, 5)
    with pytest.raises(ModelError):
        PolyLayerNorm.fit(np.ones(3), np.zeros(4), 0.1, 1.0)


@pytest.mark.fhe
@pytest.mark.parametrize("make", ["softmax", "wide softmax", "layernorm", "gelu"])
def test_each_piece_on_openfhe(make):
    """The piece's error to numpy is the fit's plus the CKKS error of its levels. Magnitudes: the softmax's largest
    values are its exp terms (at most exp(hi)), summed over a row of `length`; LayerNorm's largest is its inverse square root times the centred row; GELU's its input range."""
    rng = np.random.default_rng(6)
    if make in ("softmax", "wide softmax"):
        x, block = _scores(rng) if make == "softmax" else _wide_scores(rng)
        piece, exact, fit = softmax_piece(natural_layout(x.shape, SLOTS), block), _softmax(x), block.error_bound
        magnitude, terms = np.exp(block.exp.hi / 2 ** block.squarings), x.shape[-1]
    elif make == "layernorm":
        x, block = _layernorm(rng)
        piece, exact = layernorm_piece(natural_layout(x.shape, SLOTS), block), block.exact(x)
        fit = block.error * np.abs(exact - block.beta).max()
        magnitude, terms = np.abs(x).max() * block.inverse_sqrt.hi ** -0.5 * np.abs(block.gamma).max(), x.shape[-1]
        magnitude = max(magnitude, 1 / np.sqrt(block.inverse_sqrt.lo) * np.abs(x).max() * np.abs(block.gamma).max())
    else:
        x, block = rng.uniform(-6, 6, (3, 7)), PolyGelu.fit(-6.0, 6.0, 31)
        piece, exact, fit, magnitude, terms = gelu_piece(natural_layout(x.shape, SLOTS), block), gelu(x), \
            block.error, 6.0, 1
    params = einfhe.Parameters.insecure_for_tests(piece.plan.depth, SLOTS)
    ctx = einfhe.Context.for_plan(piece.plan, params=params)
    got = einfhe.decrypt(ctx, einfhe.run(ctx, piece.plan, *piece.operands(einfhe.encrypt(ctx, x, piece.plan.input_layout(0)))))
    ckks = error_bound(params, magnitude, terms, piece.plan.depth, piece.plan.keyswitches)
    assert np.abs(got - exact).max() <= fit + ckks
