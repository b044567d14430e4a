"""Level planning: where a model's bootstraps go, chosen by cost rather than "bootstrap when out of levels".

The model compiler lowers a model once without bootstraps and records, for every top-level layer, the levels it
consumes, the ciphertexts entering it (what a bootstrap placed before it must refresh), whether a deferred scale
must be applied first (one level), and its steps with the level each reaches (`LayerLevels`). `plan_levels` then
chooses the layers to bootstrap before by dynamic programming over (layer, levels used since the last refresh),
minimising

    sum over bootstraps of (ciphertexts refreshed x seconds of one bootstrap at the slot count)
  + sum over steps of the cost model's price at the level the step runs at (more RNS towers at lower levels;
    a key switch at the digits and towers of the bootstrapped set `max_depth` and the slots derive),

under the constraint that no stretch between refreshes passes `max_depth` levels. This is the level-DAG view of
Orion (Ebel et al., ASPLOS 2025, section 5: bootstrap placement as a shortest path over levels), restricted to
a sequence of blocks: a residual block is one node, so its branch and its skip always share one refresh and the
addition aligns them (the skip drops to the branch's level). `greedy_levels` prices the baseline, a bootstrap
just before the first layer that would not fit. `str(level_plan)` prints the level map: which layer runs at
which levels, where each bootstrap sits, what it costs and why it is there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..params import BOOTSTRAP_CHAIN_LEVELS, BOOTSTRAP_DEPTH
from ..plan import value_levels
from ..plan.cost import bootstrap_seconds, load_cost_model
from ..plan.keyswitch import bootstrap_parameters
from .activation_choice import relu_choice
from .layers import ReLUWithin

__all__ = ["LayerLevels", "LevelPlan", "plan_levels", "greedy_levels", "profile_layer", "PLACEMENTS"]

@dataclass(frozen=True)
class LayerLevels:
    """One top-level layer as lowered without bootstraps: what a level plan needs to know of it."""

    position: int
    name: str
    levels: int
    cts_in: int
    scale_first: bool
    ops: tuple[tuple[str, int], ...]
    choice: str = ""  # for a ReLUWithin: the polynomial chosen and its error


@dataclass(frozen=True)
class LevelPlan:
    """Bootstrap placement over a model's layers, with the level each layer starts at and the costs."""

    placement: str
    layers: tuple[LayerLevels, ...]
    bootstrap_before: tuple[int, ...]
    start_levels: tuple[int, ...]
    max_depth: int
    slots: int
    bootstrap_cost: float
    compute_cost: float

    @property
    def seconds(self) -> float:
        """Estimated seconds: bootstraps plus the steps at their levels."""
        return self.bootstrap_cost + self.compute_cost

    @property
    def first_stretch_levels(self) -> int | None:
        """Levels the program uses before its first bootstrap (a deferred scale applied there included), or None
        when it never bootstraps."""
        if not self.bootstrap_before:
            return None
        first = self.layers[[layer.position for layer in self.layers].index(self.bootstrap_before[0])]
        return _level_before(self, first.position) + first.scale_first

    @property
    def bootstrapped_cts(self) -> int:
        """Ciphertexts refreshed over the whole model."""
        return sum(self.layers[p].cts_in for p in self.bootstrap_before)

    def __str__(self) -> str:
        one = bootstrap_seconds(self.slots)
        lines = [f"level map ({self.placement} placement, at most {self.max_depth} levels between refreshes, "
                 f"{self.slots} slots, one bootstrap {one:.1f} s)"]
        for layer, start in zip(self.layers, self.start_levels):
            if layer.position in self.bootstrap_before:
                left = self.max_depth - _level_before(self, layer.position)
                why = (f"{left} level(s) left, layer needs {layer.levels}" if left < layer.levels + layer.scale_first
                       else f"cheaper here than later: {layer.cts_in} ciphertext(s)")
                lines.append(f"  -- bootstrap {layer.cts_in} ct x {one:.1f} s = {layer.cts_in * one:.1f} s"
                             f"{' (deferred scale applied first, 1 level)' if layer.scale_first else ''}: {why}")
            bar = "." * start + "#" * layer.levels + " " * max(0, self.max_depth - start - layer.levels)
            lines.append(f"  {layer.position:>3} {layer.name:<22} levels {start}->{start + layer.levels} "
                         f"[{bar}] {layer.cts_in} ct in" + (f"  ({layer.choice})" if layer.choice else ""))
        lines.append(f"  total: {len(self.bootstrap_before)} bootstrap point(s), {self.bootstrapped_cts} ciphertexts "
                     f"refreshed, {self.bootstrap_cost:.1f} s bootstrapping + {self.compute_cost:.2f} s compute "
                     f"= {self.seconds:.1f} s")
        return "\n".join(lines)


def profile_layer(lowering, layer, position: int) -> LayerLevels:
    """Lower one layer with the model compiler's `lowering` state (no bootstraps) and record what a level plan
    needs of it."""
    level, start = lowering.level, len(lowering.builder.steps)
    cts = len(lowering.value.cts) if lowering.value is not None else 0
    scale_first, width = not np.all(lowering.pending == 1), lowering.width
    lowering.apply(layer, position)
    levels = value_levels(lowering.builder.steps)
    choice = ""
    if isinstance(layer, ReLUWithin):
        chosen = relu_choice(layer)
        choice = f"{chosen.label}: error {chosen.error:.2g} <= {layer.max_error:g} on +-{layer.bound:g}"
    ops = tuple((s.op, levels[s.out] - level) for s in lowering.builder.steps[start:])
    return LayerLevels(position, f"{type(layer).__name__} {width}->{lowering.width}", lowering.level - level, cts,
                       scale_first, ops, choice)


def _level_before(plan: LevelPlan, position: int) -> int:
    """Levels used since the last refresh just before `position` (before any bootstrap placed there)."""
    index = next(i for i, layer in enumerate(plan.layers) if layer.position == position)
    if index == 0:
        return 0
    previous = plan.layers[index - 1]
    return plan.start_levels[index - 1] + previous.levels


class _Pricer:
    """Seconds of a layer's steps starting at a level since refresh (the cost model, at ring `ring_dim`; key
    switches at the digits and towers of the bootstrapped set `max_depth` and `slots` derive, where it is on that
    ring)."""

    def __init__(self, max_depth: int, slots: int, ring_dim: int, cost_model=None) -> None:
        self.model = cost_model or load_cost_model()
        self.ring, self.total = ring_dim, max_depth + BOOTSTRAP_CHAIN_LEVELS
        params = bootstrap_parameters(max_depth, slots)
        self.shape = params.key_switching_towers if params is not None and params.ring_dim == ring_dim else None
        self.cache: dict = {}

    def layer(self, layer: LayerLevels, start: int, refreshed: bool) -> float:
        """Seconds of `layer` starting `start` levels after a refresh (a fresh input when not `refreshed`)."""
        key = (layer.position, start, refreshed)
        if key not in self.cache:
            base = (BOOTSTRAP_DEPTH if refreshed else 0) + start
            self.cache[key] = sum(
                self.model.price(op, self.ring, self.total, min(self.total, base + level), self.shape)
                for op, level in layer.ops if op not in ("bootstrap", "chebyshev"))
        return self.cache[key]


def _check(layers, max_depth: int) -> None:
    for layer in layers:
        if layer.levels > max_depth or (layer.position and layer.scale_first and layer.levels + 1 > max_depth):
            raise ModelError(f"layer {layer.position} ({layer.name}) needs {layer.levels} level(s), more than the "
                             f"{max_depth} between bootstraps: raise max_depth", layer=layer.position)


def plan_levels(layers: tuple[LayerLevels, ...], max_depth: int, slots: int, *, ring_dim: int = 65536,
                cost_model=None) -> LevelPlan:
    """The cheapest bootstrap placement over `layers` (dynamic programming over levels used since a refresh)."""
    _check(layers, max_depth)
    pricer, one = _Pricer(max_depth, slots, ring_dim, cost_model), bootstrap_seconds(slots)
    # best[(levels used since the last refresh, refreshed yet)] = (cost, bootstraps so far, start levels so far)
    best: dict[tuple[int, bool], tuple[float, tuple[int, ...], tuple[int, ...]]] = {(0, False): (0.0, (), ())}
    for index, layer in enumerate(layers):
        nxt: dict[tuple[int, bool], tuple] = {}
        for (used, refreshed), (cost, boots, starts) in best.items():
            options = [(used, cost, boots, refreshed)]
            if index > 0 and used + layer.scale_first <= max_depth:
                options.append((0, cost + layer.cts_in * one, boots + (layer.position,), True))
            for start, base, placed, fresh in options:
                if start + layer.levels > max_depth:
                    continue
                total = base + pricer.layer(layer, start, fresh)
                state = (start + layer.levels, fresh)
                if state not in nxt or total < nxt[state][0]:
                    nxt[state] = (total, placed, starts + (start,))
        best = nxt
    if not best:
        raise ModelError(f"no bootstrap placement fits {max_depth} levels between refreshes: raise max_depth")
    _, placed, starts = min(best.values(), key=lambda item: item[0])
    return _priced("cost", layers, placed, starts, max_depth, slots, pricer, one)


def greedy_levels(layers: tuple[LayerLevels, ...], max_depth: int, slots: int, *, ring_dim: int = 65536,
                  cost_model=None) -> LevelPlan:
    """The baseline placement: a bootstrap just before the first layer that would pass `max_depth`."""
    _check(layers, max_depth)
    pricer, one = _Pricer(max_depth, slots, ring_dim, cost_model), bootstrap_seconds(slots)
    used, placed, starts = 0, [], []
    for index, layer in enumerate(layers):
        if index > 0 and used + layer.levels > max_depth:
            placed.append(layer.position)
            used = 0
        starts.append(used)
        used += layer.levels
    return _priced("greedy", layers, tuple(placed), tuple(starts), max_depth, slots, pricer, one)


def _priced(placement, layers, placed, starts, max_depth, slots, pricer, one) -> LevelPlan:
    """A LevelPlan with its bootstrap and compute seconds."""
    refreshed, compute = False, 0.0
    for layer, start in zip(layers, starts):
        refreshed = refreshed or layer.position in placed
        compute += pricer.layer(layer, start, refreshed)
    boot = sum(layer.cts_in for layer in layers if layer.position in placed) * one
    return LevelPlan(placement, tuple(layers), tuple(placed), tuple(starts), max_depth, slots, boot, compute)


# bootstrap placements by name (compile_model's `placement`)
PLACEMENTS = {"cost": plan_levels, "greedy": greedy_levels}
