"""The attention mask of the row-packed encoder layer (einfhe.compiler.transformer.keymask): a sentence of L real
tokens padded to the program's 8 runs through one compiled program with its key masks resolved for L, and decrypts
to BERT's layer with the attention mask (a numpy layer written here, padded keys' scores -inf) on the simulator and
on a small insecure OpenFHE ring; without the masks the padding leaks into the real rows."""

import functools
import math

import numpy as np
import pytest

import einfhe
from einfhe.compiler.transformer import (EncoderWeights, KeyMask, calibrate_encoder, compile_encoder_layer,
                                         compile_packed_layer, encoder_layer, gelu, with_length)
from einfhe.errors import ModelError
from einfhe.params.precision import error_bound
from encoder_bounds import largest_value

WIDTH, HEADS, INNER, TOKENS, SLOTS = 16, 2, 32, 8, 256
LAYER_AIM = 1e-3  # the accuracy the calibration aims the layer at (tests/einfhe/compiler/test_encoder_layer.py)


def _bert_layer(w: EncoderWeights, x: np.ndarray, length: int) -> np.ndarray:
    """BERT's post-LayerNorm encoder layer with the attention mask of `length` real tokens, in numpy."""
    def norm(v, gamma, beta):
        return (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + w.eps) * gamma + beta

    def split(v):
        return v.reshape(len(x), w.heads, -1).transpose(1, 0, 2)

    q, k, v = split(x @ w.wq + w.bq), split(x @ w.wk + w.bk), split(x @ w.wv + w.bv)
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(w.head_width)
    scores[..., length:] = -np.inf
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    h = norm(x + (p @ v).transpose(1, 0, 2).reshape(x.shape) @ w.wo + w.bo, w.ln1_gamma, w.ln1_beta)
    inner = h @ w.w1 + w.b1
    erf = np.vectorize(math.erf)
    return norm(h + (0.5 * inner * (1 + erf(inner / math.sqrt(2)))) @ w.w2 + w.b2, w.ln2_gamma, w.ln2_beta)


@pytest.fixture(scope="module")
def layer():
    """Weights, blocks calibrated on padded samples of random lengths (masked), the compiled layer, and a held-out
    input."""
    rng = np.random.default_rng(0)
    weights = EncoderWeights.random(rng, WIDTH, HEADS, INNER)
    samples = [rng.normal(size=(TOKENS, WIDTH)) for _ in range(32)]
    blocks = calibrate_encoder(weights, samples, lengths=[int(n) for n in rng.integers(1, TOKENS + 1, 32)])
    return weights, blocks, compile_packed_layer(weights, blocks, TOKENS, slots=SLOTS), \
        rng.normal(size=(TOKENS, WIDTH)) * 0.9


def _run(program, x, length, backend="simulator"):
    params = einfhe.Parameters.insecure_for_tests(program.depth, SLOTS)
    ctx = einfhe.Context.for_plan(*program.plans, backend=backend, params=params)
    out = program.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, program.input_layout), length)
    return einfhe.decrypt(ctx, out), params


def test_the_masks_resolve_for_a_length():
    """Offset r of query q is key (q + r) mod tokens: real below the length; the mean's selector is 1/length; numpy
    reads a mask as its all-real operand, and JSON keeps it."""
    offsets = (np.arange(TOKENS)[:, None] + np.arange(TOKENS)[None]) % TOKENS
    keys, mean, shifted = KeyMask(TOKENS, HEADS), KeyMask(TOKENS, HEADS, "mean"), KeyMask(TOKENS, HEADS, "offset", 3)
    for length in (1, 5, TOKENS):
        np.testing.assert_array_equal(keys.array(length), np.repeat((offsets < length)[:, None], HEADS, axis=1))
        assert np.all(mean.array(length)[..., 0] == 1 / length) and not mean.array(length)[..., 1:].any()
        np.testing.assert_array_equal(shifted.array(length)[..., 0], np.repeat((offsets[:, 3:4] < length), HEADS, 1))
        assert not shifted.array(length)[..., 1:].any()
    np.testing.assert_array_equal(np.asarray(keys), np.ones(keys.shape))
    assert KeyMask.from_json(shifted.to_json()) == shifted
    assert with_length((keys, "x", 2.0), 4)[1:] == ("x", 2.0)
    for bad in (0, TOKENS + 1, 2.5, True, "3"):
        with pytest.raises(ModelError, match=f"integer in 1..{TOKENS}"):
            keys.array(bad)


def test_masked_blocks_stay_within_their_bounds_of_the_masked_functions(layer):
    """On the masked layer's inputs, the polynomial softmax over the real keys is within its error bound of the
    exact masked softmax (padded keys exactly 0), GELU and the LayerNorms within theirs."""
    weights, blocks, _, x = layer
    for length in (3, 5, TOKENS):
        trace = {}
        encoder_layer(weights, x, trace=trace, length=length)
        (scores,), (inner,) = trace["scores"], trace["gelu"]
        exact = np.exp(scores[..., :length] - scores[..., :length].max(axis=-1, keepdims=True))
        got = blocks.softmax(scores, length)
        assert np.abs(got[..., :length] - exact / exact.sum(-1, keepdims=True)).max() <= blocks.softmax.error_bound
        assert not got[..., length:].any()
        assert np.abs(blocks.gelu(inner) - gelu(inner)).max() <= blocks.gelu.error
        for norm, (values,) in ((blocks.norm1, trace["norm1"]), (blocks.norm2, trace["norm2"])):
            assert np.all(np.abs(norm(values) - norm.exact(values)) <= norm.error * np.abs(norm.exact(values)
                                                                                            - norm.beta) + 1e-12)


@pytest.mark.parametrize("length", [3, 5, TOKENS])
def test_one_program_computes_the_masked_layer_for_every_length(layer, length):
    """The program run with its masks for `length` is the masked polynomial layer exactly (the simulator), and
    that is BERT's masked layer within the accuracy the calibration aims at, every row (the padded positions are
    queries too, attending to the real keys); the same program without its masks is not, where there is padding."""
    weights, blocks, program, x = layer
    got, _ = _run(program, x, length)
    np.testing.assert_allclose(got, encoder_layer(weights, x, blocks, length=length), rtol=1e-9, atol=1e-9)
    reference = _bert_layer(weights, x, length)
    assert np.abs(got - reference).max() < LAYER_AIM
    unmasked, _ = _run(program, x, None)
    np.testing.assert_allclose(unmasked, encoder_layer(weights, x, blocks), rtol=1e-9, atol=1e-9)
    if length < TOKENS:
        assert np.abs(unmasked[:length] - reference[:length]).max() > 10 * LAYER_AIM


def test_a_length_is_refused_where_it_cannot_apply(layer):
    weights, blocks, program, x = layer
    with pytest.raises(ModelError, match="integer in 1..8"):
        _run(program, x, 0)
    chain = compile_encoder_layer(weights, blocks, TOKENS, slots=SLOTS)  # the einsum chain: no key masks
    with pytest.raises(ModelError, match="no attention mask"):
        chain.run(None, x, 3)
    with pytest.raises(ModelError, match="one length per sample"):
        calibrate_encoder(weights, [x], lengths=[3, 4])


@pytest.mark.fhe
def test_the_masked_layer_on_openfhe_decrypts_to_the_masked_polynomial_layer(layer):
    """Five real tokens of eight on a ring of 512: within the CKKS bound of the layer's levels and key switches for
    the largest value the masked layer meets (as tests/einfhe/compiler/test_packed_layer.py bounds the unmasked)."""
    weights, blocks, program, x = layer
    trace = {}
    expected = encoder_layer(weights, x, blocks, trace=trace, length=5)
    got, params = _run(program, x, 5, backend="openfhe")
    keyswitches = sum(plan.keyswitches for plan in program.plans)
    bound = error_bound(params, largest_value(blocks, trace), INNER, program.depth, keyswitches)
    assert np.abs(got - expected).max() <= bound
