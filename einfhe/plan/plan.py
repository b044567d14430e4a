"""The plan: straight-line SSA code over ciphertext values, with its analysis passes and JSON.

Each value is one ciphertext; a step (`einfhe.plan.steps`) names its op, its inputs and its output value. Plain
operands are described (which user operand, packed in which layout, which ciphertext of it) rather than stored,
so a plan is small and the server packs its own plaintexts at run time. Passes (all pure functions of the plan):
`depth` (multiplicative levels consumed), `rotations` (the exact set of rotation offsets: keys are generated for
these alone), `op_counts`; `str(plan)` prints the IR listing and `explain()` the cost report.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Union

from ..errors import PlanError
from ..layout import Layout
from . import report
from .budget import PlanChoice
from .choices import RingChoice
from .codec import plan_fields_from_dict, plan_to_dict
from .cost import estimate_plan
from .operands import CipherInput, PlainInput, PlainOp
from .steps import OPS, ROTATION_OPS, Step, value_levels

__all__ = ["Plan"]


# -- the plan ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """A compiled einsum: operands, plain precomputation, SIMD steps and the output's layout."""

    spec: str
    slots: int
    operands: tuple[Union[CipherInput, PlainInput], ...]
    plain_program: tuple[PlainOp, ...]
    steps: tuple[Step, ...]
    outputs: tuple[int, ...]
    output_layout: Layout
    strategy: str = "iteration-space"
    choice: PlanChoice | None = field(default=None, compare=False, repr=False)  # what the compiler traded
    ring_choices: tuple[RingChoice, ...] = field(default=(), compare=False)
    _levels: dict = field(default=None, init=False, repr=False, compare=False)

    # -- analysis passes ------------------------------------------------------------------------------
    @property
    def cipher_inputs(self) -> tuple[CipherInput, ...]:
        """The cipher operands, in operand order."""
        return tuple(op for op in self.operands if isinstance(op, CipherInput))

    def input_layout(self, operand: int) -> Layout:
        """Layout in which cipher operand `operand` must be encrypted."""
        for op in self.cipher_inputs:
            if op.operand == operand:
                return op.layout
        raise PlanError(f"operand {operand} is not a cipher operand of this plan", spec=self.spec)

    def levels(self) -> dict[int, int]:
        """Multiplicative level of every value (inputs at level 0; a rescale adds one)."""
        if self._levels is None:
            object.__setattr__(self, "_levels", value_levels(self.steps))
        return self._levels

    @property
    def depth(self) -> int:
        """Multiplicative depth: the largest level any value reaches."""
        return max(self.levels().values(), default=0)

    @property
    def rotations(self) -> tuple[int, ...]:
        """The exact, sorted set of rotation offsets the plan uses (normalized to 0 < r < slots)."""
        return tuple(sorted({s.offset % self.slots for s in self.steps if s.op in ROTATION_OPS}))

    def op_counts(self) -> dict[str, int]:
        """Number of steps of each op kind."""
        counts = Counter(step.op for step in self.steps)
        return {op: counts.get(op, 0) for op in OPS}

    @property
    def bootstraps(self) -> int:
        """Number of bootstrapping steps (levels are counted from the last one)."""
        return self.op_counts()["bootstrap"]

    @property
    def keyswitches(self) -> int:
        """Rotations (hoisted or not) and ciphertext products (each needs a key switch), for error estimates."""
        counts = self.op_counts()
        return counts["rotate"] + counts["rotate_hoisted"] + counts["mul"]

    @property
    def chosen_ring(self) -> RingChoice | None:
        """The ring `compile(..., slots="auto")` chose for this plan (None when the slot count was given)."""
        return next((choice for choice in self.ring_choices if choice.chosen), None)

    @property
    def cts_in(self) -> int:
        """Ciphertexts the client uploads."""
        return sum(op.layout.num_cts for op in self.cipher_inputs)

    @property
    def cts_out(self) -> int:
        """Ciphertexts the server returns."""
        return len(self.outputs)

    def estimate(self, params=None, model=None):
        """The cost model's `Estimate` of this plan (seconds per op kind, bytes uploaded, key bytes)."""
        return estimate_plan(self, params=params, model=model)

    def estimated_seconds(self, params=None, model=None) -> float:
        """Estimated server seconds to run this plan, from the calibrated op prices."""
        return self.estimate(params, model).seconds

    def explain(self, stats=None, params=None) -> str:
        """A report of the plan: spec, layouts, depth, rotation set, op counts, estimated (and, given a run's
        `RunStats`, measured) seconds per op kind, and bytes uploaded."""
        return report.explain(self, stats=stats, params=params)

    def __str__(self) -> str:
        return report.listing(self)

    # -- JSON -----------------------------------------------------------------------------------------
    def to_json(self) -> str:
        """Serialize the plan to a JSON string."""
        return json.dumps(plan_to_dict(self))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """Rebuild a plan from `to_json`'s output, validating its structure."""
        try:
            return cls(**plan_fields_from_dict(json.loads(text)))
        except PlanError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"malformed plan JSON: {exc}") from exc
