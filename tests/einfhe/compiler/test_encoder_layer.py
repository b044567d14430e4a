"""One encoder layer of a tiny transformer (width 16, 2 heads) as a chain of plans: the numpy layer is torch's
post-LayerNorm encoder layer (BERT's, MiniLM's), the calibrated polynomial blocks stay near it, the chain computes
the polynomial layer exactly on the simulator, and on a small insecure OpenFHE ring within the CKKS error of its
levels (einfhe.params.error_bound)."""

import dataclasses
import functools

import numpy as np
import pytest

import einfhe
from einfhe.compiler.transformer import (EncoderWeights, calibrate_encoder, compile_encoder_layer, encoder_layer, gelu,
                                         natural_piece)
from einfhe.errors import ModelError
from einfhe.layout import Dim, Layout, natural_layout
from einfhe.params.precision import error_bound

WIDTH, HEADS, INNER, TOKENS, SLOTS = 16, 2, 32, 8, 256


@pytest.fixture(scope="module")
def layer():
    """Weights, calibrated blocks, the compiled chain and a held-out input (not among the calibration samples)."""
    rng = np.random.default_rng(0)
    weights = EncoderWeights.random(rng, WIDTH, HEADS, INNER)
    blocks = calibrate_encoder(weights, [rng.normal(size=(TOKENS, WIDTH)) for _ in range(32)])
    program = compile_encoder_layer(weights, blocks, TOKENS, slots=SLOTS)
    return weights, blocks, program, rng.normal(size=(TOKENS, WIDTH)) * 0.9


def test_the_numpy_layer_is_torchs_post_layernorm_encoder_layer():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.TransformerEncoderLayer(WIDTH, HEADS, INNER, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=False, layer_norm_eps=1e-12).double().eval()
    with torch.no_grad():
        for p in (net.norm1.weight, net.norm1.bias, net.norm2.weight, net.norm2.bias, net.self_attn.in_proj_bias):
            p.uniform_(-0.5, 1.5)
    a = net.self_attn
    in_w, in_b = a.in_proj_weight.detach().numpy(), a.in_proj_bias.detach().numpy()
    weights = EncoderWeights(
        in_w[:WIDTH].T, in_b[:WIDTH], in_w[WIDTH:2 * WIDTH].T, in_b[WIDTH:2 * WIDTH], in_w[2 * WIDTH:].T,
        in_b[2 * WIDTH:], a.out_proj.weight.detach().numpy().T, a.out_proj.bias.detach().numpy(),
        net.norm1.weight.detach().numpy(), net.norm1.bias.detach().numpy(), net.linear1.weight.detach().numpy().T,
        net.linear1.bias.detach().numpy(), net.linear2.weight.detach().numpy().T, net.linear2.bias.detach().numpy(),
        net.norm2.weight.detach().numpy(), net.norm2.bias.detach().numpy(), HEADS)
    x = np.random.default_rng(1).normal(size=(TOKENS, WIDTH))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(encoder_layer(weights, x), expected, rtol=1e-9, atol=1e-9)


def test_the_polynomial_layer_stays_near_the_exact_one(layer):
    """Each block is within its bound of the exact function on the inputs the layer gives it, and the layer's
    output (LayerNorm's, O(1)) within 1e-3 of the exact layer's: the accuracy the calibration aims at."""
    weights, blocks, _, x = layer
    trace = {}
    encoder_layer(weights, x, trace=trace)
    (scores,), (inner,) = trace["scores"], trace["gelu"]
    exps = np.exp(scores - scores.max(axis=-1, keepdims=True))
    assert np.abs(blocks.softmax(scores) - exps / exps.sum(axis=-1, keepdims=True)).max() <= blocks.softmax.error_bound
    assert np.abs(blocks.gelu(inner) - gelu(inner)).max() <= blocks.gelu.error
    for norm, (values,) in ((blocks.norm1, trace["norm1"]), (blocks.norm2, trace["norm2"])):
        exact = norm.exact(values)
        assert np.all(np.abs(norm(values) - exact) <= norm.error * np.abs(exact - norm.beta) + 1e-12)
    assert np.abs(encoder_layer(weights, x, blocks) - encoder_layer(weights, x)).max() < 1e-3


def test_the_chain_computes_the_polynomial_layer_on_the_simulator(layer):
    weights, blocks, program, x = layer
    params = einfhe.Parameters.insecure_for_tests(program.depth, SLOTS)
    ctx = einfhe.Context.for_plan(*program.plans, backend="simulator", params=params)
    out = program.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, program.input_layout))
    np.testing.assert_allclose(einfhe.decrypt(ctx, out), encoder_layer(weights, x, blocks), rtol=1e-9, atol=1e-9)
    assert max(ctx.backend.level(ct) for ct in out.cts) <= program.depth <= 60
    heads = {stage.name: stage.plan for stage in program.stages}
    assert heads["q.k"].cipher_inputs[0].layout.shape == (HEADS, TOKENS, WIDTH // HEADS)  # every head in the slots
    assert len(heads["q.k"].cipher_inputs) == 2 and len(heads["p.v"].cipher_inputs) == 2  # cipher x cipher
    assert "softmax" in program.level_map() and "norm2" in program.level_map()


@pytest.mark.fhe
def test_the_chain_on_openfhe_decrypts_to_the_polynomial_layer(layer):
    """The CKKS error of the chain's levels and key switches (error_bound) on values of the largest magnitude the
    layer meets (its residual stream, scores, the reciprocal of the smallest softmax sum, the inverse square root
    of the smallest variance), summed over the longest contraction (the feed-forward width). Runs ~30 s: the one
    test of a whole encrypted layer, 60 levels deep."""
    weights, blocks, program, x = layer
    trace = {}
    expected = encoder_layer(weights, x, blocks, trace=trace)
    magnitude = max(max(np.abs(v).max() for values in trace.values() for v in values),
                    1 / blocks.softmax.reciprocal.lo, blocks.norm1.inverse_sqrt.lo ** -0.5,
                    blocks.norm2.inverse_sqrt.lo ** -0.5)
    params = einfhe.Parameters.insecure_for_tests(program.depth, SLOTS)
    ctx = einfhe.Context.for_plan(*program.plans, params=params)
    out = program.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, program.input_layout))
    keyswitches = sum(plan.keyswitches for plan in program.plans)
    bound = error_bound(params, magnitude, INNER, program.depth, keyswitches)
    assert np.abs(einfhe.decrypt(ctx, out) - expected).max() <= bound


def test_bad_layers_are_refused(layer):
    weights, blocks, _, _ = layer
    with pytest.raises(ModelError, match="tokens"):
        compile_encoder_layer(weights, blocks, TOKENS * 2, slots=SLOTS)
    with pytest.raises(ModelError, match="heads"):
        EncoderWeights.random(np.random.default_rng(0), 15, 2, 8)
    with pytest.raises(ModelError, match="at least one sample"):
        calibrate_encoder(weights, [])


def test_wide_ranges_get_squarings_and_a_higher_gelu_degree():
    """Scores and feed-forward inputs as wide as MiniLM's first layer's: the calibration halves the scores (and
    squares the softmax back) and raises GELU's degree until the fit is within its tolerance, and the layer stays
    near the exact one."""
    rng = np.random.default_rng(3)
    base = EncoderWeights.random(rng, WIDTH, HEADS, INNER)
    weights = dataclasses.replace(base, wq=base.wq * 3, wk=base.wk * 3, w1=base.w1 * 6)
    samples = [rng.normal(size=(TOKENS, WIDTH)) for _ in range(32)]
    blocks = calibrate_encoder(weights, samples)
    assert blocks.softmax.squarings >= 1
    assert len(blocks.gelu.series.coeffs) - 1 > 27 and blocks.gelu.error <= 1e-4
    x = samples[0] * 0.9
    assert np.abs(encoder_layer(weights, x, blocks) - encoder_layer(weights, x)).max() < 1e-3


def test_natural_piece_moves_a_value_and_keeps_it():
    layout = Layout((Dim("r", 2, "rep"), Dim("s", 8, "axis", TOKENS), Dim("d", 16, "axis", WIDTH)), SLOTS, "sd",
                    (TOKENS, WIDTH))
    x = np.random.default_rng(4).normal(size=(TOKENS, WIDTH))
    piece = natural_piece(layout)
    assert piece.plan.output_layout == natural_layout((TOKENS, WIDTH), SLOTS, "sd")
    np.testing.assert_array_equal(einfhe.simulate(piece.plan, x, *piece.plains), x)


def test_a_chain_in_the_power_of_two_basis_computes_the_same_with_log_many_keys(layer):
    weights, blocks, program, x = layer
    pow2 = program.with_rotation_basis("pow2")
    rotations = {r for plan in pow2.plans for r in plan.rotations}
    assert all(r & (r - 1) == 0 or (SLOTS - r) & (SLOTS - r - 1) == 0 for r in rotations)
    assert len(rotations) <= 2 * np.log2(SLOTS) < len({r for plan in program.plans for r in plan.rotations})
    params = einfhe.Parameters.insecure_for_tests(pow2.depth, SLOTS)
    ctx = einfhe.Context.for_plan(*pow2.plans, backend="simulator", params=params)
    out = pow2.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, pow2.input_layout))
    np.testing.assert_allclose(einfhe.decrypt(ctx, out), encoder_layer(weights, x, blocks), rtol=1e-9, atol=1e-9)
