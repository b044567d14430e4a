"""Run a plan on a backend: evaluate the plain program, pack plaintexts, execute the SIMD steps."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from .backends.base import Backend
from .errors import EinsumError, PlanError
from .layout import Layout
from .parallel import default_workers, run_steps
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


def _apply(backend: Backend, ciphers: dict[int, list], step, args: tuple):
    """One step on the backend: `args` is (the step's input values in `step.args` order, its plaintext)."""
    values, plain = args
    if isinstance(step, Load):
        return ciphers[step.operand][step.ct]
    if isinstance(step, MulPlain):
        return backend.mul_plain(values[0], plain)
    if isinstance(step, AddPlain):
        return backend.add_plain(values[0], plain)
    if isinstance(step, Mul):
        return backend.mul(*values)
    if isinstance(step, Add):
        return backend.add(*values)
    if isinstance(step, Sub):
        return backend.sub(*values)
    if isinstance(step, Rotate):
        return backend.rotate(values[0], step.offset)
    if isinstance(step, LevelReduce):
        return backend.level_reduce(values[0])
    if isinstance(step, RotatePrecompute):
        return backend.precompute_rotations(values[0])
    if isinstance(step, HoistedRotate):
        return backend.rotate_hoisted(values[0], values[1], step.offset)
    if isinstance(step, Rescale):
        return backend.rescale(values[0])
    if isinstance(step, Bootstrap):
        return backend.bootstrap(values[0])
    if isinstance(step, Chebyshev):
        return backend.chebyshev(values[0], step.coeffs, step.lo, step.hi)
    raise PlanError(f"unknown step {step!r}")  # pragma: no cover - Plan.from_json admits only the types above


def execute(plan: Plan, backend: Backend, ciphers: dict[int, list], plains: dict[int, np.ndarray],
            stats: RunStats | None = None, workers: int | None = None) -> list:
    """Run `plan` with cipher operands (lists of backend ciphertexts) and plain operands (numpy arrays), its
    independent steps on `workers` threads (None: `einfhe.parallel.default_workers`; 1: one step at a time,
    in plan order). With several workers `stats.seconds` sums each op's own time, so it can exceed the wall."""
    if backend.slots != plan.slots:
        raise PlanError(f"the plan uses {plan.slots} slots but the backend has {backend.slots}", spec=plan.spec)
    for op in plan.cipher_inputs:
        got = len(ciphers.get(op.operand, ()))
        if got != op.layout.num_cts:
            raise PlanError(
                f"cipher operand {op.operand} has {got} ciphertext(s), the plan expects {op.layout.num_cts}",
                spec=plan.spec,
            )
    workers = default_workers(plan) if workers is None else int(workers)
    if workers < 1:
        raise PlanError(f"workers must be at least 1, got {workers}")
    stats = stats if stats is not None else RunStats()
    plain_values = evaluate_plain_program(plan, plains)
    packed_cache: dict[tuple[str, Layout], np.ndarray] = {}

    def plaintext(step) -> np.ndarray | None:
        ref = getattr(step, "plain", None)
        if ref is None:
            return None
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

    def apply(step, args):
        return _apply(backend, ciphers, step, args)

    live = run_steps(plan.steps, apply, plaintext, workers, set(plan.outputs), stats)
    return [live[v] for v in plan.outputs]
