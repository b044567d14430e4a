"""The cost model: measured prices of each SIMD op per ring dimension, depth and level, and what they make of
a plan (estimated seconds per op kind, client encryption, bytes uploaded, key bytes).

Prices come from `einfhe calibrate` (`einfhe.tools.calibrate`), stored as JSON in the package
(`einfhe/data/costs.json`); nothing here is a guessed constant. A ring or depth that was not calibrated is
priced from the nearest calibrated one, scaled by N log N (ring) and by the number of RNS towers (level).
A plaintext product or sum whose plaintext an earlier step of the plan encoded at the same level, and that the
backend's plaintext cache still holds (a model of its least-recently-used eviction), is priced as a cached op:
the encoding is most of a cold plaintext product (calibrated: ~0.2 of 1.9 ms at N=2^14).
An op that switches keys, priced for a given parameter set, is scaled from the calibrated context's key shape to
that set's digits and towers (`einfhe.plan.keyswitch`); without one it keeps its calibrated price. Evaluation keys
on a given parameter set (or the one a bootstrapped plan derives) are sized from its key-switching digits and
towers, with bootstrapping's keys counted as measured (`evaluation_key_bytes`, `BOOTSTRAP_KEYS`).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import ParameterError, PlanError
from ..params import Parameters
from .keyswitch import KEY_SWITCHING_OPS, bootstrap_parameters, calibrated_shape, key_switching_work
from .steps import value_levels

__all__ = ["CostModel", "Estimate", "EncodedPlaintexts", "load_cost_model", "estimate_plan", "lowering_seconds",
           "ring_for", "key_depth", "step_seconds", "step_prices", "critical_path", "PRICED_OPS",
           "PLAINTEXT_CACHE_BYTES", "encoded_plaintext_bytes", "cached_op", "BOOTSTRAP_SECONDS", "bootstrap_seconds",
           "BOOTSTRAP_KEYS", "bootstrap_key_count", "key_switching_key_bytes", "evaluation_key_bytes"]

# ops priced by calibration; `mask` is a mul_plain, `load` is free (the ciphertext is already there); a `_cached`
# op is the plaintext op with its plaintext already encoded
PRICED_OPS = ("mul_plain", "add_plain", "mul", "add", "sub", "rotate", "hoist", "rotate_hoisted", "rescale",
              "level_reduce", "encrypt", "decrypt", "mul_plain_cached", "add_plain_cached")
_ALIAS = {"mask": "mul_plain"}
_CACHED = {"mul_plain": "mul_plain_cached", "mask": "mul_plain_cached", "add_plain": "add_plain_cached"}
_COLD = {"mul_plain_cached": "mul_plain", "add_plain_cached": "add_plain"}  # for tables calibrated without them
# the bytes of encoded plaintexts a backend keeps (`einfhe.backends.plaintext_cache`)
PLAINTEXT_CACHE_BYTES = 64 << 20


def cached_op(op: str) -> str:
    """The priced op of `op` with its plaintext already encoded (`op` itself where it takes no plaintext)."""
    return _CACHED.get(op, op)


def encoded_plaintext_bytes(ring_dim: int, towers: int, slots: int) -> int:
    """Bytes of one encoded plaintext: an NTT polynomial per RNS tower and its slot values."""
    return towers * ring_dim * 8 + 16 * slots


# Seconds of one OpenFHE bootstrap at ring 2^16 by slot count, one thread, measured by bench/bootstrap_bench.py on
# the shared 2-core machine (BENCHMARKS.md, "Bootstrapping at 128-bit"; noisy, up to 2x); other slot counts are
# interpolated in log2(slots).
BOOTSTRAP_SECONDS = {64: 13.45, 1024: 24.94, 8192: 20.49}


def bootstrap_seconds(slots: int, table: dict | None = None) -> float:
    """Seconds of one bootstrap of a ciphertext with `slots` slots (interpolated in log2(slots) in `table`)."""
    table = table or BOOTSTRAP_SECONDS
    points = sorted(table.items())
    x = math.log2(max(1, slots))
    if x <= math.log2(points[0][0]):
        return float(points[0][1])
    for (s0, t0), (s1, t1) in zip(points, points[1:]):
        x0, x1 = math.log2(s0), math.log2(s1)
        if x <= x1:
            return float(t0 + (t1 - t0) * (x - x0) / (x1 - x0))
    return float(points[-1][1])


# Automorphism keys OpenFHE's EvalBootstrapKeyGen makes at ring 2^16 with level budget (2, 2), by slot count, as
# counted by bench/bootstrap_bench.py (BENCHMARKS.md, "Bootstrapping at 128-bit" and the digits CNN section): the
# CoeffsToSlots and SlotsToCoeffs rotations, the sparse-slot ones and the conjugation key. A measured count, not
# OpenFHE's index formula: other slot counts take the nearest measured one (the larger on a tie in log2), and a
# smaller ring, which needs fewer sparse-slot rotations, gets the 2^16 count as an upper estimate.
BOOTSTRAP_KEYS = {64: 29, 128: 43, 1024: 41, 8192: 85}


def bootstrap_key_count(slots: int) -> int:
    """Automorphism keys OpenFHE's bootstrapping makes for `slots` slots (BOOTSTRAP_KEYS, the nearest slot count)."""
    x = math.log2(max(1, slots))
    return BOOTSTRAP_KEYS[min(BOOTSTRAP_KEYS, key=lambda s: (abs(math.log2(s) - x), -s))]


def key_switching_key_bytes(params: Parameters) -> int:
    """Bytes of one key-switching key (relinearization or rotation) of `params`: a pair of polynomials per digit,
    each over the chain's and P's towers, 8 bytes a coefficient (OpenFHE's serialization adds about 1-2%)."""
    digits, q_towers, p_towers = params.key_switching_towers
    return 2 * digits * (q_towers + p_towers) * params.ring_dim * 8


def evaluation_key_bytes(params: Parameters, rotations: int) -> int:
    """Bytes of the evaluation keys of `params` for `rotations` rotation keys: the relinearization key, those, and
    bootstrapping's keys where `params` bootstraps (counted apart even where a plan's rotation is one of them)."""
    keys = 1 + rotations + (bootstrap_key_count(params.slots) if params.bootstrap else 0)
    return keys * key_switching_key_bytes(params)


@dataclass(frozen=True)
class CostModel:
    """Measured seconds per op, keyed ring -> depth -> level -> op, and measured sizes in bytes."""

    prices: dict
    ciphertext_bytes: dict
    rotation_key_bytes: dict
    relin_key_bytes: dict
    machine: dict

    @staticmethod
    def _ring(table: dict, ring_dim: int) -> int:
        """The calibrated ring nearest `ring_dim` (in log scale)."""
        return min((int(r) for r in table), key=lambda r: abs(math.log2(r) - math.log2(ring_dim)))

    def _lookup(self, table: dict, ring_dim: int, depth: int, level: int) -> tuple[dict, int, int, int]:
        """The calibrated row nearest (ring, depth, level), its ring and depth, and its ciphertext's RNS towers."""
        ring = self._ring(table, ring_dim)
        by_depth = table[str(ring)]
        near = min((int(k) for k in by_depth), key=lambda k: abs(k - depth))
        by_level = by_depth[str(near)]
        lvl = min(max(0, near + 1 - max(1, depth + 1 - level)), max(int(k) for k in by_level))
        return by_level[str(lvl)], ring, near, near + 1 - lvl

    def price(self, op: str, ring_dim: int, depth: int, level: int, shape: tuple | None = None) -> float:
        """Seconds for one `op` on a ciphertext at `level` of a context of `depth` levels in ring `ring_dim`, an op
        that switches keys scaled to keys of `shape` (digits, Q towers, P towers) where given (`keyswitch`)."""
        op = _ALIAS.get(op, op)
        if op == "load":
            return 0.0
        if not 0 <= level <= depth:
            raise ParameterError(f"level {level} is outside the {depth} levels of the parameters priced: a plan "
                                 "deeper than its parameters (derive them for the plan's depth, or bootstrap)",
                                 level=level, depth=depth)
        if op not in PRICED_OPS:
            raise PlanError(f"the cost model has no price for op {op!r}; priced ops: {', '.join(PRICED_OPS)}")
        row, ring, near, calibrated = self._lookup(self.prices, ring_dim, depth, level)
        if op in _COLD and op not in row:
            return self.price(_COLD[op], ring_dim, depth, level, shape)
        if op not in row:  # no rescale or level drop is measured at the last level: take the level above
            row, ring, near, calibrated = self._lookup(self.prices, ring_dim, depth, level - 1)
        towers = max(1, depth + 1 - level)
        scale = towers / calibrated
        if shape is not None and op in KEY_SWITCHING_OPS:
            scale = key_switching_work(shape, towers) / key_switching_work(calibrated_shape(ring, near), calibrated)
        return float(row[op]) * scale * (ring_dim * math.log2(ring_dim)) / (ring * math.log2(ring))

    def ct_bytes(self, ring_dim: int, depth: int, level: int) -> int:
        """Bytes of one serialized ciphertext at `level`."""
        row, ring, _, calibrated = self._lookup(self.ciphertext_bytes, ring_dim, depth, level)
        return int(row["bytes"] * max(1, depth + 1 - level) / calibrated * ring_dim / ring)

    def key_bytes(self, ring_dim: int, depth: int, rotations: int) -> int:
        """Bytes of the evaluation keys: one relinearization key and `rotations` rotation keys."""
        def one(table):
            ring = self._ring(table, ring_dim)
            by_depth = table[str(ring)]
            near = min((int(k) for k in by_depth), key=lambda k: abs(k - depth))
            return by_depth[str(near)] * (ring_dim / ring) * (depth + 1) / (near + 1)

        return int(one(self.relin_key_bytes) + rotations * one(self.rotation_key_bytes))

    @classmethod
    def from_json(cls, data: dict) -> "CostModel":
        """A cost model from `einfhe calibrate`'s JSON dict."""
        if data.get("format") != "einfhe.costs/1":
            raise ParameterError(f"not an einfhe cost table (format {data.get('format')!r})")
        try:
            return cls(data["prices"], data["ciphertext_bytes"], data["rotation_key_bytes"],
                       data["relin_key_bytes"], data.get("machine", {}))
        except KeyError as exc:
            raise ParameterError(f"malformed cost table: missing {exc}") from exc


@lru_cache(maxsize=8)
def load_cost_model(path: str | None = None) -> CostModel:
    """The calibrated cost model (the package's `data/costs.json` unless `path` names another table)."""
    if path is None:
        text = resources.files("einfhe").joinpath("data/costs.json").read_text()
    else:
        text = Path(path).read_text()
    return CostModel.from_json(json.loads(text))


class EncodedPlaintexts:
    """The plaintexts a backend's cache holds as a plan runs, step by step: a model of its least-recently-used
    eviction within `capacity` bytes, keyed by the step's plaintext and level (the cache keys by slot values and
    level, so this never counts a hit the backend would miss)."""

    def __init__(self, ring_dim: int, chain: int, slots: int, capacity: int = PLAINTEXT_CACHE_BYTES) -> None:
        self.ring_dim, self.chain, self.slots, self.capacity = ring_dim, chain, slots, capacity
        self._entries: OrderedDict[tuple, int] = OrderedDict()
        self._used = 0

    def copy(self) -> "EncodedPlaintexts":
        """An independent copy of this state (to return to after trying something)."""
        other = EncodedPlaintexts(self.ring_dim, self.chain, self.slots, self.capacity)
        other._entries, other._used = self._entries.copy(), self._used
        return other

    def reused(self, step, level: int) -> bool:
        """True when `step` takes a plaintext still encoded from an earlier step; records this use either way."""
        plain = getattr(step, "plain", None)
        if plain is None:
            return False
        key = (plain, level)
        if key in self._entries:
            self._entries.move_to_end(key)
            return True
        size = encoded_plaintext_bytes(self.ring_dim, max(1, self.chain + 1 - level), self.slots)
        if size <= self.capacity:
            self._entries[key] = size
            self._used += size
            while self._used > self.capacity:
                self._used -= self._entries.popitem(last=False)[1]
        return False


def step_seconds(model: CostModel, step, ring_dim: int, depth: int, levels: dict, reused: bool = False,
                 shape: tuple | None = None) -> float:
    """Seconds of one plan step at the level it works on: a rescale or level drop at its input's level (as
    calibrated: it drops that level's tower), every other op at its output's level; a plaintext op whose
    plaintext is `reused` at its cached price; a key switch with keys of `shape` where given."""
    level = levels[step.src] if step.op in ("rescale", "level_reduce") else levels[step.out]
    op = cached_op(step.op) if reused else step.op
    return model.price(op, ring_dim, depth, level, shape)


def step_prices(model: CostModel, steps, ring_dim: int, depth: int, levels: dict, slots: int,
                chain: int | None = None, shape: tuple | None = None) -> list[float]:
    """Seconds of each priced step in order (0 for an op the model does not price), a plaintext op at its cached
    price where an earlier step encoded its plaintext (`EncodedPlaintexts`, keys spanning `chain` levels), a key
    switch with keys of `shape` where given."""
    encoded = EncodedPlaintexts(ring_dim, depth if chain is None else chain, slots)
    prices = []
    for step in steps:
        if step.op in PRICED_OPS or step.op in _ALIAS or step.op == "load":
            reused = encoded.reused(step, levels[step.out])
            prices.append(step_seconds(model, step, ring_dim, depth, levels, reused, shape))
        else:
            prices.append(0.0)
    return prices


def ring_for(slots: int, depth: int) -> int:
    """The ring dimension a plan of `depth` levels on `slots` slots gets at 128-bit security (2*slots if none)."""
    try:
        return Parameters.derive(depth, slots).ring_dim
    except ParameterError:
        return 2 * slots


@lru_cache(maxsize=256)
def key_depth(slots: int, depth: int, ring_dim: int, small_first_modulus: bool = False) -> int:
    """Levels the evaluation keys of a `depth`-level plan span on the parameters `Context.for_plan` derives for it:
    one more where the ring has room to lift the encryption (a key holds a tower per level of the chain)."""
    try:
        params = Parameters.derive(depth, slots, small_first_modulus=small_first_modulus, lift=True)
    except ParameterError:
        return depth
    return params.total_depth if params.ring_dim == ring_dim else depth


def _plan_ring(plan, depth: int) -> int:
    """The ring `plan` runs on: the one its compilation chose, else the one its slots and depth get."""
    chosen = plan.chosen_ring
    return chosen.ring_dim if chosen is not None else ring_for(plan.slots, depth)


@dataclass(frozen=True)
class Estimate:
    """What the cost model expects of a plan on one parameter set."""

    ring_dim: int
    depth: int
    seconds_by_op: dict
    encrypt_seconds: float
    upload_cts: int
    upload_bytes: int
    keys: int
    key_bytes: int
    unpriced: tuple[str, ...] = ()
    bootstrap_keys: int = 0  # bootstrapping's own keys, counted in key_bytes beside the plan's rotation keys

    @property
    def seconds(self) -> float:
        """Estimated server seconds (the SIMD steps the cost model prices; see `unpriced`)."""
        return float(sum(self.seconds_by_op.values()))


def estimate_plan(plan, params: Parameters | None = None, model: CostModel | None = None) -> Estimate:
    """Estimate `plan`'s seconds per op kind, client encryption time, bytes uploaded and key bytes: its key
    switches priced at the digits and towers of `params` where given (`keyswitch`); the keys of `params` (of the
    set derived for a bootstrapped plan when none is given) by `evaluation_key_bytes`, its digits and towers and
    bootstrapping's keys included; else the calibrated sizes at the plan's ring and depth."""
    model = model or load_cost_model()
    if params is not None and plan.depth > params.depth:
        raise ParameterError(f"the plan needs {plan.depth} levels between refreshes, the parameters have "
                             f"{params.depth}: derive them for the plan's depth, or bootstrap",
                             plan_depth=plan.depth, params_depth=params.depth)
    depth = params.depth if params else max(1, plan.depth)
    ring = params.ring_dim if params else _plan_ring(plan, depth)
    levels = plan.levels()
    by_op: dict[str, float] = {}
    unpriced = sorted({s.op for s in plan.steps} - set(PRICED_OPS) - set(_ALIAS) - {"load"})
    cts = plan.cts_in
    if params is not None:
        chain = params.total_depth
    else:
        chain = depth if plan.bootstraps else key_depth(plan.slots, depth, ring, plan.chosen_ring is not None)
    shape = params.key_switching_towers if params is not None else None
    prices = step_prices(model, plan.steps, ring, depth, levels, plan.slots, chain, shape)
    for step, seconds in zip(plan.steps, prices):
        if step.op not in unpriced:
            by_op[step.op] = by_op.get(step.op, 0.0) + seconds
    key_params = params if params is not None or not plan.bootstraps else bootstrap_parameters(depth, plan.slots)
    key_bytes = (evaluation_key_bytes(key_params, len(plan.rotations)) if key_params is not None
                 else model.key_bytes(ring, chain, len(plan.rotations)))
    return Estimate(
        ring_dim=ring, depth=depth, seconds_by_op=by_op,
        encrypt_seconds=cts * model.price("encrypt", ring, depth, 0),
        upload_cts=cts, upload_bytes=cts * model.ct_bytes(ring, depth, 0),
        keys=len(plan.rotations), key_bytes=key_bytes,
        unpriced=tuple(unpriced),
        bootstrap_keys=bootstrap_key_count(key_params.slots) if key_params is not None and key_params.bootstrap else 0,
    )


def critical_path(plan, model: CostModel | None = None) -> tuple[float, float]:
    """(estimated seconds of all steps, of the longest dependency chain): with unlimited workers a run takes at
    least the second; their ratio is the parallelism the plan offers."""
    model = model or load_cost_model()
    depth = max(1, plan.depth)
    ring, levels = _plan_ring(plan, depth), plan.levels()
    total, finish = 0.0, {}
    for step, seconds in zip(plan.steps, step_prices(model, plan.steps, ring, depth, levels, plan.slots)):
        total += seconds
        finish[step.out] = seconds + max((finish[a] for a in step.args), default=0.0)
    return total, max(finish.values(), default=0.0)


def lowering_seconds(lw, mark, model: CostModel | None = None) -> float:
    """Estimated seconds of what a strategy emitted since `mark`: its server steps plus the client's
    encryption of the cipher operands it asked for (replication by the client is free for the server only)."""
    model = model or load_cost_model()
    steps = lw.builder.steps
    levels = value_levels(steps)
    depth = max(1, max(levels.values(), default=0))
    ring = ring_for(lw.slots, depth)
    server = sum(step_prices(model, steps[mark[0][0]:], ring, depth, levels, lw.slots))
    uploads = sum(layout.num_cts for layout in lw.new_uploads(mark))
    return server + uploads * model.price("encrypt", ring, depth, 0)
