"""The numpy-like user API: encrypt, einsum, run, decrypt."""

from __future__ import annotations

import numpy as np

from .compiler.einsum import DEFAULT_SLOTS, compile_einsum
from .crypto.tensor import EncryptedTensor
from .errors import EinsumError, PlanError
from .layout import Layout, natural_layout
from .plan import CipherInput, Plan
from .runtime.interpreter import RunStats, execute
from .spec import check_subscripts, parse_einsum, real_array

__all__ = ["encrypt", "decrypt", "einsum", "run", "simulate"]


def encrypt(ctx, x, layout: Layout | None = None, *, level: int = 0) -> EncryptedTensor:
    """Encrypt numpy array `x` in `layout` (default: row-major, padded) with the context's keys, `level` levels
    below the top of the modulus chain (smaller and faster ciphertexts where the program needs fewer levels
    before its first bootstrap: `ModelPlan.input_level`)."""
    x = real_array(x)
    layout = layout or natural_layout(x.shape, ctx.slots)
    if layout.slots != ctx.slots:
        raise PlanError(f"the layout has {layout.slots} slots, the context {ctx.slots}")
    packed = layout.pack(x)
    return EncryptedTensor(tuple(ctx.backend.encrypt(row, level) for row in packed), layout)


def decrypt(ctx, tensor: EncryptedTensor) -> np.ndarray:
    """Decrypt an encrypted tensor into a numpy array of its logical shape."""
    return tensor.layout.unpack(np.stack([ctx.backend.decrypt(ct) for ct in tensor.cts]))


def run(ctx, plan: Plan, *operands, stats: RunStats | None = None, workers: int | None = None) -> EncryptedTensor:
    """Run `plan` on its operands (EncryptedTensors in the plan's layouts for cipher operands, arrays for plain),
    independent steps on `workers` threads (None: EINFHE_WORKERS or 1; see `einfhe.runtime.scheduler`)."""
    ctx.check_plan(plan)
    if len(operands) != len(plan.operands):
        raise EinsumError(f"the plan takes {len(plan.operands)} operands, got {len(operands)}", spec=plan.spec)
    ciphers, plains = {}, {}
    for op, value in zip(plan.operands, operands):
        if isinstance(op, CipherInput):
            if not isinstance(value, EncryptedTensor):
                raise EinsumError(f"operand {op.operand} must be encrypted", spec=plan.spec)
            if value.layout != op.layout:
                raise EinsumError(
                    f"operand {op.operand} is encrypted in {value.layout}, the plan needs {op.layout}: "
                    "encrypt it with plan.input_layout(...)",
                    spec=plan.spec,
                )
            ciphers[op.operand] = list(value.cts)
        else:
            if isinstance(value, EncryptedTensor):
                raise EinsumError(f"operand {op.operand} is plain in this plan", spec=plan.spec)
            plains[op.operand] = real_array(value, spec=plan.spec, operand=op.operand)
    outputs = execute(plan, ctx.backend, ciphers, plains, stats, workers)
    return EncryptedTensor(tuple(outputs), plan.output_layout)


def _matches(plan: Plan, spec: str, operands) -> bool:
    """True when `plan` was compiled for this spec and these operands (same shapes and layouts)."""
    if plan.spec != spec or len(plan.operands) != len(operands):
        return False
    for op, value in zip(plan.operands, operands):
        if isinstance(op, CipherInput):
            if not isinstance(value, EncryptedTensor) or value.layout != op.layout:
                return False
        elif isinstance(value, EncryptedTensor) or np.shape(value) != op.shape:
            return False
    return True


def einsum(subscripts: str, *operands, ctx=None, stats: RunStats | None = None) -> EncryptedTensor | np.ndarray:
    """numpy.einsum over encrypted and plain operands; uses a plan the context was made for when one fits.

    Where an index has size 0 the result holds nothing encrypted (numpy's empty array, or zeros where the
    index is summed): it is returned as that numpy array, computed without encryption."""
    subscripts = check_subscripts(subscripts)
    if ctx is None:
        raise EinsumError("einfhe.einsum needs ctx=<the Context the operands were encrypted with>")
    shapes = [op.shape if isinstance(op, EncryptedTensor) else np.shape(op) for op in operands]
    spec = parse_einsum(subscripts, *shapes)
    if spec.empty:
        return np.zeros(spec.output_shape)
    for plan in ctx.plans:
        if _matches(plan, str(spec), operands) or _matches(plan, subscripts, operands):
            return run(ctx, plan, *operands, stats=stats)
    plan = compile_einsum(subscripts, *operands, slots=ctx.slots or DEFAULT_SLOTS)
    return run(ctx, plan, *operands, stats=stats)


def simulate(plan: Plan, *operands, stats: RunStats | None = None, workers: int | None = None) -> np.ndarray:
    """Run `plan` on the exact slot simulator with numpy arrays for every operand; return the result array."""
    from .backends.simulator import SimulatorBackend

    if len(operands) != len(plan.operands):
        raise EinsumError(f"the plan takes {len(plan.operands)} operands, got {len(operands)}", spec=plan.spec)
    backend = SimulatorBackend(plan.slots)
    ciphers, plains = {}, {}
    for op, value in zip(plan.operands, operands):
        if isinstance(op, CipherInput):
            array = real_array(value, spec=plan.spec, operand=op.operand)
            ciphers[op.operand] = [backend.encrypt(row) for row in op.layout.pack(array)]
        else:
            plains[op.operand] = value
    outputs = execute(plan, backend, ciphers, plains, stats, workers)
    return plan.output_layout.unpack(np.stack([backend.decrypt(ct) for ct in outputs]))
