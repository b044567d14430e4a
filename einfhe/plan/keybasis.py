"""Rotation-key bases: a plan's own rotation set (one key per offset); a baby-step giant-step basis (each offset r
as a giant step r - r mod n1 and a baby step r mod n1, n1 a power of two chosen for the plan to need the fewest
keys: two rotations at most, about 2 sqrt(offsets' range) keys at most, Halevi-Shoup's BSGS split applied to the
keys); or powers of a radix 2, 4 or 16 (each rotation by r decomposed into r's digits in that radix, digit d at
place p giving d rotations by radix^p), trading key bytes for key switches: log_radix(slots) keys at most,
(radix - 1) rotations per digit at worst.

    plan2 = einfhe.plan.keybasis.with_rotation_basis(plan, "bsgs")
    for row in einfhe.plan.keybasis.basis_tradeoff(plan): print(row)
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import PlanError
from .steps import HoistedRotate, Rotate

if TYPE_CHECKING:  # a plan's methods use this module: no import of it at run time
    from .plan import Plan

__all__ = ["BASES", "with_rotation_basis", "basis_tradeoff", "baby_step_width"]

BASES = ("plan", "bsgs", "pow2", "pow4", "pow16")
_RADIX = {"pow2": 2, "pow4": 4, "pow16": 16}


def _powers(offset: int, radix: int) -> list[int]:
    """Powers of `radix` summing to `offset` (each power repeated as often as its digit), largest first."""
    parts, power = [], 1
    while offset:
        offset, digit = divmod(offset, radix)
        parts = [power] * digit + parts
        power *= radix
    return parts


def baby_step_width(offsets, slots: int) -> int:
    """The power of two n1 for which splitting `offsets` into giant (multiples of n1) and baby (below n1) steps
    needs the fewest keys (ties: the larger n1, fewer offsets split in two)."""
    def keys(n1: int) -> int:
        return len({r % n1 for r in offsets} - {0}) + len({r - r % n1 for r in offsets} - {0})

    return min((1 << p for p in range(slots.bit_length())), key=lambda n1: (keys(n1), -n1))


def _bsgs_parts(offset: int, baby: int) -> list[int]:
    """The giant and baby steps of `offset` (each left out when zero)."""
    return [part for part in (offset - offset % baby, offset % baby) if part]


def with_rotation_basis(plan: Plan, basis: str) -> Plan:
    """The same computation with every rotation expressed in `basis` (`plan`: unchanged; `bsgs`: a giant and a
    baby step; `powR`: powers of R)."""
    if basis not in BASES:
        raise PlanError(f"unknown rotation basis {basis!r}; valid bases: {', '.join(BASES)}")
    if basis == "plan":
        return plan
    if basis == "bsgs":
        baby = baby_step_width(plan.rotations, plan.slots)
        parts_of = lambda offset: _bsgs_parts(offset, baby)  # noqa: E731
    else:
        parts_of = lambda offset: _powers(offset, _RADIX[basis])  # noqa: E731
    ids: dict[int, int] = {}
    steps = []

    def emit(step) -> int:
        steps.append(step)
        return step.out

    for step in plan.steps:
        fields = {name: ids[getattr(step, name)] for name in step.inputs}
        if isinstance(step, (Rotate, HoistedRotate)):
            parts = parts_of(step.offset % plan.slots) or [0]
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
