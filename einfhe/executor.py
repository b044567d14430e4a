"""Run a plan on a backend: evaluate the plain program, pack plaintexts, execute the SIMD steps."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from .backends.base import Backend
from .errors import EinsumError, PlanError
from .layout import Layout
from .plan import (
    Add, AddPlain, Bootstrap, Chebyshev, Diagonals, HoistedRotate, LevelReduce, Load, Mask, Mul, MulPlain, PlainSlice, Plan, Rescale, Rotate,
    RotatePrecompute, Sub,
)

__all__ = ["RunStats", "diagonals", "evaluate_plain_program", "execute"]


@dataclass
class RunStats:
    """What one run did: op counts and seconds spent per op kind."""

    counts: Counter = field(default_factory=Counter)
    seconds: dict = field(default_factory=lambda: defaultdict(float))

    @property
    def total_seconds(self) -> float:
        """Seconds spent in backend ops."""
        return float(sum(self.seconds.values()))


def evaluate_plain_program(plan: Plan, plains: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate the plan's plain program (diagonals, identities, plain-only contractions) in numpy."""
    values: dict[str, np.ndarray] = {}
    for op in plan.operands:
        if not hasattr(op, "layout"):
            array = np.asarray(plains[op.operand], dtype=np.float64)
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


def _mask_vector(mask: Mask) -> np.ndarray:
    vector = np.zeros(mask.slots)
    for start, stop in mask.ranges:
        vector[start:stop] = 1.0
    return vector


def execute(plan: Plan, backend: Backend, ciphers: dict[int, list], plains: dict[int, np.ndarray],
            stats: RunStats | None = None) -> list:
    """Run `plan` with cipher operands (lists of backend ciphertexts) and plain operands (numpy arrays)."""
    if backend.slots != plan.slots:
        raise PlanError(f"the plan uses {plan.slots} slots but the backend has {backend.slots}", spec=plan.spec)
    for op in plan.cipher_inputs:
        got = len(ciphers.get(op.operand, ()))
        if got != op.layout.num_cts:
            raise PlanError(
                f"cipher operand {op.operand} has {got} ciphertext(s), the plan expects {op.layout.num_cts}",
                spec=plan.spec,
            )
    stats = stats if stats is not None else RunStats()
    plain_values = evaluate_plain_program(plan, plains)
    packed_cache: dict[tuple[str, Layout], np.ndarray] = {}
    last_use: dict[int, int] = {}
    for position, step in enumerate(plan.steps):
        for arg in step.args:
            last_use[arg] = position
    for out in plan.outputs:
        last_use[out] = len(plan.steps)

    def plaintext(ref) -> np.ndarray:
        if isinstance(ref, Mask):
            return _mask_vector(ref)
        if isinstance(ref, PlainSlice):
            key = (ref.name, ref.layout, ref.index)
            if key not in packed_cache:
                packed_cache[key] = ref.layout.pack(plain_values[ref.name][ref.index])[0]
            return packed_cache[key]
        key = (ref.name, ref.layout)
        if key not in packed_cache:
            packed_cache[key] = ref.layout.pack(plain_values[ref.name])
        return packed_cache[key][ref.ct]

    live: dict[int, object] = {}
    for position, step in enumerate(plan.steps):
        start = time.perf_counter()
        if isinstance(step, Load):
            result = ciphers[step.operand][step.ct]
        elif isinstance(step, MulPlain):
            result = backend.mul_plain(live[step.src], plaintext(step.plain))
        elif isinstance(step, AddPlain):
            result = backend.add_plain(live[step.src], plaintext(step.plain))
        elif isinstance(step, Mul):
            result = backend.mul(live[step.a], live[step.b])
        elif isinstance(step, Add):
            result = backend.add(live[step.a], live[step.b])
        elif isinstance(step, Sub):
            result = backend.sub(live[step.a], live[step.b])
        elif isinstance(step, Rotate):
            result = backend.rotate(live[step.src], step.offset)
        elif isinstance(step, LevelReduce):
            result = backend.level_reduce(live[step.src])
        elif isinstance(step, RotatePrecompute):
            result = backend.precompute_rotations(live[step.src])
        elif isinstance(step, HoistedRotate):
            result = backend.rotate_hoisted(live[step.src], live[step.digits], step.offset)
        elif isinstance(step, Rescale):
            result = backend.rescale(live[step.src])
        elif isinstance(step, Bootstrap):
            result = backend.bootstrap(live[step.src])
        elif isinstance(step, Chebyshev):
            result = backend.chebyshev(live[step.src], step.coeffs, step.lo, step.hi)
        else:  # pragma: no cover - Plan.from_json admits only the types above
            raise PlanError(f"unknown step {step!r}")
        stats.seconds[step.op] += time.perf_counter() - start
        stats.counts[step.op] += 1
        live[step.out] = result
        for arg in step.args:
            if last_use.get(arg) == position:
                live.pop(arg, None)
    return [live[v] for v in plan.outputs]
