"""Rotation-key bases: a plan's own rotation set (one key per offset), or powers of a radix 2, 4 or 16 (each
rotation by r decomposed into r's digits in that radix, digit d at place p giving d rotations by radix^p), trading
key bytes for key switches: log_radix(slots) keys at most, (radix - 1) rotations per digit at worst.

    plan2 = einfhe.plan.keybasis.with_rotation_basis(plan, "pow2")
    for row in einfhe.plan.keybasis.basis_tradeoff(plan): print(row)
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import PlanError
from .steps import HoistedRotate, Rotate

if TYPE_CHECKING:  # a plan's methods use this module: no import of it at run time
    from .plan import Plan

__all__ = ["BASES", "with_rotation_basis", "basis_tradeoff"]

BASES = ("plan", "pow2", "pow4", "pow16")
_RADIX = {"pow2": 2, "pow4": 4, "pow16": 16}


def _powers(offset: int, radix: int) -> list[int]:
    """Powers of `radix` summing to `offset` (each power repeated as often as its digit), largest first."""
    parts, power = [], 1
    while offset:
        offset, digit = divmod(offset, radix)
        parts = [power] * digit + parts
        power *= radix
    return parts


def with_rotation_basis(plan: Plan, basis: str) -> Plan:
    """The same computation with every rotation expressed in `basis` (`plan`: unchanged; `powR`: powers of R)."""
    if basis not in BASES:
        raise PlanError(f"unknown rotation basis {basis!r}; valid bases: {', '.join(BASES)}")
    if basis == "plan":
        return plan
    ids: dict[int, int] = {}
    steps = []

    def emit(step) -> int:
        steps.append(step)
        return step.out

    for step in plan.steps:
        fields = {name: ids[getattr(step, name)] for name in step.inputs}
        if isinstance(step, (Rotate, HoistedRotate)):
            parts = _powers(step.offset % plan.slots, _RADIX[basis]) or [0]
            value = fields["src"]
            for position, power in enumerate(parts):
                if isinstance(step, HoistedRotate) and position == 0:
                    value = emit(HoistedRotate(len(steps), value, fields["digits"], power))
                else:
                    value = emit(Rotate(len(steps), value, power))
            ids[step.out] = value
        else:
            ids[step.out] = emit(replace(step, out=len(steps), **fields))
    return replace(plan, steps=tuple(steps), outputs=tuple(ids[v] for v in plan.outputs),
                   strategy=f"{plan.strategy}, {basis} keys")


def basis_tradeoff(plan: Plan, params=None) -> list[dict]:
    """For each basis: rotation keys, key bytes, rotations (key switches) and estimated seconds."""
    rows = []
    for basis in BASES:
        variant = with_rotation_basis(plan, basis)
        est = variant.estimate(params)
        counts = variant.op_counts()
        rows.append({"basis": basis, "keys": est.keys, "key_bytes": est.key_bytes,
                     "rotations": counts["rotate"] + counts["rotate_hoisted"], "estimated_seconds": est.seconds})
    return rows
