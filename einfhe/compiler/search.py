"""Choosing an einsum's plan among candidates, within a key and upload budget.

A candidate is a contraction path (opt_einsum's, or the plain operands first) with the cipher operands either
packed by the client in whatever layout the plan asks for, or encrypted in their natural layouts (the smallest
upload; the server moves them). Each is built under a cost cap: the builder prices every step it emits at its
floor price (`einfhe.compiler.pricing`) and gives up once that lower bound passes the cost of the cheapest plan
already known to fit (branch and bound), so a hopeless candidate costs a fraction of its full build. A plan whose
own rotation keys pass the key budget is tried again with a baby-step giant-step key basis (two rotations at most), then with keys for the powers of 2,
then of 4, then of 16
(`einfhe.plan.keybasis`: fewer keys, more rotations); natural
layouts are tried only when no client-packed candidate fits and some pass the upload budget. The cheapest candidate that fits
wins; the plan records what it traded (`PlanChoice`, printed by `plan.explain()`), and when none fits the error
says what to raise.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..errors import PlanError
from ..plan import Plan
from ..plan.budget import Budget, Footprint, PlanChoice, over_budget_error
from ..plan.keybasis import BASES, with_rotation_basis
from .builder import CostCapExceeded

__all__ = ["choose_plan", "AUTO_BASIS", "PRUNE_FACTOR"]

AUTO_BASIS = "auto"
# while no candidate fits yet, one whose floor passes this many times the cheapest plan's cost is given up: a plan
# that much slower is not worth its build time (the refusal then names the budget that the others need)
PRUNE_FACTOR = 4.0

Build = Callable[[object, bool, float], "Plan | None"]


def choose_plan(build: Build, paths: list, budget: Budget, basis: str, model, spec: str, natural_too: bool) -> Plan:
    """The cheapest plan within `budget` among `build(path, natural, cap)` for each path (client layouts, then,
    if `natural_too` and none fits the uploads, natural ones), each in `basis` (`auto`: its own rotation keys,
    or the first power basis whose keys fit where those pass the key budget)."""
    bases = BASES if basis == AUTO_BASIS else (basis,)
    footprints: list[Footprint] = []
    best: tuple[Footprint, Plan] | None = None
    cheapest: Footprint | None = None
    built = pruned = 0
    error: PlanError | None = None
    for natural in (False, True):
        over_uploads = any(f.upload_bytes > budget.upload_bytes for f in footprints)
        if natural and (best is not None or not natural_too or not over_uploads):
            break
        for path in paths:
            if best is not None:
                cap = best[0].seconds
            elif cheapest is not None:
                cap = PRUNE_FACTOR * cheapest.seconds
            else:
                cap = float("inf")
            try:
                plan = build(path, natural, cap)
            except CostCapExceeded:
                pruned += 1
                continue
            except PlanError as exc:  # e.g. more ciphertexts than max_cts along this path
                error = exc
                continue
            if plan is None:
                continue
            built += 1
            for name in bases:
                variant = with_rotation_basis(plan, name)
                label = f"{path if isinstance(path, str) else 'custom'} path, " \
                        f"{'natural' if natural else 'client'} layouts, {name} keys"
                footprint = Footprint.of(variant, label, model)
                footprints.append(footprint)
                if cheapest is None or footprint.seconds < cheapest.seconds:
                    cheapest = footprint
                if footprint.fits(budget):
                    if best is None or footprint.seconds < best[0].seconds:
                        best = (footprint, variant)
                    break
                if footprint.key_bytes <= budget.key_bytes:  # over on uploads only: another key basis won't help
                    break
    if not footprints:
        raise error or PlanError("no candidate plan could be built", spec=spec)
    if best is None:
        raise over_budget_error(footprints, budget, spec)
    return replace(best[1], choice=PlanChoice(budget, best[0], cheapest, built, pruned))
