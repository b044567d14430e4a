"""Run a plan on a backend: evaluate the plain program, pack plaintexts, execute the SIMD steps."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..backends.base import Backend
from ..errors import PlanError
from ..layout import Layout
from ..plan import (
    STEP_TYPES, Add, AddPlain, Bootstrap, Chebyshev, HoistedRotate, LevelReduce, Load, Mask, Mul, MulPlain, PlainSlice,
    Plan, Rescale, Rotate, RotatePrecompute, Sub, evaluate_plain_program,
)
from .scheduler import default_workers, run_steps

__all__ = ["RunStats", "execute"]


@dataclass
class RunStats:
    """What one run did: op counts and seconds spent per op kind."""

    counts: Counter = field(default_factory=Counter)
    seconds: dict = field(default_factory=lambda: defaultdict(float))

    @property
    def total_seconds(self) -> float:
        """Seconds spent in backend ops."""
        return float(sum(self.seconds.values()))


def _mask_vector(mask: Mask) -> np.ndarray:
    vector = np.zeros(mask.slots)
    for start, stop in mask.ranges:
        vector[start:stop] = 1.0
    return vector


# How each step type runs on a backend: (backend, cipher operands, step, input values, plaintext) -> value.
_RUN = {
    Load: lambda be, ciphers, step, values, plain: ciphers[step.operand][step.ct],
    MulPlain: lambda be, ciphers, step, values, plain: be.mul_plain(values[0], plain),
    AddPlain: lambda be, ciphers, step, values, plain: be.add_plain(values[0], plain),
    Mul: lambda be, ciphers, step, values, plain: be.mul(*values),
    Add: lambda be, ciphers, step, values, plain: be.add(*values),
    Sub: lambda be, ciphers, step, values, plain: be.sub(*values),
    Rotate: lambda be, ciphers, step, values, plain: be.rotate(values[0], step.offset),
    LevelReduce: lambda be, ciphers, step, values, plain: be.level_reduce(values[0]),
    RotatePrecompute: lambda be, ciphers, step, values, plain: be.precompute_rotations(values[0]),
    HoistedRotate: lambda be, ciphers, step, values, plain: be.rotate_hoisted(values[0], values[1], step.offset),
    Rescale: lambda be, ciphers, step, values, plain: be.rescale(values[0]),
    Bootstrap: lambda be, ciphers, step, values, plain: be.bootstrap(values[0]),
    Chebyshev: lambda be, ciphers, step, values, plain: be.chebyshev(values[0], step.coeffs, step.lo, step.hi),
}


def execute(plan: Plan, backend: Backend, ciphers: dict[int, list], plains: dict[int, np.ndarray],
            stats: RunStats | None = None, workers: int | None = None) -> list:
    """Run `plan` with cipher operands (lists of backend ciphertexts) and plain operands (numpy arrays), its
    independent steps on `workers` threads (None: `einfhe.runtime.scheduler.default_workers`; 1: one step at a time,
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
    # a row used by one step only is packed when it runs and not kept (a channel-packed CNN's thousands of diagonals)
    slice_uses = Counter(step.plain for step in plan.steps if isinstance(getattr(step, "plain", None), PlainSlice))

    def plaintext(step) -> np.ndarray | None:
        ref = getattr(step, "plain", None)
        if ref is None:
            return None
        if isinstance(ref, Mask):
            return _mask_vector(ref)
        if isinstance(ref, PlainSlice):
            if slice_uses[ref] == 1:
                return ref.layout.pack(plain_values[ref.name][ref.index])[0]
            key = (ref.name, ref.layout, ref.index)
            if key not in packed_cache:
                packed_cache[key] = ref.layout.pack(plain_values[ref.name][ref.index])[0]
            return packed_cache[key]
        key = (ref.name, ref.layout)
        if key not in packed_cache:
            packed_cache[key] = ref.layout.pack(plain_values[ref.name])
        return packed_cache[key][ref.ct]

    def apply(step, args):
        values, plain = args
        return _RUN[type(step)](backend, ciphers, step, values, plain)

    live = run_steps(plan.steps, apply, plaintext, workers, set(plan.outputs), stats)
    return [live[v] for v in plan.outputs]
