"""Choose the ring a plan runs on: compile it for each candidate slot count, price each compiled plan on the
128-bit parameters it needs (`Parameters.derive(..., small_first_modulus=True)`: N=2^13 holds depths 1-2 with
4,096 slots and results below 2^14, N=2^14 8,192 slots up to depth 10 or so), and keep the cheapest by the calibrated cost model (server steps plus the
client's encryption). The plan records every candidate (`Plan.ring_choices`), and `explain()` prints them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..errors import EinfheError, ParameterError
from ..params import Parameters
from ..plan import Plan, RingChoice
from ..plan.cost import estimate_plan

__all__ = ["AUTO_SLOTS", "CANDIDATE_SLOTS", "choose_ring"]

AUTO_SLOTS = "auto"
CANDIDATE_SLOTS = (4096, 8192)


def _price(plan: Plan, cost_model) -> tuple[Parameters, float]:
    """The 128-bit parameters `plan` needs and its estimated seconds on them (server plus client encryption)."""
    params = Parameters.derive(max(1, plan.depth), plan.slots, bootstrap=bool(plan.bootstraps),
                               small_first_modulus=True)
    estimate = estimate_plan(plan, params, cost_model)
    return params, estimate.seconds + estimate.encrypt_seconds


def choose_ring(compile_at: Callable[[int], Plan], candidates=CANDIDATE_SLOTS, cost_model=None) -> Plan:
    """The cheapest of `compile_at(slots)` over the candidate slot counts, with every candidate recorded; the
    last error when none compiles and fits a 128-bit ring."""
    priced, rejected, error = [], [], None
    for slots in candidates:
        try:
            plan = compile_at(slots)
            params, seconds = _price(plan, cost_model)
        except EinfheError as exc:  # too large for these slots, or no 128-bit ring for the depth
            error = exc
            rejected.append(RingChoice(slots, 2 * slots, 0, None, False, f"does not fit: {str(exc).splitlines()[0]}"))
            continue
        priced.append((seconds, slots, plan, params))
    if not priced:
        raise error if error is not None else ParameterError("no candidate slot count to compile for")
    priced.sort(key=lambda row: (row[0], row[1]))
    best = priced[0][0]
    choices = [RingChoice(slots, params.ring_dim, max(1, plan.depth), seconds, k == 0,
                          "chosen: cheapest" if k == 0 else f"{seconds / best:.2f}x the chosen estimate")
               for k, (seconds, slots, plan, params) in enumerate(priced)]
    return replace(priced[0][2], ring_choices=tuple(sorted(choices + rejected, key=lambda c: c.slots)))
