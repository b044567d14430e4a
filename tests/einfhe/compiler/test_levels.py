"""Level planning: the cost placement is optimal over its model of costs (checked by brute force), beats
"bootstrap when out of levels" on a model built to show it, keeps residual blocks in one refresh, prints a level
map, and a planned program decrypts on OpenFHE to the plaintext model's outputs."""

import itertools

import numpy as np
import pytest

import einfhe
from einfhe.compiler.levels import LayerLevels, greedy_levels, plan_levels
from einfhe.compiler.model import Linear, Residual, Square, compile_model
from einfhe.params import error_bound
from einfhe.plan.cost import bootstrap_seconds


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

    pricer, used, refreshed, total = _Pricer(max_depth, 1024, 65536), 0, False, 0.0
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


def _amplification(layers, X, start):
    """How much an error entering layer `start` can grow by the output: each linear layer by its largest absolute
    row sum, each square by 2 max|input| plus the error itself (below 2^-6 here)."""
    h, factor = X, 1.0
    for position, layer in enumerate(layers):
        if position >= start:
            square = isinstance(layer, Square)
            factor *= 2 * np.abs(h).max() + 2.0**-6 if square else np.abs(layer.weight).sum(axis=1).max()
        h = h * h if isinstance(layer, Square) else h @ layer.weight.T
    return factor


def _run_encrypted(model, params, X):
    """Encrypt at the plan's input level (so OpenFHE really bootstraps: given a ciphertext with more levels left
    than bootstrapping needs, it returns it unchanged), run, decrypt; the output's level too."""
    ctx = einfhe.Context.for_plan(model.plan, params=params)
    level = model.input_level(params)
    assert level > 0
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout, level=level)
    ye = einfhe.run(ctx, model.plan, *model.operands(xe))
    return model.unpack_output(einfhe.decrypt(ctx, ye)), ye.cts[0].GetLevel()


@pytest.mark.fhe
def test_planned_bootstraps_decrypt_to_the_plaintext_model():
    """On OpenFHE (a small insecure ring), within the bound: CKKS error of the levels (error_bound) plus the
    bootstrap's error (2^-10: what rings up to 2^12 keep with the 5-bit gap, einfhe.params.bootstrap) carried
    through the layers after it."""
    rng = np.random.default_rng(2)
    layers, reference = _narrow_then_wide(rng)
    model = compile_model(layers, 6, batch=8, slots=8, max_depth=3)
    params = einfhe.Parameters.insecure_for_tests(3, 8, bootstrap=True)
    X = rng.uniform(-1, 1, (8, 6))
    got, _ = _run_encrypted(model, params, X)
    h = (X @ layers[0].weight.T) ** 2 @ layers[2].weight.T
    bound = error_bound(params, float(np.abs(h).max() ** 2), 64, 3, 0) + 2.0**-10 * _amplification(layers, X, 2)
    assert np.abs(got - reference(X)).max() <= bound


@pytest.mark.fhe
def test_full_stretches_bootstrap_again():
    """Every stretch uses all its levels and is bootstrapped again (three bootstraps in a row): the chain keeps the
    level a bootstrap's input needs, and each bootstrap's error (2^-10) is carried to the output."""
    rng = np.random.default_rng(3)
    weights = [rng.uniform(-0.6, 0.6, shape) for shape in ((3, 4), (3, 3), (3, 3), (2, 3))]
    layers = [Linear(weights[0]), Square(), Linear(weights[1]), Square(), Linear(weights[2]), Square(),
              Linear(weights[3])]
    model = compile_model(layers, 4, batch=8, slots=8, max_depth=2)
    placed = model.levels.bootstrap_before
    assert len(placed) == 3 and sum(layer.levels for layer in model.levels.layers[placed[1]:placed[2]]) == 2
    params = einfhe.Parameters.insecure_for_tests(2, 8, bootstrap=True)
    X = rng.uniform(-1, 1, (8, 4))
    got, level = _run_encrypted(model, params, X)
    after_last = sum(layer.levels for layer in model.levels.layers[placed[-1]:])
    assert level == einfhe.params.BOOTSTRAP_DEPTH + after_last  # refreshed by the last bootstrap for real
    h = X
    for layer in layers:
        h = h * h if isinstance(layer, Square) else h @ layer.weight.T
    bound = sum(error_bound(params, 4.0, 4, 2, 0) + 2.0**-10 * _amplification(layers, X, start)
                for start in (0, *placed))
    assert np.abs(got - h).max() <= bound
