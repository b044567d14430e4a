"""Cut a plan into stages at its level boundaries, so that a deep model's independent ciphertexts run in parallel.

`partition` splits a plan by its outputs' backward slices; in a deep network every output depends on work that
every other output shares (a dense layer mixes all its inputs), so the whole plan is one part. Cut after every
step that changes the level (a rescale, a level drop, a bootstrap, a polynomial), the plan becomes a chain of
stages, each a plan of its own: within a stage a layer's outputs are computed from the values before the cut by
disjoint work (one channel, one product, one bootstrap each), so `partition` splits each stage into many parts.

    for stage in stages(plan):
        outs = execute(stage.plan, backend, {**ciphers, **stage.carried_cts(values)}, plains)
        values.update(zip(stage.plan.outputs, outs))
    result = [values[v] for v in plan.outputs]

A stage reads the plan's own inputs (its `Load` steps, kept) and the values earlier stages computed, which it
loads as the ciphertexts of one extra cipher operand, `operand`, in the order of `carried`; its outputs are the
values later stages or the plan's output read. Value ids are the plan's throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..layout import Dim, Layout, next_pow2
from .operands import CipherInput
from .partition import plain_program_of
from .plan import Plan
from .steps import Load

__all__ = ["Stage", "stages"]


@dataclass(frozen=True)
class Stage:
    """One stage: `plan` computes `plan.outputs` from the plan's inputs and, as operand `operand`, the values
    `carried` (ciphertext i of that operand is value carried[i])."""

    plan: Plan
    operand: int
    carried: tuple[int, ...]

    def carried_cts(self, values: dict) -> dict[int, list]:
        """The carried operand's ciphertexts taken from `values` (value id -> ciphertext), as an operand dict
        (empty when the stage carries nothing; the layout's padding ciphertexts are None, never read)."""
        if not self.carried:
            return {}
        padding = self.plan.input_layout(self.operand).num_cts - len(self.carried)
        return {self.operand: [values[v] for v in self.carried] + [None] * padding}


def carried_layout(count: int, slots: int) -> Layout:
    """The layout of an operand of `count` whole ciphertexts (a stage's carried values, or its outputs)."""
    return Layout((Dim("v", next_pow2(count), "axis", count), Dim("s", slots, "axis", slots)), slots, "vs",
                  (count, slots))


def _stage_of(plan: Plan) -> dict[int, int]:
    """Stage of every non-load value: one more than its latest argument's when that argument's step changed
    the level (so a stage ends at a rescale, a level drop or a bootstrap)."""
    levels, producer = plan.levels(), {step.out: step for step in plan.steps}

    def cut(value: int) -> int:
        step = producer[value]
        return int(not isinstance(step, Load) and levels[value] != max(levels[a] for a in step.args))

    stage: dict[int, int] = {}
    for step in plan.steps:
        if not isinstance(step, Load):
            stage[step.out] = max((stage.get(a, 0) + cut(a) for a in step.args), default=0)
    return stage


def stages(plan: Plan) -> tuple[Stage, ...]:
    """The plan's stages, in order (a plan that never changes level is one stage)."""
    stage_of, loads = _stage_of(plan), {s.out: s for s in plan.steps if isinstance(s, Load)}
    operand = 1 + max(op.operand for op in plan.operands)
    by_stage: dict[int, list] = {}
    for step in plan.steps:
        if not isinstance(step, Load):
            by_stage.setdefault(stage_of[step.out], []).append(step)
    last_read: dict[int, int] = {}
    for step in plan.steps:
        for arg in step.args:
            last_read[arg] = max(last_read.get(arg, -1), stage_of.get(step.out, 0))
    finals = set(plan.outputs)
    result = []
    for index in sorted(by_stage):
        steps = by_stage[index]
        made = {s.out for s in steps}
        reads = list(dict.fromkeys(a for s in steps for a in s.args if a not in made))
        carried = tuple(v for v in reads if v not in loads)
        loaded = [loads[v] for v in reads if v in loads]
        moved = [Load(v, operand, i) for i, v in enumerate(carried)]
        outputs = tuple(s.out for s in steps if s.out in finals or last_read.get(s.out, -1) > index)
        operands = plan.operands + ((CipherInput(operand, carried_layout(len(carried), plan.slots)),)
                                    if carried else ())
        sub = Plan(plan.spec, plan.slots, operands, plain_program_of(plan, steps), tuple(loaded + moved + steps),
                   outputs, carried_layout(max(1, len(outputs)), plan.slots), plan.strategy)
        result.append(Stage(sub, operand, carried))
    return tuple(result)
