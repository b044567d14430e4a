"""Each value's largest magnitude when a transformer layer's chain of plans (einfhe.compiler.transformer) runs on
sample inputs on the exact simulator: a bootstrap refreshes only values below its headroom, so the level planner
places refreshes only where these stay below it (`place_bootstraps(..., magnitudes=..., headroom=...)`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..backends.simulator import SimCiphertext, SimulatorBackend
from ..compiler.transformer.keymask import with_length
from ..compiler.transformer.program import INPUT, EncoderProgram
from ..plan import Load, RotatePrecompute
from .interpreter import execute

__all__ = ["value_magnitudes"]


def value_magnitudes(program: EncoderProgram, samples, lengths=None) -> dict:
    """Each value's largest magnitude over every slot (junk slots too: a bootstrap refreshes them all) on
    `samples` (arrays in the input's shape; with `lengths`, each one's real token count, its key masks resolved for
    it), keyed as `chain_levels` keys values: (stage index, value id)."""
    backend = SimulatorBackend(program.input_layout.slots, program.depth)
    largest: dict = {}
    samples = list(samples)
    for x, length in zip(samples, [None] * len(samples) if lengths is None else lengths, strict=True):
        values = {INPUT: [backend.encrypt(v) for v in program.input_layout.pack(np.asarray(x, dtype=np.float64))]}
        for i, stage in enumerate(program.stages):
            made = tuple(step.out for step in stage.plan.steps if not isinstance(step, (Load, RotatePrecompute)))
            operands = with_length(stage.operands, length)
            ciphers = {k: values[op] for k, op in enumerate(operands) if isinstance(op, str)}
            plains = {k: op for k, op in enumerate(operands) if not isinstance(op, str)}
            outs = dict(zip(made, execute(replace(stage.plan, outputs=made), backend, ciphers, plains, workers=1)))
            for value, ct in outs.items():
                if isinstance(ct, SimCiphertext):
                    largest[(i, value)] = max(largest.get((i, value), 0.0), float(np.abs(ct.values).max()))
            values[stage.output] = [outs[v] for v in stage.plan.outputs]
    return largest
