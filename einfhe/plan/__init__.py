"""The plan IR and its passes: the steps (`steps`), operands and plain program (`operands`, `plain_program`), the
plan itself with its JSON (`plan`, `codec`), the cost model (`cost`, key switches at a set's key shape in
`keyswitch`), rotation-key bases (`keybasis`), budgets (`budget`), the split into independent parts
(`partition`) and the printed forms (`report`)."""

from __future__ import annotations

from .budget import DEFAULT_KEY_BUDGET, DEFAULT_UPLOAD_BUDGET, Budget, Footprint, PlanChoice
from .operands import CipherInput, Diagonals, PlainExpr, PlainInput, PlainOp
from .plain_program import diagonals, evaluate_plain_program
from .choices import RingChoice
from .plan import Plan
from .steps import (
    OPS, ROTATION_OPS, STEP_TYPES, Add, AddPlain, Bootstrap, Chebyshev, HoistedRotate, LevelReduce, Load, Mask, Mul,
    MulPlain, PlainSlice, PlainTensor, Plaintext, Rescale, Rotate, RotatePrecompute, Step, Sub, chebyshev_levels,
    step_level, value_levels,
)

__all__ = [
    "Budget", "DEFAULT_KEY_BUDGET", "DEFAULT_UPLOAD_BUDGET", "Footprint", "PlanChoice",
    "Add", "AddPlain", "Bootstrap", "Chebyshev", "CipherInput", "Diagonals", "HoistedRotate", "LevelReduce", "Load",
    "Mask", "Mul", "MulPlain", "OPS", "PlainExpr", "PlainInput", "PlainOp", "PlainSlice", "PlainTensor", "Plaintext",
    "Plan", "ROTATION_OPS", "Rescale", "RingChoice", "Rotate", "RotatePrecompute", "STEP_TYPES", "Step", "Sub",
    "chebyshev_levels", "diagonals", "evaluate_plain_program", "step_level", "value_levels",
]
