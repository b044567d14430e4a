"""An encoder layer compiled into a chain of plans: einsum plans for the products (cipher x plain projections, the
cipher x cipher `hqe,hke->hqk` and `hqk,hke->hqe` with every head in the slots) and plan pieces for the biases,
residual sums and polynomial blocks. Each plan keeps the layout its input arrives in (the compiler works around
it), so no value is ever decrypted or re-encrypted between stages.

`EncoderProgram.run(run_plan, x)` runs the chain with `run_plan = functools.partial(einfhe.run, ctx)` (a context
made for `EncoderProgram.plans`, whose rotation keys it holds; `length=L` for a padded sequence of L real tokens,
where the chain has key masks); `EncoderProgram.level_map()` prints the level each
stage starts and ends at.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ...errors import ModelError, PlanError
from ...layout import Layout, natural_layout
from ...plan import ROTATION_OPS, Load, Plan, step_level
from ...plan.keybasis import with_rotation_basis
from ..einsum import cipher, compile_einsum
from .encoder import EncoderBlocks, EncoderWeights
from .keymask import masks_of, with_length
from .pieces import PieceBuilder, Piece, gelu_piece, layernorm_piece, softmax_piece

__all__ = ["Stage", "EncoderProgram", "StageChain", "compile_encoder_layer", "bias_piece", "sum_piece",
           "natural_piece", "stack_programs", "INPUT"]

INPUT = "x"
INTERMEDIATE_BUDGET = 1 << 40  # a stage's cipher inputs are the server's own values, never uploaded


@dataclass(frozen=True, eq=False)
class Stage:
    """One plan of the chain: its operands are named cipher values (str) or plain arrays (key masks among them,
    resolved for a sequence's real token count when it runs), its result `output`."""

    name: str
    plan: Plan
    operands: tuple
    output: str

    @property
    def inputs(self) -> tuple[str, ...]:
        """The cipher values the stage reads."""
        return tuple(op for op in self.operands if isinstance(op, str))


def bias_piece(layout: Layout, bias: np.ndarray) -> Piece:
    """value + bias (broadcast over the value's leading axes), in the value's own layout: no level."""
    pb = PieceBuilder(layout)
    return pb.plan(f"bias[{layout.indices}]", pb.add_const(pb.input, bias))


def natural_piece(layout: Layout) -> Piece:
    """The value moved to the natural layout of its shape (a relayout: one level)."""
    pb = PieceBuilder(layout)
    return pb.plan(f"natural[{layout.indices}]", pb.natural(pb.input))


def sum_piece(first: Layout, second: Layout, bias: np.ndarray | None = None) -> Piece:
    """a + b (+ bias) for two cipher tensors of one shape (a residual): in their layout where they share one, else
    in the natural layout."""
    if first.shape != second.shape:
        raise ModelError("a residual sum needs two tensors of one shape", first=first.shape, second=second.shape)
    pb = PieceBuilder(first)
    other = pb.extra_input(second)
    total = pb.add(pb.input, other) if first == second else pb.add(pb.natural(pb.input), pb.natural(other))
    return pb.plan(f"sum[{first.indices}]", total if bias is None else pb.add_const(total, bias))


@dataclass(frozen=True, eq=False)
class EncoderProgram:
    """The stages of an encoder layer, in order; `input_layout` is where the client encrypts x."""

    stages: tuple[Stage, ...]
    input_layout: Layout
    output: str

    @property
    def plans(self) -> tuple[Plan, ...]:
        """Every stage's plan (a context for the program is made for all of them)."""
        return tuple(stage.plan for stage in self.stages)

    def stage(self, output: str) -> Stage:
        """The stage that makes the value named `output`."""
        return next(stage for stage in self.stages if stage.output == output)

    def value_levels(self) -> list[dict[int, int]]:
        """Per stage, the level of each of its values: a load at the level its source reached, a bootstrap at 0."""
        reached = {INPUT: (0,) * self.input_layout.num_cts}
        out = []
        for stage in self.stages:
            levels: dict[int, int] = {}
            for step in stage.plan.steps:
                levels[step.out] = (reached[stage.operands[step.operand]][step.ct] if isinstance(step, Load)
                                    else step_level(step, levels))
            reached[stage.output] = tuple(levels[v] for v in stage.plan.outputs)
            out.append(levels)
        return out

    def levels(self) -> dict[str, tuple[int, int]]:
        """Per stage, the deepest level among its inputs and the deepest its result reaches."""
        spans = {}
        for stage, levels in zip(self.stages, self.value_levels()):
            loads = [levels[step.out] for step in stage.plan.steps if isinstance(step, Load)]
            spans[stage.name] = (max(loads, default=0), max(levels[v] for v in stage.plan.outputs))
        return spans

    @property
    def depth(self) -> int:
        """Levels the chain consumes between refreshes (the parameters' depth it needs): the deepest any value
        reaches."""
        return max(max(levels.values()) for levels in self.value_levels())

    def level_map(self) -> str:
        """One line per stage: its levels, plan depth, rotations, bootstraps and the values it reads."""
        lines = [f"{'stage':<14}{'levels':>10}{'depth':>7}{'rotations':>11}{'bootstraps':>12}  reads"]
        for stage, (start, end) in zip(self.stages, self.levels().values()):
            lines.append(f"{stage.name:<14}{f'{start}->{end}':>10}{stage.plan.depth:>7}"
                         f"{_rotations(stage.plan):>11}{stage.plan.bootstraps:>12}  {', '.join(stage.inputs)}")
        return "\n".join(lines)

    @property
    def rotation_keys(self) -> tuple[int, ...]:
        """The distinct rotation offsets of every stage, one key each (normalized to 0 < r < slots)."""
        return tuple(sorted({r for plan in self.plans for r in plan.rotations}))

    @property
    def rotation_count(self) -> int:
        """Rotations of the whole chain, hoisted or not."""
        return sum(_rotations(plan) for plan in self.plans)

    def with_rotation_basis(self, basis: str) -> "EncoderProgram":
        """The same chain with every rotation in `basis` ("pow2", "pow4", "pow16": keys for the powers of the radix
        only, more key switches; einfhe.plan.keybasis)."""
        stages = tuple(replace(stage, plan=with_rotation_basis(stage.plan, basis)) for stage in self.stages)
        return EncoderProgram(stages, self.input_layout, self.output)

    @property
    def masked(self) -> bool:
        """True when the chain masks padded keys (its key masks take a sequence's real token count)."""
        return any(masks_of(stage.operands) for stage in self.stages)

    def run(self, run_plan: Callable, x, length: int | None = None):
        """Run the chain on the encrypted input x (in `input_layout`) with `run_plan(plan, *operands)`; return the
        encrypted output. `length`: how many of the tokens are real (the first ones; the rest padding, masked out
        as keys); None: all of them."""
        if length is not None and not self.masked:
            raise ModelError("this chain has no attention mask (the row packing's has): run it without a length")
        values = {INPUT: x}
        for stage in self.stages:
            values[stage.output] = run_plan(stage.plan, *(values[op] if isinstance(op, str) else op
                                                          for op in with_length(stage.operands, length)))
        return values[self.output]


def stack_programs(programs) -> EncoderProgram:
    """Layers' programs as one chain, each layer's input the output of the one before it (stage names prefixed
    with the layer's index, "L0.q", "L1.q", ...), so the level planner can place bootstraps across the layers."""
    programs = tuple(programs)
    if not programs:
        raise ModelError("stack_programs needs at least one layer")
    stages, previous = [], INPUT
    for index, program in enumerate(programs):
        if index and program.input_layout != programs[index - 1].stage(programs[index - 1].output).plan.output_layout:
            raise ModelError("a layer's input layout must be the layout the layer before it leaves", layer=index)
        names = {stage.output: f"L{index}.{stage.output}" for stage in program.stages}
        names[INPUT] = previous
        stages.extend(Stage(f"L{index}.{stage.name}", stage.plan,
                            tuple(names[op] if isinstance(op, str) else op for op in stage.operands),
                            names[stage.output]) for stage in program.stages)
        previous = names[program.output]
    return EncoderProgram(tuple(stages), programs[0].input_layout, previous)


def _rotations(plan: Plan) -> int:
    """Rotations of one plan, hoisted or not."""
    counts = plan.op_counts()
    return sum(counts[op] for op in ROTATION_OPS)


class StageChain:
    """Stages appended one by one, each plan compiled for the layouts its inputs actually have."""

    def __init__(self, input_layout: Layout, slots: int) -> None:
        self.slots = slots
        self.layouts = {INPUT: input_layout}
        self.stages: list[Stage] = []

    def einsum(self, name: str, spec: str, *operands) -> str:
        """An einsum stage over named cipher values (str) and plain arrays. Where the layouts a cipher operand
        arrives in make the contraction too large to lower (junk dimensions multiply its joint layout), the
        operands are first moved to their natural layouts (a relayout stage each: one level) and it is compiled
        again."""
        try:
            plan = self._compile(spec, operands)
        except PlanError:
            operands = tuple(self.piece(f"{op}~", natural_piece, op) if isinstance(op, str) and op != INPUT
                             and self.layouts[op] != self._natural(op) else op for op in operands)
            plan = self._compile(spec, operands)
        return self._add(name, plan, tuple(operands))

    def _natural(self, name: str) -> Layout:
        layout = self.layouts[name]
        return natural_layout(layout.shape, layout.slots, layout.indices)

    def _compile(self, spec: str, operands: tuple) -> Plan:
        described = [cipher(self.layouts[op].shape, self.layouts[op]) if isinstance(op, str) else op
                     for op in operands]
        return compile_einsum(spec, *described, slots=self.slots, upload_budget=INTERMEDIATE_BUDGET)

    def piece(self, name: str, make, *inputs: str, **options) -> str:
        """A plan-piece stage: `make(*input layouts, **options)` over the named cipher values."""
        piece = make(*(self.layouts[op] for op in inputs), **options)
        return self._add(name, piece.plan, (*inputs, *piece.plains))

    def _add(self, name: str, plan: Plan, operands: tuple) -> str:
        self.stages.append(Stage(name, plan, operands, name))
        self.layouts[name] = plan.output_layout
        return name


def compile_encoder_layer(weights: EncoderWeights, blocks: EncoderBlocks, tokens: int, *, slots: int,
                          input_layout: Layout | None = None) -> EncoderProgram:
    """The layer on `tokens` tokens as a chain of plans on `slots` slots; the input in `input_layout` (by default
    the one the query projection prefers, which the client encrypts in)."""
    w = weights
    if blocks.softmax.length != tokens:
        raise ModelError(f"the softmax was calibrated for {blocks.softmax.length} tokens, not {tokens}")
    heads, e, d = w.heads, w.head_width, w.width
    split = (d, heads, e)
    wq = (w.wq / np.sqrt(e)).reshape(split)  # the score's 1/sqrt(e) folded into the query projection
    if input_layout is None:
        input_layout = compile_einsum("sd,dhe->hse", cipher((tokens, d)), wq, slots=slots).input_layout(0)
    chain = StageChain(input_layout, slots)
    biased = {}
    for key, matrix, bias in (("q", wq, w.bq / np.sqrt(e)), ("k", w.wk.reshape(split), w.bk),
                              ("v", w.wv.reshape(split), w.bv)):
        projected = chain.einsum(key + "@W", "sd,dhe->hse", INPUT, matrix)
        biased[key] = chain.piece(key, bias_piece, projected, bias=bias.reshape(heads, 1, e))
    scores = chain.einsum("q.k", "hqe,hke->hqk", biased["q"], biased["k"])
    probs = chain.piece("softmax", softmax_piece, scores, softmax=blocks.softmax)
    attended = chain.einsum("p.v", "hqk,hke->hqe", probs, biased["v"])
    out = chain.einsum("out@Wo", "hqe,hed->qd", attended, w.wo.reshape(heads, e, d))
    resid = chain.piece("x+attn", sum_piece, INPUT, out, bias=w.bo)
    h = chain.piece("norm1", layernorm_piece, resid, norm=blocks.norm1)
    inner = chain.einsum("h@W1", "sd,df->sf", h, w.w1)
    activated = chain.piece("gelu", gelu_piece, inner, activation=blocks.gelu, bias=w.b1)
    ffn = chain.einsum("g@W2", "sf,fd->sd", activated, w.w2)
    resid2 = chain.piece("h+ffn", sum_piece, h, ffn, bias=w.b2)
    result = chain.piece("norm2", layernorm_piece, resid2, norm=blocks.norm2)
    return EncoderProgram(tuple(chain.stages), input_layout, result)
