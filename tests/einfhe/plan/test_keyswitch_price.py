"""Key-switching ops priced at a parameter set's digits and towers: the calibrated price times the ratio of key
switch work between the set's key shape and the calibrated context's, every other op at its calibrated price,
and plans priced without a parameter set as before."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler.levels import LayerLevels, plan_levels
from einfhe.params import BOOTSTRAP_CHAIN_LEVELS, Parameters
from einfhe.params.parameters import key_switching_shape
from einfhe.plan.cost import PRICED_OPS, estimate_plan, load_cost_model

SWITCHING = {"mul", "rotate", "hoist", "rotate_hoisted"}  # relinearization, rotations, the hoist's digits


def _work(digits, q_towers, p_towers):
    """Tower NTTs of one key switch on a ciphertext of all its towers: each digit extended to Q and P, and the two
    output polynomials brought back."""
    return (digits + 2) * (q_towers + p_towers)


def test_key_switches_at_fifteen_digits_cost_the_calibrated_price_times_the_shape_ratio():
    model, params = load_cost_model(), Parameters.derive(9, 4096, bootstrap=True)
    shape = key_switching_shape(params.total_depth, params.scale_bits, params.first_mod_bits, params.digits)
    assert params.ring_dim == 65536 and shape == (15, 29, 2)
    # the table's nearest context at 2^16: depth 3, as `einfhe calibrate` derives it (default digits)
    calibrated = Parameters.derive(3, 32768, small_first_modulus=True)
    base = key_switching_shape(3, calibrated.scale_bits, calibrated.first_mod_bits, calibrated.digits)
    assert base[:2] == (2, 4)
    row = model.prices["65536"]["3"]["0"]
    for op in PRICED_OPS:
        priced = model.price(op, 65536, params.total_depth, 0, shape)
        if op in SWITCHING:
            assert priced == pytest.approx(row[op] * _work(*shape) / _work(*base), rel=1e-12)
        else:
            assert priced == pytest.approx(model.price(op, 65536, params.total_depth, 0), rel=1e-12)
            assert priced == pytest.approx(row[op] * (params.total_depth + 1) / 4, rel=1e-12)


def test_a_calibrated_context_is_priced_as_calibrated():
    model = load_cost_model()
    for ring, depth in ((8192, 2), (16384, 3), (32768, 1)):
        params = Parameters.derive(depth, ring // 2, small_first_modulus=True)
        assert params.ring_dim == ring
        for level in range(depth + 1):
            for op in PRICED_OPS:
                with_shape = model.price(op, ring, depth, level, params.key_switching_towers)
                assert with_shape == pytest.approx(model.price(op, ring, depth, level), rel=1e-12)


def test_estimates_scale_key_switches_on_a_given_set_only():
    model, params = load_cost_model(), Parameters.derive(9, 4096, bootstrap=True)
    plan = einfhe.compile("ij,j->i", np.ones((64, 64)), einfhe.cipher((64,)), slots=4096, strategy="iteration-space")
    levels = plan.levels()

    def total(op, ring, depth, shape=None):
        return sum(model.price(s.op, ring, depth, levels[s.src if s.op == "rescale" else s.out], shape)
                   for s in plan.steps if s.op == op)

    bare = estimate_plan(plan, model=model)
    given = estimate_plan(plan, params, model)
    assert bare.seconds_by_op["rotate"] == pytest.approx(total("rotate", bare.ring_dim, bare.depth))
    assert given.seconds_by_op["rotate"] == pytest.approx(total("rotate", 65536, 9, params.key_switching_towers))
    # the rotations run at level 1 of 9: 9 towers span 5 of the 15 two-tower digits, 7 x 11 tower NTTs against
    # the calibrated context's 4 x 6 at its 4 towers, where the towers alone made it 9 / 4
    assert {levels[s.out] for s in plan.steps if s.op == "rotate"} == {1}
    assert given.seconds_by_op["rotate"] == pytest.approx(total("rotate", 65536, 9) * (7 * 11 / 24) / (9 / 4))
    for op in set(given.seconds_by_op) - SWITCHING:
        assert given.seconds_by_op[op] == pytest.approx(total(op, 65536, 9))


def test_the_level_planner_prices_key_switches_at_the_bootstrapped_set():
    model, max_depth, slots = load_cost_model(), 9, 4096
    params = Parameters.derive(max_depth, slots, bootstrap=True)
    total = max_depth + BOOTSTRAP_CHAIN_LEVELS
    assert params.total_depth == total
    layer = (LayerLevels(0, "L0", 1, 1, False, (("rotate", 0), ("mul_plain", 0), ("rescale", 0))),)
    planned = plan_levels(layer, max_depth, slots, ring_dim=65536, cost_model=model)
    expected = (model.price("rotate", 65536, total, 0, params.key_switching_towers)
                + model.price("mul_plain", 65536, total, 0) + model.price("rescale", 65536, total, 0))
    assert planned.compute_cost == pytest.approx(expected, rel=1e-12)
    assert model.price("rotate", 65536, total, 0, params.key_switching_towers) > 2.5 * model.price(
        "rotate", 65536, total, 0)
    # on a ring the bootstrapped set is not on, the calibrated prices as before
    other = plan_levels(layer, max_depth, slots, ring_dim=32768, cost_model=model)
    assert other.compute_cost == pytest.approx(sum(model.price(op, 32768, total, 0) for op, _ in layer[0].ops))
