"""Choosing among candidate plans: the key and upload budgets (a plan within them, or a refusal that says what to
raise), power-of-two keys where a plan's own keys pass the key budget, natural layouts where client packing uploads
too much, and pruning by the floor price, which never loses the cheapest plan."""

import json
import re

import numpy as np
import pytest

import einfhe
from einfhe.compiler.einsum import PLAIN_FIRST, _compile
from einfhe.compiler.pricing import FloorPrices
from einfhe.compiler.search import DEFER_FACTOR
from einfhe.plan import step_level
from einfhe.plan.budget import Footprint
from einfhe.plan.keybasis import baby_step_width

UNBOUNDED = {"key_budget": 1 << 62, "upload_budget": 1 << 62}
# all cipher, the client's replication tiles the operands over many ciphertexts (114 MiB unconstrained)
REPLICATED = ("...g,...cee,...bc,...d,fd,e->...dfg", [(3, 5), (3, 4, 6, 6), (3, 6, 4), (3, 7), (7, 7), (6,)])
# all cipher, relayouts at many offsets
MANY_KEYS = ("e,de,cee,dj,c,ie,aa,jb->abdeij", [(6,), (7, 6), (4, 6, 6), (7, 7), (4,), (2, 6), (7, 7), (7, 2)])


def _simulated_error(plan, spec, shapes, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    expected = np.einsum(spec, *arrays)
    return np.abs(einfhe.simulate(plan, *arrays) - expected).max() / (1 + np.abs(expected).max())


def test_a_plan_over_the_key_budget_is_refused_with_the_budget_that_fits():
    spec, shapes = MANY_KEYS
    ops = [einfhe.cipher(s) for s in shapes]
    with pytest.raises(einfhe.OverBudgetError, match="key_budget=") as info:
        einfhe.compile(spec, *ops, key_budget=1 << 20)
    needed = int(re.search(r"key_budget=(\d+)", str(info.value)).group(1))
    assert info.value.needs == {"key_budget": needed}
    plan = einfhe.compile(spec, *ops, key_budget=needed)
    assert plan.estimate().key_bytes <= needed
    assert _simulated_error(plan, spec, shapes) < 1e-9


def test_the_key_budget_switches_to_power_keys_and_explain_shows_the_trade():
    spec, shapes = MANY_KEYS
    ops = [einfhe.cipher(s) for s in shapes]
    free = einfhe.compile(spec, *ops, **UNBOUNDED)
    budget = free.estimate().key_bytes - 1
    bounded = einfhe.compile(spec, *ops, key_budget=budget, upload_budget=1 << 62)
    assert len(bounded.rotations) < len(free.rotations)
    assert all(r & (r - 1) == 0 for r in bounded.rotations)
    assert bounded.estimate().key_bytes <= budget
    report = bounded.explain()
    assert "chosen" in report and "cheapest unconstrained" in report and re.search(r"pow\d+ keys", report)
    traded = re.search(r"traded: ([\d.]+)x the time for ([\d.]+)x the key bytes", report)
    free_estimate = free.estimate()
    assert float(traded.group(2)) == pytest.approx(bounded.estimate().key_bytes / free_estimate.key_bytes, abs=0.01)
    assert bounded.choice.cheapest.key_bytes == free_estimate.key_bytes
    assert _simulated_error(bounded, spec, shapes) < 1e-9
    again = einfhe.Plan.from_json(bounded.to_json())
    assert again.choice == bounded.choice and again.explain() == report


def test_a_damaged_plan_choice_in_json_is_refused():
    plan = einfhe.compile("ij,j->i", np.ones((4, 4)), einfhe.cipher((4,)), slots=64)
    data = json.loads(plan.to_json())
    assert data["choice"]["chosen"]["key_bytes"] == plan.estimate().key_bytes
    data["choice"]["chosen"]["stolen"] = 1
    with pytest.raises(einfhe.PlanError, match="malformed plan choice"):
        einfhe.Plan.from_json(json.dumps(data))
    del data["choice"]["chosen"]
    with pytest.raises(einfhe.PlanError, match="malformed plan JSON"):
        einfhe.Plan.from_json(json.dumps(data))


def test_the_upload_budget_moves_the_replication_to_the_server():
    spec, shapes = REPLICATED
    ops = [einfhe.cipher(s) for s in shapes]
    free = einfhe.compile(spec, *ops, **UNBOUNDED)
    assert free.estimate().upload_bytes > 64 << 20  # the default upload budget
    bounded = einfhe.compile(spec, *ops)
    assert bounded.estimate().upload_bytes <= 64 << 20
    assert bounded.cts_in < free.cts_in
    assert "natural layouts" in bounded.explain()
    assert _simulated_error(bounded, spec, shapes) < 1e-9
    with pytest.raises(einfhe.PlanError, match="upload_budget="):
        einfhe.compile(spec, *ops, upload_budget=1 << 20)


def test_a_fitting_plan_is_found_even_past_the_deferral_factor_of_a_cheaper_plan_over_budget():
    """Late rescale: the client-packed plan uploads 64.1 MiB (over the 64 MiB budget) and the natural-layout plan
    costs more than DEFER_FACTOR times it; the latter is set aside, then built once nothing else fits."""
    rng = np.random.default_rng(3)
    W, x = rng.uniform(-1, 1, (64, 64)), rng.uniform(-1, 1, (128, 64))
    plan = einfhe.compile("ij,bj->bi", W, einfhe.cipher(x.shape), slots=4096, rescale="late")
    choice = plan.choice
    assert choice.cheapest.upload_bytes > choice.budget.upload_bytes
    assert choice.chosen.seconds > DEFER_FACTOR * choice.cheapest.seconds
    assert choice.chosen.fits(choice.budget) and "natural layouts" in choice.chosen.label
    np.testing.assert_allclose(einfhe.simulate(plan, W, x), np.einsum("ij,bj->bi", W, x), atol=1e-9)


def test_budgets_must_be_positive():
    with pytest.raises(einfhe.PlanError, match="positive"):
        einfhe.compile("ij,j->i", np.ones((2, 2)), einfhe.cipher((2,)), key_budget=0)


def _floor_of(plan, floor: FloorPrices) -> float:
    """The floor price of a finished plan's steps, accumulated as the builder does while emitting."""
    levels, depth, total, encoded = {}, 0, plan.cts_in * floor.encrypt, floor.encoded_plaintexts()
    for step in plan.steps:
        level = levels[step.out] = step_level(step, levels)
        depth = max(depth, level)
        total += floor.price(step.op, depth, level, encoded.reused(step, level))
    return total


CHAINS = [
    ("ij,jk,kl,l->i", [(6, 7), (7, 5), (5, 8), (8,)], [False, False, False, True]),
    ("ij,jk,k->i", [(16, 16), (16, 16), (16,)], [False, False, True]),
    ("ab,bc,cd,d->a", [(3, 4), (4, 5), (5, 6), (6,)], [False, True, False, True]),
    REPLICATED + ([True] * 6,),
]


@pytest.mark.parametrize("spec, shapes, cipher_mask", CHAINS)
def test_the_floor_is_below_the_estimate_and_pruning_keeps_the_cheapest_plan(spec, shapes, cipher_mask):
    ops = [einfhe.cipher(s) if c else np.ones(s) for s, c in zip(shapes, cipher_mask)]
    floor = FloorPrices(8192)
    chosen = einfhe.compile(spec, *ops, **UNBOUNDED, rotation_basis="plan")
    full = [p for p in (_compile(spec, ops, 8192, 1024, "auto", None, path) for path in ("auto", PLAIN_FIRST)) if p]
    for plan in full:
        assert _floor_of(plan, floor) <= Footprint.of(plan, "").seconds
    assert Footprint.of(chosen, "").seconds <= min(Footprint.of(p, "").seconds for p in full) + 1e-12


@pytest.mark.parametrize("basis, radix", [("pow2", 2), ("pow4", 4), ("pow16", 16)])
def test_power_bases_keep_the_result_with_keys_for_powers_of_their_radix(basis, radix):
    spec, shapes = MANY_KEYS
    ops = [einfhe.cipher(s) for s in shapes]
    plan = einfhe.compile(spec, *ops, rotation_basis=basis, **UNBOUNDED)
    powers = {radix ** p for p in range(14)}
    assert set(plan.rotations) <= powers and f"{basis} keys" in plan.strategy
    assert _simulated_error(plan, spec, shapes) < 1e-9


def test_the_key_budget_walks_the_bases_down_to_the_fewest_keys():
    spec, shapes = MANY_KEYS
    ops = [einfhe.cipher(s) for s in shapes]
    pow4 = einfhe.compile(spec, *ops, rotation_basis="pow4", **UNBOUNDED)
    pow16 = einfhe.compile(spec, *ops, rotation_basis="pow16", **UNBOUNDED)
    assert len(pow16.rotations) < len(pow4.rotations)
    bounded = einfhe.compile(spec, *ops, key_budget=pow16.estimate().key_bytes, upload_budget=1 << 62)
    assert bounded.estimate().key_bytes <= pow16.estimate().key_bytes
    assert _simulated_error(bounded, spec, shapes) < 1e-9


def test_a_chain_of_encrypted_matrices_is_contracted_in_order_without_relayouts():
    """opt_einsum pairs (AB)(CD), whose two results must be moved into line (rotation keys per offset); taken in
    order, each fresh matrix is packed by the client to line up with the running product."""
    spec, shapes = "ij,jk,kl,lm->im", [(4, 4)] * 4
    ops = [einfhe.cipher(s) for s in shapes]
    plan = einfhe.compile(spec, *ops)
    paired = einfhe.compile(spec, *ops, optimize="greedy")
    assert "sequential path" in plan.explain()
    assert len(plan.rotations) < len(paired.rotations) and len(plan.steps) < len(paired.steps)
    assert Footprint.of(plan, "").seconds < Footprint.of(paired, "").seconds
    assert _simulated_error(plan, spec, shapes) < 1e-9


def test_the_bsgs_key_basis_sits_between_the_plans_keys_and_powers_of_two():
    """A giant and a baby step per offset: fewer keys than the plan's own, fewer rotations than powers of 2, at
    most two rotations where the plan had one, the same result; a key budget between the two picks it."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((16, 16)), rng.standard_normal((16, 16))
    ops = [einfhe.cipher((16, 16)), einfhe.cipher((16, 16))]
    own = einfhe.compile("ij,jk->ik", *ops, slots=512, strategy="jkls", rotation_basis="plan", **UNBOUNDED)
    bsgs = einfhe.compile("ij,jk->ik", *ops, slots=512, strategy="jkls", rotation_basis="bsgs", **UNBOUNDED)
    pow2 = einfhe.compile("ij,jk->ik", *ops, slots=512, strategy="jkls", rotation_basis="pow2", **UNBOUNDED)
    rotations = {p: p.op_counts()["rotate"] + p.op_counts()["rotate_hoisted"] for p in (own, bsgs, pow2)}
    assert len(pow2.rotations) < len(bsgs.rotations) < len(own.rotations)
    assert rotations[own] < rotations[bsgs] <= 2 * rotations[own] and rotations[bsgs] < rotations[pow2]
    baby = baby_step_width(own.rotations, 512)
    assert all(r % baby == 0 or r < baby for r in bsgs.rotations)
    np.testing.assert_allclose(einfhe.simulate(bsgs, a, b), a @ b, atol=1e-9)
    bounded = einfhe.compile("ij,jk->ik", *ops, slots=512, strategy="jkls", upload_budget=1 << 62,
                             key_budget=bsgs.estimate().key_bytes)
    assert bounded.rotations == bsgs.rotations and "bsgs keys" in bounded.strategy
