"""A chain spliced into one plan.

`splice_plan` turns a chain (a layer's, or layers stacked by `stack_programs` with their bootstraps placed) into a
single `Plan` with one cipher operand (the client's input) and every stage's
plain operands after it: a stage's loads of an earlier stage's values become those values, its plain-program
values are renamed `s<i>.<name>` and its value ids renumbered. One plan is what the service stores, prices, sends
to a worker or to Dask, and what a client makes keys for (its rotations are the union of the stages').
"""

from __future__ import annotations

from dataclasses import replace

from ...errors import ModelError
from ...plan import (AddPlain, CipherInput, Diagonals, Load, MulPlain, PlainExpr, PlainInput, PlainSlice, PlainTensor,
                     Plan)
from .program import INPUT, EncoderProgram

__all__ = ["splice_plan"]


def _renamed(name: str, operands: dict[str, str], prefix: str) -> str:
    """A stage's plain-value name in the spliced plan: its plain operands renumbered, its own values prefixed."""
    if name.startswith("delta:"):
        return name
    return operands.get(name, f"{prefix}{name}")


def _plaintext(plain, operands: dict[str, str], prefix: str):
    """A step's plaintext reference with its plain value renamed (a mask names none)."""
    if isinstance(plain, (PlainTensor, PlainSlice)):
        return replace(plain, name=_renamed(plain.name, operands, prefix))
    return plain


def splice_plan(program: EncoderProgram, spec: str) -> tuple[Plan, list]:
    """The chain as one plan named `spec` whose operand 0 is the client's input (in `program.input_layout`), and
    the plain operands 1.. it takes, in order (the stages' weights, biases and masks)."""
    slots = program.stages[0].plan.slots
    operands: list = [CipherInput(0, program.input_layout)]
    plains, plain_program, steps = [], [], []
    produced: dict[str, tuple[int, ...]] = {}   # a stage's output -> its value ids in the spliced plan
    loaded: dict[int, int] = {}                 # ciphertext of the input -> its load
    next_id = 0

    def fresh() -> int:
        nonlocal next_id
        next_id += 1
        return next_id - 1

    for i, stage in enumerate(program.stages):
        plan, prefix = stage.plan, f"s{i}."
        if plan.slots != slots:
            raise ModelError("every stage of a spliced chain must use one slot count", stage=stage.name)
        names: dict[str, str] = {}
        for op in plan.operands:
            if isinstance(op, PlainInput):
                plains.append(stage.operands[op.operand])
                operands.append(PlainInput(len(operands), op.shape))
                names[f"op{op.operand}"] = f"op{len(operands) - 1}"
        for expr in plan.plain_program:
            if isinstance(expr, Diagonals):
                plain_program.append(replace(expr, out=prefix + expr.out, src=_renamed(expr.src, names, prefix)))
            else:
                plain_program.append(PlainExpr(prefix + expr.out, expr.subscripts,
                                               tuple(_renamed(a, names, prefix) for a in expr.args)))
        ids: dict[int, int] = {}
        for step in plan.steps:
            if isinstance(step, Load):
                source = stage.operands[step.operand]
                if source == INPUT:
                    if step.ct not in loaded:
                        loaded[step.ct] = fresh()
                        steps.append(Load(loaded[step.ct], 0, step.ct))
                    ids[step.out] = loaded[step.ct]
                else:
                    ids[step.out] = produced[source][step.ct]
                continue
            changes = {field: ids[getattr(step, field)] for field in step.inputs}
            if isinstance(step, (MulPlain, AddPlain)):
                changes["plain"] = _plaintext(step.plain, names, prefix)
            ids[step.out] = fresh()
            steps.append(replace(step, out=ids[step.out], **changes))
        produced[stage.output] = tuple(ids[v] for v in plan.outputs)
    last = program.stages[-1].plan
    plan = Plan(spec, slots, tuple(operands), tuple(plain_program), tuple(steps), produced[program.output],
                last.output_layout, strategy="encoder-stack")
    return plan, plains
