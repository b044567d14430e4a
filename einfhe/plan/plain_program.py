"""The plain program: what the server computes in numpy from its plain operands before the steps run (plain-only
einsums, identities, and the pre-rotated diagonals of baby-step giant-step)."""

from __future__ import annotations

import numpy as np

from ..errors import EinsumError, PlanError
from ..spec import real_array
from .operands import Diagonals

__all__ = ["evaluate_plain_program", "diagonals"]


def evaluate_plain_program(plan, plains: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate the plan's plain program (diagonals, identities, plain-only contractions) in numpy."""
    values: dict[str, np.ndarray] = {}
    for op in plan.operands:
        if not hasattr(op, "layout"):
            array = real_array(plains[op.operand], spec=plan.spec, operand=op.operand)
            if array.shape != op.shape:
                raise EinsumError(
                    f"plain operand {op.operand} has shape {array.shape}, the plan expects {op.shape}",
                    spec=plan.spec,
                )
            values[f"op{op.operand}"] = array
    for expr in plan.plain_program:
        if isinstance(expr, Diagonals):
            values[expr.out] = diagonals(values[expr.src], expr)
            continue
        args = []
        for name in expr.args:
            if name.startswith("delta:"):
                args.append(np.eye(int(name.split(":")[1])))
            else:
                args.append(values[name])
        values[expr.out] = np.einsum(expr.subscripts, *args)
    return values


def diagonals(matrix: np.ndarray, op: Diagonals) -> np.ndarray:
    """The baby-step giant-step plaintexts of `matrix` described by `op`, one row per (giant, baby) pair
    (Halevi and Shoup 2014, Sec. 4.1, extended to `op.replicas` slots per output row: see `Diagonals`)."""
    rows, cols = matrix.shape
    d, baby, m = op.d, op.baby, op.replicas
    if rows > d or cols > d:
        raise PlanError(f"a {rows}x{cols} matrix does not fit {d} diagonals of length {d}")
    padded = np.zeros((d, d))
    padded[:rows, :cols] = matrix
    k = np.arange(op.giant * baby)[:, None]
    s = np.arange(op.span)[None, :]
    t = ((s - m * (k // baby) * baby) % op.span) // m
    return padded[t, (s + m * (k % baby)) % d]
