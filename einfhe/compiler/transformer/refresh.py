"""Bootstraps inside an encoder layer, placed by the level planner (einfhe.compiler.levels): the layer's chain is
cut at level boundaries into segments, `plan_levels` chooses the boundaries to refresh at, and every ciphertext
that crosses a chosen boundary is bootstrapped just before the step that reads it past it.

Seen across the whole chain (a stage's loads are the values that earlier stages produced), every value has a
level. A boundary at level l is crossed by the values at level <= l that a step past l reads: refreshing them
there leaves every later value l levels shallower, as if the chain started again at l. A boundary can be cut
when what crosses it are whole ciphertexts (no product still waiting for its rescale) and no Chebyshev series
spans it (one that started below l would still need all its levels after the refresh). The segments between the
cuttable boundaries are the level planner's layers, each with the ciphertexts a refresh before it takes (values
at level 0, the client's input, never need one); so the softmax, the LayerNorms and the other long blocks get
their bootstraps where the planner finds them cheapest, under its limit of levels between refreshes.

A crossing value read in a later stage is bootstrapped in that stage, after its load, once per stage that needs
it refreshed; one read in its own stage is bootstrapped after the step that makes it.

A bootstrap refreshes only values below its headroom (einfhe.params.bootstrap_headroom: 16 at einfhe's 128-bit
sets); a transformer's scores, residuals and LayerNorm sums pass it (MiniLM's residual stream reaches past 200).
Given each value's largest magnitude on sample inputs (einfhe.runtime.magnitudes: the chain run on the exact
simulator) and the headroom, a value that would not stay below headroom / HEADROOM_MARGIN is shrunk by a power of
two 2^k first (a plaintext product: one level, so such a refresh reads its value one level deeper) and doubled k
times after (additions: no level); the bootstrap's absolute error grows 2^k times with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...errors import ModelError
import math

import numpy as np

from ...layout import natural_layout
from ...plan import (Add, Bootstrap, Chebyshev, HoistedRotate, Load, Mul, MulPlain, PlainInput, PlainSlice, Rescale,
                     Rotate, RotatePrecompute)
from ..levels import PLACEMENTS, LayerLevels, LevelPlan
from .program import INPUT, EncoderProgram

__all__ = ["ChainLevels", "chain_levels", "place_bootstraps", "shrink_bits", "HEADROOM_MARGIN"]

HEADROOM_MARGIN = 1.25  # a refreshed value stays below headroom / margin on the samples (held-out inputs vary)

_WAITING = (Mul, MulPlain, RotatePrecompute)  # values no bootstrap can take: a product before its rescale, digits


@dataclass(frozen=True)
class ChainLevels:
    """The chain seen whole: each value's level, who reads what, and the boundaries it can be cut at."""

    levels: dict       # (stage, value) -> level (a product waiting for its rescale at the level it will have)
    loads: dict        # (stage, value a load makes) -> its source (stage, value), or ("x", ciphertext)
    rotated: dict      # (stage, value) -> (its source, offset): a rotation, refreshed as its source's rotation
    reads: tuple       # ((stage, step index, argument name), source (stage, value), the reader's level)
    cuts: tuple        # the boundaries a refresh can sit at, ascending
    depth: int

    def crossing(self, cut: int) -> set:
        """The values a refresh at `cut` bootstraps (a rotation's source for the rotation; level 0 values, the
        client's input, never need one)."""
        return {self.rotated.get(src, (src,))[0] for _, src, at in self.reads if 0 < self.levels[src] <= cut < at}


def chain_levels(program: EncoderProgram) -> ChainLevels:
    """Every value's level across the chain, its reads, and the boundaries it can be cut at."""
    producers = {stage.output: index for index, stage in enumerate(program.stages)}
    levels, waiting, alias, rotated, reads, spans = {}, set(), {}, {}, [], []
    for i, stage in enumerate(program.stages):
        for k, step in enumerate(stage.plan.steps):
            if isinstance(step, Bootstrap):
                raise ModelError("the chain already holds bootstraps", stage=stage.name)
            if isinstance(step, Load):
                name = stage.operands[step.operand]
                source = ("x", step.ct) if name == INPUT else (
                    producers[name], program.stages[producers[name]].plan.outputs[step.ct])
                alias[(i, step.out)] = source
                levels.setdefault(source, 0)
                continue
            args = {field: alias.get((i, getattr(step, field)), (i, getattr(step, field))) for field in step.inputs}
            deepest = max((levels[a] for a in args.values()), default=0)
            out = (i, step.out)
            if isinstance(step, (Mul, MulPlain)):
                levels[out] = deepest + 1
            elif isinstance(step, Rescale):
                levels[out] = deepest + (args["src"] not in waiting)
            elif isinstance(step, Chebyshev):
                levels[out] = deepest + step.levels
                spans.append((deepest, levels[out]))
            else:
                levels[out] = deepest
            carried = [args["src"]] if isinstance(step, HoistedRotate) else list(args.values())  # not the digits
            if isinstance(step, _WAITING) or (not isinstance(step, (Rescale, Chebyshev))
                                             and any(a in waiting for a in carried)):
                waiting.add(out)
            elif isinstance(step, (Rotate, HoistedRotate)) and args["src"] not in rotated:
                rotated[out] = (args["src"], step.offset)
            reads.extend(((i, k, field), src, levels[out]) for field, src in args.items())
    depth = max(levels.values())
    blocked = {cut for lo, hi in spans for cut in range(lo + 1, hi)}
    crossing = {}
    for _, src, at in reads:
        for cut in range(max(1, levels[src]), min(at, depth)):
            crossing.setdefault(cut, set()).add(src)
    cuts = tuple(cut for cut in range(1, depth) if cut not in blocked and not crossing.get(cut, set()) & waiting)
    return ChainLevels(levels, alias, rotated, tuple(reads), cuts, depth)


def _segments(program: EncoderProgram, chain: ChainLevels) -> tuple[LayerLevels, ...]:
    """The level planner's layers: the chain between consecutive cuttable boundaries."""
    bounds = (0, *chain.cuts, chain.depth)
    segments = []
    for position, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        ops, names = [], []
        for i, stage in enumerate(program.stages):
            for step in stage.plan.steps:
                level = chain.levels.get((i, step.out))
                if not isinstance(step, Load) and level is not None and (lo < level <= hi or level == lo == 0):
                    ops.append((step.op, level - lo))
                    if stage.name not in names:
                        names.append(stage.name)
        cts = len(chain.crossing(lo)) if position else program.input_layout.num_cts
        segments.append(LayerLevels(position, "/".join(names) or "-", hi - lo, cts, False, tuple(ops)))
    return tuple(segments)


def place_bootstraps(program: EncoderProgram, max_depth: int, slots: int, *, placement: str = "cost",
                     ring_dim: int = 65536, magnitudes: dict | None = None,
                     headroom: float | None = None) -> tuple[EncoderProgram, LevelPlan]:
    """The chain with bootstraps where the level planner puts them (at most `max_depth` levels between refreshes,
    `placement` one of einfhe.compiler.levels.PLACEMENTS), and the planner's level map; with `magnitudes`
    (einfhe.runtime.magnitudes.value_magnitudes) and `headroom`, each refreshed value that would not stay below
    headroom / HEADROOM_MARGIN shrunk before its bootstrap and grown back after (module docstring)."""
    if placement not in PLACEMENTS:
        raise ModelError(f"unknown placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
    if (magnitudes is None) != (headroom is None) or (headroom is not None and not headroom > 0):
        raise ModelError("place_bootstraps takes magnitudes and a positive headroom together", headroom=headroom)
    chain = chain_levels(program)
    plan = PLACEMENTS[placement](_segments(program, chain), max_depth, slots, ring_dim=ring_dim)
    bounds = (0, *chain.cuts, chain.depth)
    chosen = [bounds[p] for p in plan.bootstrap_before]
    refresh: dict[int, dict[tuple, set]] = {}  # stage -> source -> the step fields that read it refreshed
    for (i, k, field), src, at in chain.reads:
        if chain.levels[src] > 0 and any(chain.levels[src] <= cut < at for cut in chosen):
            refresh.setdefault(i, {}).setdefault(src, set()).add((k, field))
    shrinks = {src: shrink_bits(magnitudes.get(src, 0.0), headroom) for src in chain.levels} if magnitudes else {}
    stages = []
    for i, stage in enumerate(program.stages):
        plan_i, plains = _with_bootstraps(stage.plan, i, refresh.get(i, {}), chain, shrinks)
        stages.append(replace(stage, plan=plan_i, operands=stage.operands + plains))
    return EncoderProgram(tuple(stages), program.input_layout, program.output), plan


def shrink_bits(magnitude: float, headroom: float) -> int:
    """The k for which magnitude / 2^k stays below headroom / HEADROOM_MARGIN (0 when it already does)."""
    return max(0, math.ceil(math.log2(magnitude * HEADROOM_MARGIN / headroom))) if magnitude > 0 else 0


def _with_bootstraps(plan, stage: int, refresh: dict, chain: ChainLevels, shrinks: dict):
    """`plan` with a bootstrap of each refreshed source after the step that makes (or loads) it (a rotation's
    source, the rotation applied again after the bootstrap; shrunk by 2^-k first and doubled k times after where
    `shrinks` says k), and the reads past the refresh redirected to it; and the plain operands it added."""
    if not refresh:
        return plan, ()
    reads = {read: src for src, fields in refresh.items() for read in fields}
    roots = {chain.rotated.get(src, (src,))[0] for src in refresh}
    next_id = max(step.out for step in plan.steps) + 1
    fresh, steps, operands, plains, factors = {}, [], list(plan.operands), [], {}

    def emit(cls, *args) -> int:
        nonlocal next_id
        steps.append(cls(next_id, *args))
        next_id += 1
        return next_id - 1

    def factor(bits: int) -> PlainSlice:
        """The plaintext 2^-bits in every slot (one plain operand per power)."""
        if bits not in factors:
            plains.append(np.full((1, plan.slots), 2.0 ** -bits))
            operands.append(PlainInput(len(operands), plains[-1].shape))
            factors[bits] = PlainSlice(f"op{len(operands) - 1}", natural_layout((plan.slots,), plan.slots, "s"), 0)
        return factors[bits]

    for k, step in enumerate(plan.steps):
        args = {field: fresh[reads[(k, field)]] for field in step.inputs if (k, field) in reads}
        steps.append(replace(step, **args) if args else step)
        source = chain.loads.get((stage, step.out), (stage, step.out))
        if source in roots:
            bits = shrinks.get(source, 0)
            value = emit(Rescale, emit(MulPlain, step.out, factor(bits))) if bits else step.out
            value = emit(Bootstrap, value)
            for _ in range(bits):
                value = emit(Add, value, value)
            fresh[source] = value
        if source in refresh and source in chain.rotated:
            root, offset = chain.rotated[source]
            fresh[source] = emit(Rotate, fresh[root], offset)
    return replace(plan, steps=tuple(steps), operands=tuple(operands)), tuple(plains)
