"""compile(..., slots="auto"): the cheapest 128-bit ring by the cost model, every candidate shown by explain()."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler.rings import CANDIDATE_SLOTS
from einfhe.params import Parameters, error_bound
from einfhe.plan.cost import estimate_plan

RNG = np.random.default_rng(0)


def _priced(spec, operands, slots):
    """Compile at `slots` and price the plan on its small-first-modulus 128-bit parameters, independently."""
    plan = einfhe.compile(spec, *operands, slots=slots)
    params = Parameters.derive(max(1, plan.depth), slots, small_first_modulus=True)
    estimate = estimate_plan(plan, params)
    return estimate.seconds + estimate.encrypt_seconds, params.ring_dim


@pytest.mark.parametrize("spec, operands", [
    ("ij,j->i", (RNG.uniform(-1, 1, (64, 64)), einfhe.cipher((64,)))),
    ("ij,j->i", (RNG.uniform(-1, 1, (1024, 1024)), einfhe.cipher((1024,)))),
    ("ij,jk->ik", (einfhe.cipher((16, 16)), einfhe.cipher((16, 16)))),
])
def test_auto_keeps_the_cheapest_candidate_and_records_all(spec, operands):
    plan = einfhe.compile(spec, *operands, slots="auto")
    prices = {slots: _priced(spec, operands, slots) for slots in CANDIDATE_SLOTS}
    cheapest = min(prices, key=lambda s: prices[s][0])
    assert plan.slots == cheapest and plan.chosen_ring.ring_dim == prices[cheapest][1]
    assert {c.slots: (pytest.approx(c.seconds), c.ring_dim) for c in plan.ring_choices} == {
        s: (pytest.approx(p), r) for s, (p, r) in prices.items()}
    report = plan.explain()
    assert "rings considered" in report and all(f"N={ring}" in report for _, ring in prices.values())
    assert einfhe.Plan.from_json(plan.to_json()).ring_choices == plan.ring_choices


def test_a_shallow_small_problem_takes_the_small_ring_and_a_deep_one_the_large():
    """N=2^13 holds depths 1-2 at 128-bit: a product of five encrypted vectors (depth 3) needs N=2^14."""
    small = einfhe.compile("ij,j->i", np.ones((64, 64)), einfhe.cipher((64,)), slots="auto")
    deep = einfhe.compile("i,i,i,i,i->i", *[einfhe.cipher((64,))] * 5, slots="auto")
    assert small.chosen_ring.ring_dim == 8192
    assert deep.depth == 3 and deep.chosen_ring.ring_dim == 16384


def test_an_encrypted_operand_fixes_the_slots_and_a_bad_value_is_refused():
    plan = einfhe.compile("ij,j->i", np.ones((8, 8)), einfhe.cipher((8,)), slots=8192)
    ctx = einfhe.Context.for_plan(plan, backend="simulator")
    x = einfhe.encrypt(ctx, np.ones(8), plan.input_layout(1))
    again = einfhe.compile("ij,j->i", np.ones((8, 8)), x, slots="auto")
    assert again.slots == 8192 and [c.slots for c in again.ring_choices] == [8192]
    with pytest.raises(einfhe.EinsumError, match="power of two or 'auto'"):
        einfhe.compile("ij,j->i", np.ones((8, 8)), einfhe.cipher((8,)), slots="many")


@pytest.mark.fhe
def test_the_small_ring_runs_at_128_bit_within_the_error_bound():
    """A 64x64 matvec on the ring auto chose (N=2^13, 128-bit), decrypted against numpy."""
    W, x = RNG.uniform(-1, 1, (64, 64)), RNG.uniform(-1, 1, 64)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((64,)), slots="auto")
    ctx = einfhe.Context.for_plan(plan)
    assert ctx.params.ring_dim == 8192 and ctx.params.secure
    got = einfhe.decrypt(ctx, einfhe.run(ctx, plan, W, einfhe.encrypt(ctx, x, plan.input_layout(1))))
    bound = error_bound(ctx.params, 1.0, terms=64, depth=plan.depth, keyswitches=plan.keyswitches)
    assert np.abs(got - W @ x).max() < bound
