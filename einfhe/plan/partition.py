"""Split a plan into independent parts: the backward slices of its output ciphertexts, shared work kept together.

    parts = partition(plan, max_parts=8)        # each part.plan is a valid Plan over a subset of the outputs
    outs = [execute(part.plan, backend, ciphers, plains) for part in parts]
    assemble(plan, parts, outs) == execute(plan, backend, ciphers, plains)

Two outputs land in one part when their backward slices share a step other than a `Load` (so no ciphertext
work is ever done twice); the remaining groups are independent tasks (tiles of a tensor, rows of a batched
layer, independent contractions). With `max_parts`, groups are packed into that many parts by the longest
processing time rule (Graham 1969), weighting each step by the cost model's price of its op.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from ..errors import PlanError
from .cost import CostModel, bootstrap_seconds, load_cost_model, ring_for, step_prices
from .operands import Diagonals
from .plan import Plan
from .steps import Load, PlainSlice, PlainTensor

__all__ = ["Part", "partition", "assemble", "plain_program_of", "shares_plaintexts"]


@dataclass(frozen=True)
class Part:
    """A sub-plan computing the original plan's outputs at `positions` (in the order of `plan.outputs`).

    `plan.output_layout` is the whole original output's layout: `positions` say which of its ciphertexts
    this part produces."""

    plan: Plan
    positions: tuple[int, ...]

    @property
    def reads(self) -> tuple[tuple[int, int], ...]:
        """The (operand, ciphertext) pairs this part loads, sorted: the only input ciphertexts it needs."""
        return tuple(sorted({(s.operand, s.ct) for s in self.plan.steps if isinstance(s, Load)}))


def _producers(plan: Plan) -> dict[int, int]:
    """Value -> index of the step that defines it, checking the plan is SSA with defined outputs."""
    producer: dict[int, int] = {}
    for index, step in enumerate(plan.steps):
        missing = [a for a in step.args if a not in producer]
        if missing:
            raise PlanError(f"step {index} ({step.op}) reads undefined values {missing}", spec=plan.spec)
        if step.out in producer:
            raise PlanError(f"value {step.out} is defined twice (steps {producer[step.out]} and {index})",
                            spec=plan.spec)
        producer[step.out] = index
    undefined = [v for v in plan.outputs if v not in producer]
    if undefined:
        raise PlanError(f"outputs {undefined} are not computed by any step", spec=plan.spec)
    return producer


def _slice(plan: Plan, producer: dict[int, int], value: int) -> set[int]:
    """Indices of the steps `value` depends on (its backward slice), itself included."""
    seen, stack = set(), [producer[value]]
    while stack:
        index = stack.pop()
        if index not in seen:
            seen.add(index)
            stack.extend(producer[a] for a in plan.steps[index].args)
    return seen


def _groups(plan: Plan, slices: list[set[int]]) -> list[list[int]]:
    """Output positions grouped so that no non-Load step belongs to two groups (union-find over shared steps)."""
    parent = list(range(len(slices)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[int, int] = {}
    for position, steps in enumerate(slices):
        for index in steps:
            if isinstance(plan.steps[index], Load):
                continue
            other = owner.setdefault(index, position)
            parent[root(position)] = root(other)
    groups: dict[int, list[int]] = {}
    for position in range(len(slices)):
        groups.setdefault(root(position), []).append(position)
    return list(groups.values())


def _pack(groups: list[list[int]], weights: list[float], bins: int) -> list[list[int]]:
    """Greedy longest-processing-time packing of weighted groups into at most `bins` bins."""
    heap = [(0.0, b, []) for b in range(min(bins, len(groups)))]
    for weight, group in sorted(zip(weights, groups), key=lambda wg: (-wg[0], wg[1][0])):
        load, b, members = heapq.heappop(heap)
        heapq.heappush(heap, (load + weight, b, members + group))
    return [sorted(members) for _, _, members in heap if members]


def _group_seconds(plan: Plan, indices: list[int], model: CostModel, levels: dict) -> float:
    """The cost model's seconds for the steps of `plan` at `indices`, run on their own: a plaintext that
    other parts also take is encoded again by this one (its first use priced cold, later ones cached); a
    bootstrap at its measured seconds at the plan's slot count."""
    depth = max(1, plan.depth)
    steps = [plan.steps[i] for i in indices]
    prices = step_prices(model, steps, ring_for(plan.slots, depth), depth, levels, plan.slots)
    return sum(bootstrap_seconds(plan.slots) if step.op == "bootstrap" else price
               for step, price in zip(steps, prices))


def plain_program_of(plan: Plan, steps: list) -> tuple:
    """The plain ops the given steps need, transitively, in the original order."""
    needed = {s.plain.name for s in steps if isinstance(getattr(s, "plain", None), (PlainTensor, PlainSlice))}
    kept = []
    for op in reversed(plan.plain_program):
        if op.out in needed:
            kept.append(op)
            needed.update([op.src] if isinstance(op, Diagonals) else op.args)
    return tuple(reversed(kept))


def _output_groups(plan: Plan) -> tuple[list[set[int]], list[list[int]]]:
    """The backward slice of each output and the output positions grouped by shared (non-Load) steps."""
    producer = _producers(plan)
    slices = [_slice(plan, producer, value) for value in plan.outputs]
    return slices, _groups(plan, slices)


def shares_plaintexts(plan: Plan) -> bool:
    """True when two independent groups of outputs take the same plaintext: every part holding one of them
    encodes it again (a diagonal of a plain matrix taken by every column tile of a cipher one)."""
    slices, groups = _output_groups(plan)
    owner: dict = {}
    for group, positions in enumerate(groups):
        for index in set().union(*(slices[p] for p in positions)):
            plain = getattr(plan.steps[index], "plain", None)
            if plain is not None and owner.setdefault(plain, group) != group:
                return True
    return False


def partition(plan: Plan, max_parts: int | None = None, model: CostModel | None = None) -> tuple[Part, ...]:
    """Split `plan` into parts whose outputs have disjoint ciphertext work (at most `max_parts` of them)."""
    if max_parts is not None and max_parts < 1:
        raise PlanError(f"max_parts must be at least 1, got {max_parts}", spec=plan.spec)
    slices, groups = _output_groups(plan)
    if max_parts is not None and len(groups) > max_parts:
        model, levels = model or load_cost_model(), plan.levels()
        weights = [_group_seconds(plan, sorted(set().union(*(slices[p] for p in g))), model, levels) for g in groups]
        groups = _pack(groups, weights, max_parts)
    parts = []
    for positions in sorted(groups):
        indices = sorted(set().union(*(slices[p] for p in positions)))
        steps = [plan.steps[i] for i in indices]
        sub = Plan(plan.spec, plan.slots, plan.operands, plain_program_of(plan, steps), tuple(steps),
                   tuple(plan.outputs[p] for p in positions), plan.output_layout, plan.strategy)
        parts.append(Part(sub, tuple(positions)))
    return tuple(parts)


def assemble(plan: Plan, parts: tuple[Part, ...], results: list[list]) -> list:
    """The outputs of `plan`, in order, from each part's outputs (`results[i]` belongs to `parts[i]`)."""
    if len(results) != len(parts):
        raise PlanError(f"{len(results)} result lists for {len(parts)} parts", spec=plan.spec)
    outputs: list = [None] * len(plan.outputs)
    filled = [False] * len(plan.outputs)
    for part, values in zip(parts, results):
        if len(values) != len(part.positions):
            raise PlanError(f"a part of {len(part.positions)} outputs returned {len(values)}", spec=plan.spec)
        for position, value in zip(part.positions, values):
            if filled[position]:
                raise PlanError(f"output {position} is produced by two parts", spec=plan.spec)
            outputs[position], filled[position] = value, True
    missing = [p for p, ok in enumerate(filled) if not ok]
    if missing:
        raise PlanError(f"outputs {missing} are produced by no part", spec=plan.spec)
    return outputs
