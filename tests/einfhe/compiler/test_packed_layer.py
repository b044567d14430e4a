"""The encoder layer in one row packing (einfhe.compiler.transformer.packed): row products against numpy (junk in the
rows' tails, chunks side by side, several ciphertexts), the scores in their (query, head, offset) layout, the layer
against the polynomial layer on the simulator and on a small insecure OpenFHE ring within its CKKS error bound, and
the rotation keys and rotations against the einsum chain's."""

import functools

import numpy as np
import pytest

import einfhe
from einfhe.compiler.transformer import (EncoderWeights, PieceBuilder, RowPacking, calibrate_encoder,
                                         compile_encoder_layer, compile_packed_layer, encoder_layer, heads_of,
                                         stack_programs)
from einfhe.compiler.builder import Packed
from einfhe.compiler.transformer.packed import scores_piece
from einfhe.compiler.transformer.refresh import HEADROOM_MARGIN, chain_levels, place_bootstraps, shrink_bits
from einfhe.compiler.transformer.rowmatmul import block_sum, pattern_layout, row_matmul, row_span
from einfhe.errors import ModelError
from einfhe.layout import Dim, Layout
from einfhe.params.precision import error_bound
from einfhe.runtime.magnitudes import value_magnitudes
from encoder_bounds import bootstrapped_bound, largest_value

WIDTH, HEADS, INNER, TOKENS = 16, 2, 32, 8


@pytest.fixture(scope="module")
def layer():
    """Weights, calibrated blocks and a held-out input (not among the calibration samples)."""
    rng = np.random.default_rng(0)
    weights = EncoderWeights.random(rng, WIDTH, HEADS, INNER)
    blocks = calibrate_encoder(weights, [rng.normal(size=(TOKENS, WIDTH)) for _ in range(32)])
    return weights, blocks, rng.normal(size=(TOKENS, WIDTH)) * 0.9


def _simulated(program, x, slots, bootstrap=False):
    params = einfhe.Parameters.insecure_for_tests(program.depth, slots, bootstrap=bootstrap)
    ctx = einfhe.Context.for_plan(*program.plans, backend="simulator", params=params)
    out = program.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, program.input_layout))
    return einfhe.decrypt(ctx, out), ctx, out


def _stacked(layout: Layout, count: int) -> Layout:
    """`layout` with a leading axis of `count` ciphertexts (itself when count is 1)."""
    if count == 1:
        return layout
    return Layout((Dim("k", count, "axis", count),) + layout.dims, layout.slots, "k" + layout.indices,
                  (count,) + layout.shape)


@pytest.mark.parametrize("n, outs, ins, per", [(16, 1, 1, 1), (12, 2, 1, 2), (16, 1, 2, 2), (5, 1, 1, 1)])
def test_row_products_match_numpy_and_ignore_the_rows_tails(n, outs, ins, per):
    """Output ciphertext k, block p: sum over input ciphertexts a of x_a[p] M[k, a, p] per row, exact zeros past
    offset n; the inputs carry junk past offset n of every row, which no product reads."""
    rng = np.random.default_rng(n)
    tokens, row = 4, 32
    assert row_span(n) <= row
    slots = per * tokens * row
    matrices = rng.normal(size=(outs, ins, per, n, n))
    rows = rng.normal(size=(ins, per, tokens, row))
    block = Layout((Dim("c", per, "axis", per), Dim("s", tokens, "axis", tokens), Dim("f", row, "axis", row)),
                   slots, "csf", (per, tokens, row))
    pb = PieceBuilder(_stacked(block, ins))
    cts = row_matmul(pb, pb.input.cts, matrices, pattern_layout(per, tokens, row, slots))
    piece = pb.plan("rows", Packed(cts, _stacked(block, outs)))
    got = einfhe.simulate(piece.plan, rows if ins > 1 else rows[0], *piece.plains).reshape(outs, per, tokens, row)
    expected = np.einsum("aptn,kapnm->kptm", rows[..., :n], matrices)
    np.testing.assert_allclose(got[..., :n], expected, rtol=1e-12, atol=1e-12)
    assert not got[..., n:].any()


def test_block_sum_leaves_the_total_in_every_block():
    rng = np.random.default_rng(1)
    layout = Layout((Dim("c", 4, "axis", 4), Dim("f", 8, "axis", 8)), 32, "cf", (4, 8))
    x = rng.normal(size=(4, 8))
    pb = PieceBuilder(layout)
    piece = pb.plan("sum", Packed((block_sum(pb, pb.input.cts, 4, 8),), layout))
    np.testing.assert_allclose(einfhe.simulate(piece.plan, x, *piece.plains), np.tile(x.sum(axis=0), (4, 1)),
                               rtol=1e-12)


def test_scores_land_in_query_head_offset_order():
    """S'[q, h, r] = S[h, q, (q + r) mod tokens]: every head's q k^T at once, no generic relayout."""
    rng = np.random.default_rng(2)
    packing = RowPacking(TOKENS, WIDTH, HEADS, INNER, 256)
    q, k = rng.normal(size=(2, TOKENS, WIDTH))
    piece = scores_piece(packing.hidden(), packing.hidden(), packing)
    got = einfhe.simulate(piece.plan, q, k, *piece.plains)
    weights = EncoderWeights.random(rng, WIDTH, HEADS, INNER)
    scores = np.einsum("hqe,hke->hqk", heads_of(weights, q), heads_of(weights, k))
    offsets = (np.arange(TOKENS)[:, None] + np.arange(TOKENS)[None]) % TOKENS
    expected = scores[:, np.arange(TOKENS)[:, None], offsets].transpose(1, 0, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert piece.plan.depth == 2 and piece.plan.output_layout == packing.scores()


@pytest.mark.parametrize("slots", [256, 512])
def test_the_packed_layer_computes_the_polynomial_layer_on_the_simulator(layer, slots):
    """At 256 slots the feed-forward chunks take a ciphertext each, at 512 they sit side by side in one."""
    weights, blocks, x = layer
    program = compile_packed_layer(weights, blocks, TOKENS, slots=slots)
    got, ctx, out = _simulated(program, x, slots)
    np.testing.assert_allclose(got, encoder_layer(weights, x, blocks), rtol=1e-9, atol=1e-9)
    assert max(ctx.backend.level(ct) for ct in out.cts) <= program.depth
    stages = {stage.name: stage.plan for stage in program.stages}
    assert stages["h@W1"].output_layout.num_cts == 512 // slots
    assert all(plan.op_counts()["mask"] == 0 for name, plan in stages.items() if name not in ("q.k", "p.v"))
    assert "softmax" in program.level_map() and "norm2" in program.level_map()


def test_the_packing_needs_far_fewer_keys_and_rotations_than_the_einsum_chain(layer):
    weights, blocks, _ = layer
    packed = compile_packed_layer(weights, blocks, TOKENS, slots=256)
    chain = compile_encoder_layer(weights, blocks, TOKENS, slots=256)
    assert len(packed.rotation_keys) * 2 < len(chain.rotation_keys)
    assert packed.rotation_count * 5 < chain.rotation_count
    assert packed.depth < chain.depth


@pytest.mark.fhe
def test_the_packed_layer_on_openfhe_decrypts_to_the_polynomial_layer(layer):
    """The CKKS error bound of the layer's levels and key switches on a ring of 512, for values of the largest
    magnitude the layer meets: as for the einsum chain (tests/einfhe/compiler/test_encoder_layer.py), plus the
    exp's peak on its fitted range inside the softmax (its row sums, at most `tokens` such terms, are within the
    INNER terms counted): with this layer's few key switches, the softmax's amplified rounding is most of the
    error (as measured stage by stage against the simulator: about 2e-7 before it, 1e-4 after)."""
    weights, blocks, x = layer
    program = compile_packed_layer(weights, blocks, TOKENS, slots=256)
    trace = {}
    expected = encoder_layer(weights, x, blocks, trace=trace)
    magnitude = largest_value(blocks, trace)
    params = einfhe.Parameters.insecure_for_tests(program.depth, 256)
    ctx = einfhe.Context.for_plan(*program.plans, params=params)
    out = program.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, program.input_layout))
    keyswitches = sum(plan.keyswitches for plan in program.plans)
    bound = error_bound(params, magnitude, INNER, program.depth, keyswitches)
    assert np.abs(einfhe.decrypt(ctx, out) - expected).max() <= bound


@pytest.mark.parametrize("tokens, slots, match", [(6, 256, "power-of-two"), (16, 512, "head width"),
                                                  (8, 128, "do not fit")])
def test_packings_that_cannot_work_are_refused(tokens, slots, match):
    with pytest.raises(ModelError, match=match):
        RowPacking(tokens, WIDTH, HEADS, INNER, slots)


@pytest.mark.parametrize("max_depth", [8, 12])
def test_bootstraps_placed_by_the_level_planner_keep_the_layer_exact(layer, max_depth):
    """The level planner cuts the layer (51 levels) into stretches of at most max_depth levels; the chain with its
    bootstraps computes the polynomial layer on the simulator, never deeper than max_depth, and the level map says
    where each refresh sits."""
    weights, blocks, x = layer
    program = compile_packed_layer(weights, blocks, TOKENS, slots=256)
    refreshed, level_plan = place_bootstraps(program, max_depth, 256)
    assert program.depth > 3 * max_depth > 0 and refreshed.depth <= max_depth
    assert len(level_plan.bootstrap_before) >= program.depth // max_depth
    assert sum(plan.bootstraps for plan in refreshed.plans) >= len(level_plan.bootstrap_before)
    assert all(layer.levels <= max_depth for layer in level_plan.layers)
    params = einfhe.Parameters.insecure_for_tests(refreshed.depth, 256, bootstrap=True)
    ctx = einfhe.Context.for_plan(*refreshed.plans, backend="simulator", params=params)
    out = refreshed.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, refreshed.input_layout))
    np.testing.assert_allclose(einfhe.decrypt(ctx, out), encoder_layer(weights, x, blocks), rtol=1e-9, atol=1e-9)
    assert max(ctx.backend.level(ct) for ct in out.cts) <= max_depth
    text = str(level_plan)
    assert text.count("-- bootstrap") == len(level_plan.bootstrap_before) and "softmax" in text
    rows = refreshed.level_map().splitlines()[1:]
    assert sum(int(row.split()[4]) for row in rows) == sum(plan.bootstraps for plan in refreshed.plans)


def test_a_refresh_never_splits_a_chebyshev_series_or_a_product_before_its_rescale(layer):
    weights, blocks, _ = layer
    program = compile_packed_layer(weights, blocks, TOKENS, slots=256)
    chain = chain_levels(program)
    levels = program.value_levels()
    for i, stage in enumerate(program.stages):
        for step in stage.plan.steps:
            if step.op == "chebyshev":
                start = chain.levels[chain.loads.get((i, step.src), (i, step.src))]
                assert not any(start < cut < start + step.levels for cut in chain.cuts)
    assert chain.depth == program.depth and chain.cuts and max(max(v.values()) for v in levels) == chain.depth
    made = {(i, step.out): step.op for i, stage in enumerate(program.stages) for step in stage.plan.steps}
    for cut in chain.cuts:
        assert not {made.get(src) for src in chain.crossing(cut)} & {"mul", "mul_plain", "mask", "hoist"}


def test_a_chain_that_cannot_be_cut_finely_enough_is_refused(layer):
    weights, blocks, _ = layer
    program = compile_packed_layer(weights, blocks, TOKENS, slots=256)
    with pytest.raises(ModelError, match="raise max_depth"):
        place_bootstraps(program, 3, 256)
    with pytest.raises(ModelError, match="placement"):
        place_bootstraps(program, 12, 256, placement="nowhere")


@pytest.mark.fhe
def test_the_packed_layer_with_bootstraps_on_openfhe_decrypts_to_the_polynomial_layer(layer):
    """Four bootstrap points inside the layer (12 levels between refreshes), on a ring of 512 (~15 s), the values
    past a headroom of 2 shrunk before their bootstrap and doubled back after (OpenFHE's headroom is 16 here:
    the test makes the shrinks run): within the CKKS bound of the test above plus the bootstraps' error carried
    through the layer. That part is measured on the simulator with every bootstrap moving every slot by 2^-10 (the
    error a bootstrap leaves at these rings, tests/einfhe/compiler/test_levels.py), signs drawn at random, then
    doubled with its value: how far such errors take the output."""
    weights, blocks, x = layer
    program = compile_packed_layer(weights, blocks, TOKENS, slots=256)
    refreshed, _ = place_bootstraps(program, 12, 256, magnitudes=value_magnitudes(program, [x]), headroom=2.0)
    params = einfhe.Parameters.insecure_for_tests(refreshed.depth, 256, bootstrap=True)
    bound = bootstrapped_bound(weights, blocks, refreshed, params, x, INNER)
    expected = encoder_layer(weights, x, blocks)
    ctx = einfhe.Context.for_plan(*refreshed.plans, params=params)
    out = refreshed.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, refreshed.input_layout))
    assert sum(plan.bootstraps for plan in refreshed.plans) >= 4 and refreshed.depth == 13  # the shrinks' level
    assert np.abs(einfhe.decrypt(ctx, out) - expected).max() <= bound


def test_stacked_layers_run_as_one_chain_with_bootstraps_across_them(layer):
    """Two layers stacked: the second reads the first's output, and the level planner cuts the whole chain (its
    refreshes may straddle the layers); the chain computes the two polynomial layers on the simulator."""
    weights, blocks, x = layer
    first = compile_packed_layer(weights, blocks, TOKENS, slots=256)
    stacked = stack_programs([first, first])
    assert [s.name for s in stacked.stages[:2]] == ["L0.q", "L0.k"] and stacked.stages[-1].name == "L1.norm2"
    assert stacked.depth == 2 * first.depth
    refreshed, level_plan = place_bootstraps(stacked, 12, 256)
    assert refreshed.depth <= 12 and len(level_plan.bootstrap_before) >= stacked.depth // 12
    got, _, _ = _simulated(refreshed, x, 256, bootstrap=True)
    expected = encoder_layer(weights, encoder_layer(weights, x, blocks), blocks)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(ModelError, match="at least one"):
        stack_programs([])


def test_values_past_the_headroom_are_shrunk_before_their_bootstrap_and_grown_back(layer):
    """With a headroom of 1 most refreshed values are too large: each is multiplied by 2^-k first (one level)
    and doubled k times after; every value a bootstrap meets is then below the headroom, and the chain still
    computes the polynomial layer exactly on the simulator."""
    weights, blocks, x = layer
    program = compile_packed_layer(weights, blocks, TOKENS, slots=256)
    magnitudes = value_magnitudes(program, [x])
    plain, _ = place_bootstraps(program, 12, 256)
    shrunk, _ = place_bootstraps(program, 12, 256, magnitudes=magnitudes, headroom=1.0)
    mul_plain = [sum(p.op_counts()["mul_plain"] for p in prog.plans) for prog in (plain, shrunk)]
    shrinks = mul_plain[1] - mul_plain[0]
    assert 0 < shrinks <= sum(p.bootstraps for p in shrunk.plans) and shrunk.depth == plain.depth + 1
    params = einfhe.Parameters.insecure_for_tests(shrunk.depth, 256, bootstrap=True)
    ctx = einfhe.Context.for_plan(*shrunk.plans, backend="simulator", params=params)
    met, exact_bootstrap = [], ctx.backend.bootstrap
    ctx.backend.bootstrap = lambda ct: met.append(np.abs(ct.values).max()) or exact_bootstrap(ct)
    out = shrunk.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, shrunk.input_layout))
    np.testing.assert_allclose(einfhe.decrypt(ctx, out), encoder_layer(weights, x, blocks), rtol=1e-9, atol=1e-9)
    assert max(met) < 1.0 / HEADROOM_MARGIN and len(met) == sum(p.bootstraps for p in shrunk.plans)
    assert max(magnitudes.values()) > 1.0
    assert shrink_bits(3.0, 16.0) == 0 and shrink_bits(13.0, 16.0) == 1 and shrink_bits(200.0, 16.0) == 4
    with pytest.raises(ModelError, match="together"):
        place_bootstraps(program, 12, 256, magnitudes=magnitudes)
