"""Choosing an einsum's plan among candidates, within a key and upload budget.

A candidate is a contraction path (opt_einsum's, or the plain operands first) with the cipher operands either
packed by the client in whatever layout the plan asks for, or encrypted in their natural layouts (the smallest
upload; the server moves them). Each is built under a cost cap: the builder prices every step it emits at its
floor price (`einfhe.compiler.pricing`) and gives up once that lower bound passes the cost of the cheapest plan
already known to fit (branch and bound), so a hopeless candidate costs a fraction of its full build. While none
fits yet, a candidate whose floor passes a few times the cheapest plan's cost is set aside rather than built; it
is built after all when the search ends with nothing that fits, or with a fitting plan dearer than where it was set
aside (a plan over the budgets bounds nothing: it is not a plan that can be chosen). A plan whose
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

__all__ = ["choose_plan", "AUTO_BASIS", "DEFER_FACTOR"]

AUTO_BASIS = "auto"
# while no candidate fits yet, one whose floor passes this many times the cheapest plan's cost is set aside until
# the search knows whether anything cheaper fits (most often something does, and its build time is saved)
DEFER_FACTOR = 4.0

Build = Callable[[object, bool, float], "Plan | None"]


class _Search:
    """The candidates built so far: every footprint, the cheapest that fits, the cheapest overall, and the
    candidates set aside with the cap they passed."""

    def __init__(self, build: Build, budget: Budget, bases: tuple, model) -> None:
        self.build, self.budget, self.bases, self.model = build, budget, bases, model
        self.footprints: list[Footprint] = []
        self.best: tuple[Footprint, Plan] | None = None
        self.cheapest: Footprint | None = None
        self.deferred: list[tuple[object, bool, float]] = []
        self.built = self.pruned = 0
        self.error: PlanError | None = None

    def bound(self) -> float:
        """The cost a fitting plan has to beat: the cheapest fitting plan's (infinite while none fits)."""
        return self.best[0].seconds if self.best is not None else float("inf")

    def attempt(self, path, natural: bool, cap: float, defer: bool) -> None:
        """Build one candidate under `cap` and keep its footprints in each key basis down to the first that fits;
        one that passes `cap` is dropped, or set aside if `defer` (the cap was not a fitting plan's cost)."""
        try:
            plan = self.build(path, natural, cap)
        except CostCapExceeded:
            if defer:
                self.deferred.append((path, natural, cap))
            else:
                self.pruned += 1
            return
        except PlanError as exc:  # e.g. more ciphertexts than max_cts along this path
            self.error = exc
            return
        if plan is None:
            return
        self.built += 1
        for name in self.bases:
            variant = with_rotation_basis(plan, name)
            label = f"{path if isinstance(path, str) else 'custom'} path, " \
                    f"{'natural' if natural else 'client'} layouts, {name} keys"
            footprint = Footprint.of(variant, label, self.model)
            self.footprints.append(footprint)
            if self.cheapest is None or footprint.seconds < self.cheapest.seconds:
                self.cheapest = footprint
            if footprint.fits(self.budget):
                if self.best is None or footprint.seconds < self.best[0].seconds:
                    self.best = (footprint, variant)
                return
            if footprint.key_bytes <= self.budget.key_bytes:  # over on uploads only: another key basis won't help
                return

    def try_path(self, path, natural: bool) -> None:
        """One candidate, bounded by the cheapest fitting plan, or set aside past `DEFER_FACTOR` times the
        cheapest plan while none fits."""
        if self.best is None and self.cheapest is not None:
            self.attempt(path, natural, DEFER_FACTOR * self.cheapest.seconds, defer=True)
        else:
            self.attempt(path, natural, self.bound(), defer=False)

    def revisit(self) -> None:
        """Build the candidates set aside whose cap is below the cost a fitting plan has to beat."""
        deferred, self.deferred = self.deferred, []
        for path, natural, cap in deferred:
            if cap < self.bound():
                self.attempt(path, natural, self.bound(), defer=False)
            else:
                self.pruned += 1


def choose_plan(build: Build, paths: list, budget: Budget, basis: str, model, spec: str, natural_too: bool) -> Plan:
    """The cheapest plan within `budget` among `build(path, natural, cap)` for each path (client layouts, then,
    if `natural_too` and none fits the uploads, natural ones), each in `basis` (`auto`: its own rotation keys,
    or the first power basis whose keys fit where those pass the key budget)."""
    search = _Search(build, budget, BASES if basis == AUTO_BASIS else (basis,), model)
    for natural in (False, True):
        over_uploads = any(f.upload_bytes > budget.upload_bytes for f in search.footprints)
        if natural and (search.best is not None or not natural_too or not over_uploads):
            break
        for path in paths:
            search.try_path(path, natural)
    search.revisit()
    if not search.footprints:
        raise search.error or PlanError("no candidate plan could be built", spec=spec)
    if search.best is None:
        raise over_budget_error(search.footprints, budget, spec)
    footprint, plan = search.best
    return replace(plan, choice=PlanChoice(budget, footprint, search.cheapest, search.built, search.pruned))
