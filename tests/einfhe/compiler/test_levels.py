"""Level planning: the cost placement is optimal over its model of costs (checked by brute force), beats
"bootstrap when out of levels" on a model built to show it, keeps residual blocks in one refresh, prints a level
map, and a planned program decrypts on OpenFHE to the plaintext model's outputs."""

import itertools

import numpy as np
import pytest

import einfhe
from einfhe.compiler.levels import LayerLevels, bootstrap_seconds, greedy_levels, plan_levels
from einfhe.compiler.model import Linear, Residual, Square, compile_model
from einfhe.params import error_bound


def _narrow_then_wide(rng):
    """6 -> 2 -> 64 -> 2 with squares: out of levels at the wide square (64 ciphertexts), one narrow point before."""
    W1, W2, W3 = rng.uniform(-0.5, 0.5, (2, 6)), rng.uniform(-0.5, 0.5, (64, 2)), rng.uniform(-0.1, 0.1, (2, 64))
    layers = [Linear(W1), Square(), Linear(W2), Square(), Linear(W3)]

    def reference(X):
        return (((X @ W1.T) ** 2 @ W2.T) ** 2) @ W3.T

    return layers, reference


def test_cost_placement_beats_bootstrap_when_out_of_levels():
    rng = np.random.default_rng(1)
    layers, reference = _narrow_then_wide(rng)
    greedy = compile_model(layers, 6, batch=8, slots=8, max_depth=3, placement="greedy")
    planned = compile_model(layers, 6, batch=8, slots=8, max_depth=3)
    assert greedy.levels.bootstrap_before == (3,) and greedy.plan.bootstraps == 64
    assert planned.levels.bootstrap_before == (2,) and planned.plan.bootstraps == 2
    assert len(planned.levels.bootstrap_before) <= len(greedy.levels.bootstrap_before)
    assert planned.levels.seconds < greedy.levels.seconds / 10
    assert max(planned.plan.depth, greedy.plan.depth) <= 3
    X = rng.uniform(-1, 1, (8, 6))
    for model in (planned, greedy):
        got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X), *model.plains))
        np.testing.assert_allclose(got, reference(X), rtol=1e-10, atol=1e-10)


def _random_profile(rng, n):
    return tuple(LayerLevels(i, f"L{i}", int(rng.integers(0, 3)), int(rng.integers(1, 40)), bool(rng.integers(0, 2)),
                             tuple(("mul_plain", int(k)) for k in rng.integers(0, 3, int(rng.integers(1, 30)))))
                 for i in range(n))


def _feasible(profile, placed, max_depth):
    used = 0
    for layer in profile:
        if layer.position in placed:
            if used + layer.scale_first > max_depth:
                return False
            used = 0
        used += layer.levels
        if used > max_depth:
            return False
    return True


@pytest.mark.parametrize("seed", range(6))
def test_cost_placement_is_the_cheapest_feasible_one(seed):
    """Against every subset of boundaries, priced by the same model (greedy_levels prices a given placement)."""
    rng = np.random.default_rng(seed)
    profile, max_depth = _random_profile(rng, 7), 3
    planned = plan_levels(profile, max_depth, 1024)
    best = None
    for k in range(len(profile)):
        for placed in itertools.combinations(range(1, len(profile)), k):
            if _feasible(profile, placed, max_depth):
                plan = greedy_levels(profile, max_depth, 1024)
                seconds = _price(plan, profile, placed, max_depth)
                best = seconds if best is None else min(best, seconds)
    assert planned.seconds == pytest.approx(best, rel=1e-12)
    assert _feasible(profile, planned.bootstrap_before, max_depth)


def _price(greedy_plan, profile, placed, max_depth):
    """Seconds of a placement: bootstraps at their ciphertext counts plus each layer at its start level."""
    from einfhe.compiler.levels import _Pricer

    pricer, used, refreshed, total = _Pricer(max_depth, 65536), 0, False, 0.0
    for layer in profile:
        if layer.position in placed:
            used, refreshed = 0, True
            total += layer.cts_in * bootstrap_seconds(1024)
        total += pricer.layer(layer, used, refreshed)
        used += layer.levels
    return total


def test_residual_blocks_share_one_refresh_and_the_map_says_where_and_why():
    rng = np.random.default_rng(4)
    W0, Wr, Wout = rng.uniform(-0.4, 0.4, (6, 5)), rng.uniform(-0.4, 0.4, (6, 6)), rng.uniform(-0.3, 0.3, (3, 6))
    block = Residual((Linear(Wr), Square()))
    layers = [Linear(W0), Square(), block, block, Linear(Wout)]
    model = compile_model(layers, 5, batch=8, slots=8, max_depth=3)
    assert set(model.levels.bootstrap_before) <= {1, 2, 3, 4} and model.plan.depth <= 3
    X = rng.uniform(-1, 1, (8, 5))
    h = (X @ W0.T) ** 2
    for _ in range(2):
        h = h + (h @ Wr.T) ** 2
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X), *model.plains))
    np.testing.assert_allclose(got, h @ Wout.T, rtol=1e-9, atol=1e-9)
    text = str(model.levels)
    assert "level map (cost placement" in text and "Residual 6->6" in text
    assert text.count("-- bootstrap") == len(model.levels.bootstrap_before) > 0


def test_unknown_placement_lists_the_valid_ones():
    layers, _ = _narrow_then_wide(np.random.default_rng(0))
    with pytest.raises(einfhe.ModelError, match="valid placements: cost, greedy"):
        compile_model(layers, 6, batch=8, slots=8, max_depth=3, placement="lazy")
    with pytest.raises(einfhe.ModelError, match="raise max_depth"):
        compile_model(layers, 6, batch=8, slots=8, max_depth=0)


@pytest.mark.fhe
def test_planned_bootstraps_decrypt_to_the_plaintext_model():
    """On OpenFHE (a small insecure ring), within the bound: CKKS error of the levels (error_bound) plus the
    bootstrap's error (2^-10: what rings up to 2^12 keep with the 5-bit gap, einfhe.params.bootstrap; about 2^-46
    on this 16-dimensional ring, measured) carried
    through the layers after it: the linear layers by their largest absolute row sums, the square by 2 max|h|."""
    rng = np.random.default_rng(2)
    layers, reference = _narrow_then_wide(rng)
    model = compile_model(layers, 6, batch=8, slots=8, max_depth=3)
    params = einfhe.Parameters.insecure_for_tests(3, 8, bootstrap=True)
    ctx = einfhe.Context.for_plan(model.plan, params=params)
    X = rng.uniform(-1, 1, (8, 6))
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
    got = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe))))
    W1, W2, W3 = (layer.weight for layer in layers[::2])
    h = (X @ W1.T) ** 2 @ W2.T
    amplify = np.abs(W2).sum(axis=1).max() * 2 * np.abs(h).max() * np.abs(W3).sum(axis=1).max()
    bound = error_bound(params, float(np.abs(h).max() ** 2), 64, 3, 0) + 2.0**-10 * amplify
    assert np.abs(got - reference(X)).max() <= bound
