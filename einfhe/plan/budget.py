"""Plan budgets: the evaluation-key bytes and upload bytes a plan may need, what a plan needs (`Footprint`), and the
record of a compiler's choice under a budget (`PlanChoice`) that `plan.explain()` prints.

    plan = einfhe.compile("ij,jk->ik", einfhe.cipher((8, 8)), einfhe.cipher((8, 8)), key_budget=64 << 20)
    print(plan.explain())   # "budget: keys <= 64 MiB ..., chosen ..., cheapest unconstrained ..."

The defaults fit a 24 GiB machine serving a few requests at once at ring 2^14: 1 GiB of evaluation keys and
64 MiB of uploaded ciphertexts per request. Bytes are the cost model's measured sizes (`einfhe.plan.cost`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OverBudgetError, PlanError
from .cost import estimate_plan

__all__ = ["Budget", "Footprint", "PlanChoice", "DEFAULT_KEY_BUDGET", "DEFAULT_UPLOAD_BUDGET", "over_budget_error", "mib"]

DEFAULT_KEY_BUDGET = 1 << 30
DEFAULT_UPLOAD_BUDGET = 64 << 20


def mib(n: int) -> str:
    """Bytes as MiB with one decimal."""
    return f"{n / (1 << 20):,.1f} MiB"


def _ratio(ours: int, theirs: int) -> str:
    """`ours / theirs` as a factor."""
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


@dataclass(frozen=True)
class Budget:
    """Most evaluation-key bytes and uploaded bytes a plan may need (per request)."""

    key_bytes: int = DEFAULT_KEY_BUDGET
    upload_bytes: int = DEFAULT_UPLOAD_BUDGET

    def __post_init__(self) -> None:
        if self.key_bytes <= 0 or self.upload_bytes <= 0:
            raise PlanError("budgets must be positive byte counts", key_budget=self.key_bytes,
                            upload_budget=self.upload_bytes)

    def __str__(self) -> str:
        return f"keys <= {mib(self.key_bytes)}, uploads <= {mib(self.upload_bytes)}"


@dataclass(frozen=True)
class Footprint:
    """What one candidate plan needs: estimated seconds (server + client encryption), keys, bytes, steps."""

    label: str
    seconds: float
    keys: int
    key_bytes: int
    upload_bytes: int
    steps: int

    @classmethod
    def of(cls, plan, label: str, model=None) -> "Footprint":
        """The footprint of `plan` by the cost model, named `label` (how the candidate was made)."""
        est = estimate_plan(plan, model=model)
        return cls(label, est.seconds + est.encrypt_seconds, est.keys, est.key_bytes, est.upload_bytes,
                   len(plan.steps))

    def fits(self, budget: Budget) -> bool:
        """True when the keys and the uploads are within `budget`."""
        return self.key_bytes <= budget.key_bytes and self.upload_bytes <= budget.upload_bytes

    def __str__(self) -> str:
        return (f"{self.label}: est {1e3 * self.seconds:.1f} ms, {self.steps} steps, {self.keys} rotation keys"
                f" (evaluation keys {mib(self.key_bytes)}), upload {mib(self.upload_bytes)}")


@dataclass(frozen=True)
class PlanChoice:
    """How the compiler chose a plan under a budget: the chosen and the cheapest unconstrained candidate, and
    how many candidates it built and gave up part-way (their cost floor passed a cheaper plan's cost)."""

    budget: Budget
    chosen: Footprint
    cheapest: Footprint
    built: int
    pruned: int

    def lines(self) -> list[str]:
        """The choice as report lines (`plan.explain()` prints them)."""
        if self.cheapest == self.chosen:
            return [f"  budget: {self.budget} ({self.built} candidate(s) built, {self.pruned} pruned by cost)",
                    f"    chosen, also the cheapest unconstrained: {self.chosen}"]
        return [f"  budget: {self.budget} ({self.built} candidate(s) built, {self.pruned} pruned by cost)",
                f"    chosen                 {self.chosen}",
                f"    cheapest unconstrained {self.cheapest}",
                f"    traded: {self.chosen.seconds / self.cheapest.seconds:.2f}x the time for "
                f"{_ratio(self.chosen.key_bytes, self.cheapest.key_bytes)} the key bytes and "
                f"{_ratio(self.chosen.upload_bytes, self.cheapest.upload_bytes)} the upload"]


def over_budget_error(footprints: list[Footprint], budget: Budget, spec: str) -> OverBudgetError:
    """The error for an einsum none of whose candidates fits `budget`: what the leanest needs, what to raise."""
    keys = min(footprints, key=lambda f: f.key_bytes)
    upload = min(footprints, key=lambda f: f.upload_bytes)
    wants, needs = [], {}
    if keys.key_bytes > budget.key_bytes:
        needs["key_budget"] = keys.key_bytes
        wants.append(f"key_budget={keys.key_bytes} (the fewest keys of the plans tried: {keys.keys} rotation keys, "
                     f"evaluation keys {mib(keys.key_bytes)}; the budget is {mib(budget.key_bytes)})")
    if upload.upload_bytes > budget.upload_bytes:
        needs["upload_budget"] = upload.upload_bytes
        wants.append(f"upload_budget={upload.upload_bytes} (the smallest upload of the plans tried is "
                     f"{mib(upload.upload_bytes)}; the budget is {mib(budget.upload_bytes)})")
    if not wants:
        wants.append("key_budget and upload_budget together (no single plan fits both: "
                     + "; ".join(str(f) for f in footprints) + ")")
    return OverBudgetError("no plan of this einsum fits the budget: raise " + " and ".join(wants)
                           + " in compile(...), or split the tensors", needs, spec=spec)
