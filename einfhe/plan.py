"""The plan IR: typed SIMD steps over ciphertext values, with analysis passes and JSON.

A plan is straight-line SSA code. Each value is one ciphertext; a step names its op, its inputs and its
output value. Plain operands are described (which user operand, packed in which layout, which ciphertext
of it) rather than stored, so a plan is small and the server packs its own plaintexts at run time.

The steps themselves live in `einfhe.steps` (re-exported here). Passes (all pure functions of the plan): `depth` (multiplicative levels consumed), `rotations` (the exact
set of rotation offsets: keys are generated for these alone), `op_counts`, and `explain()` to print them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Union

from .errors import PlanError
from .layout import Layout
from .steps import (  # noqa: F401  -- re-exported: the steps are part of the plan IR
    OPS, ROTATION_OPS, STEP_TYPES, Add, AddPlain, Bootstrap, Chebyshev, HoistedRotate, LevelReduce, Load, Mask, Mul,
    MulPlain, PlainSlice, PlainTensor, Plaintext, Rescale, Rotate, RotatePrecompute, Step, Sub, chebyshev_levels,
    value_levels,
)

__all__ = [
    "Load", "MulPlain", "AddPlain", "Mul", "Add", "Sub", "Rotate", "Rescale", "Bootstrap", "Chebyshev", "chebyshev_levels", "RotatePrecompute", "HoistedRotate", "LevelReduce", "value_levels",
    "PlainTensor", "PlainSlice", "Mask", "PlainExpr", "Diagonals", "CipherInput", "PlainInput", "Plan", "Step",
    "OPS", "ROTATION_OPS",
]

# -- operands ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CipherInput:
    """A cipher operand: the client encrypts it in `layout`."""

    operand: int
    layout: Layout


@dataclass(frozen=True)
class PlainInput:
    """A plain operand the server holds, with its shape."""

    operand: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class PlainExpr:
    """Plain value `out` = numpy.einsum(`subscripts`, *args); an arg `delta:<n>` is the n x n identity."""

    out: str
    subscripts: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Diagonals:
    """Plain value `out`: the pre-rotated extended diagonals of the matrix `src` (zero-padded to d x d) for
    baby-step giant-step with `replicas` = m slots per output row, over `span` = d*m slots (see
    `einfhe.strategies.bsgs`).

    Row g*baby + b holds, at slot s < span, W[t, (s + m*b) mod d] with t = ((s - m*g*baby) mod span) // m:
    with one replica, W[(s - g*baby) mod d, (s + b) mod d].
    """

    out: str
    src: str
    d: int
    baby: int
    giant: int
    replicas: int
    span: int


PlainOp = Union[PlainExpr, Diagonals]


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
    def cts_in(self) -> int:
        """Ciphertexts the client uploads."""
        return sum(op.layout.num_cts for op in self.cipher_inputs)

    @property
    def cts_out(self) -> int:
        """Ciphertexts the server returns."""
        return len(self.outputs)

    def estimate(self, params=None, model=None):
        """The cost model's `Estimate` of this plan (seconds per op kind, bytes uploaded, key bytes)."""
        from .cost import estimate_plan

        return estimate_plan(self, params=params, model=model)

    def estimated_seconds(self, params=None, model=None) -> float:
        """Estimated server seconds to run this plan, from the calibrated op prices."""
        return self.estimate(params, model).seconds

    def explain(self, stats=None, params=None) -> str:
        """A report of the plan: spec, layouts, depth, rotation set, op counts, estimated (and, given a run's
        `RunStats`, measured) seconds per op kind, and bytes uploaded."""
        counts = self.op_counts()
        lines = [
            f"einsum {self.spec}  strategy={self.strategy}  slots={self.slots}",
            f"  depth {self.depth}   ciphertexts in {self.cts_in}, out {self.cts_out}",
            f"  rotations ({len(self.rotations)} keys): {list(self.rotations)}",
            "  ops: " + ", ".join(f"{op} {n}" for op, n in counts.items() if op != "load" and n),
        ]
        from .cost import explain_costs

        lines += explain_costs(self, stats=stats, params=params)
        for op in self.operands:
            if isinstance(op, CipherInput):
                lines.append(f"  operand {op.operand} cipher  {op.layout}")
            else:
                lines.append(f"  operand {op.operand} plain   shape {op.shape}")
        lines.append(f"  output {self.output_layout}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explain()

    # -- JSON -----------------------------------------------------------------------------------------
    def to_json(self) -> str:
        """Serialize the plan to a JSON string."""
        from .plan_json import plan_to_dict

        return json.dumps(plan_to_dict(self))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """Rebuild a plan from `to_json`'s output, validating its structure."""
        from .plan_json import plan_from_dict

        try:
            return plan_from_dict(json.loads(text))
        except PlanError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"malformed plan JSON: {exc}") from exc
