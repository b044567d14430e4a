"""Sequential models (linear layers, activations, residual blocks, products of two encrypted branches) compiled into
one einfhe plan.

Two packings, chosen by `batch`:
- one sample (`batch=None`, or `batch=1`, whose plan packs and unpacks a (1, features) batch): the client packs
  the features replicated for the first layer's joint space;
  each linear layer is an iteration-space matrix-vector product (mul_plain, then rotate-and-sum); a model that
  opens with Linear, Square (or Quadratic), Linear may instead upload its input's monomials of degree 1 and 2 and
  run that block as one plain matrix times them, at depth 1 (einfhe.compiler.quadratic_form), where the cost
  table prices it lower;
- a batch (`batch=B`, B <= slots): samples fill the slots and each feature is its own ciphertext, so a linear
  layer is plaintext-scalar products and additions across ciphertexts, with no rotation at all, and the
  throughput grows with the slot count (the layout of CryptoNets, Gilad-Bachrach et al., ICML 2016).
  A batch costs the same whatever its size, so a small one can cost more than its samples run one by one: then
  `compile_model` warns (`SmallBatchWarning`), with both estimates.

Quantized layers (`IntLinear`: small integer weights and per-row scales) spend no level in the batched
packing: the integer combination is additions and doublings, and the per-row scales are deferred (this needs
the inputs each row combines to share one deferred scale, true after a square for a convolution or a pooling,
whose rows read one channel each). A deferred
scale rides along as a per-channel factor: a bias is divided by it (a free plaintext addition), a square
squares it, a following float layer folds it into its weights, and whatever remains at the end is applied by
the client after decryption (`ModelPlan.unpack_output`). A square activation costs one level, and so does a
quadratic a*x^2 + b*x + c (a least-squares stand-in for ReLU, GELU or SiLU on the input range the export
recorded): its square and its scaled linear term run side by side.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from ..errors import EinfheError, ModelError
from ..layout import Dim, Layout, next_pow2
from ..plan import CipherInput, PlainInput, Plan, chebyshev_levels
from ..params import Parameters
from ..plan.cost import estimate_plan
from .branches import LOWERINGS
from .bounds import SAFE_BOUND, model_bound
from .builder import LATE, RESCALES, Packed, PlanBuilder
from .einsum import DEFAULT_SLOTS
from .activation_choice import relu_choice
from .layers import (ChebyshevActivation, CompositeReLU, IntLinear, Layer, Linear, MatMul, Quadratic, ReLUWithin,
                     Reorder, Residual, Square)
from .levels import PLACEMENTS, profile_layer
from .model_plan import BATCH_INDEX, ModelPlan
from .quadratic_form import QUADRATIC, lower_quadratic_form, quadratic_form
from .rings import AUTO_SLOTS, choose_ring

__all__ = ["Linear", "IntLinear", "Square", "Quadratic", "ChebyshevActivation", "CompositeReLU", "ReLUWithin",
           "Residual", "MatMul", "Reorder", "ModelPlan", "SmallBatchWarning", "compile_model"]



class SmallBatchWarning(UserWarning):
    """A batch too small for the batched packing to pay: its samples run one by one would cost less."""


class _ModelLowering:
    """State of one model compilation: the builder, the current value and its deferred per-channel scale."""

    def __init__(self, n_features: int, batch: int | None, slots: int, max_cts: int,
                 max_depth: int | None = None, late_rescale: bool = False) -> None:
        self.builder = PlanBuilder(slots, max_cts, late_rescale=late_rescale)
        self.max_depth, self.level = max_depth, 0
        self.slots, self.batch = slots, batch
        self.letters = iter("abcdefghijklmnopqrstuvwxy")
        self.current, self.width = next(self.letters), int(n_features)
        self.sizes = {self.current: self.width}
        self.pending = np.ones(self.width)
        self.operands: list = []
        self.plains: list[np.ndarray] = []
        self.value: Packed | None = None
        self.extra = BATCH_INDEX if batch is not None else ""
        if batch is not None:
            self.sizes[BATCH_INDEX] = batch
            layout = self.batched_layout(self.current, self.width)
            self.operands.append(CipherInput(0, layout))
            self.value = self.builder.load(0, layout)

    def batched_layout(self, letter: str, width: int) -> Layout:
        """The batched packing's layout of `width` features named `letter`: one ciphertext per feature (a power of
        two of them, the padding zero), the samples in the slots."""
        dims = (Dim(letter, next_pow2(width), "axis", width), Dim(BATCH_INDEX, self.slots, "axis", self.batch))
        return Layout(dims, self.slots, letter + BATCH_INDEX, (width, self.batch))

    def apply(self, layer: Layer, position: int) -> None:
        """Lower one layer onto the current value."""
        if isinstance(layer, ReLUWithin):  # the cheapest polynomial within the layer's error budget
            layer = relu_choice(layer).activation
        if isinstance(layer, (Square, Quadratic, ChebyshevActivation, CompositeReLU)):
            if self.value is None:
                raise ModelError("a model starts with a Linear layer")
            if isinstance(layer, Square):
                self.square()
            elif isinstance(layer, Quadratic):
                self.quadratic(layer)
            elif isinstance(layer, CompositeReLU):
                self.relu(layer)
            else:
                self.chebyshev(layer)
            return
        if type(layer) in LOWERINGS:
            LOWERINGS[type(layer)](self, layer, position)
            return
        if not isinstance(layer, (Linear, IntLinear)):
            raise ModelError(f"unsupported layer {type(layer).__name__}; supported: Linear, IntLinear, Square, "
                             "Quadratic, ChebyshevActivation, CompositeReLU, ReLUWithin, Residual, MatMul, Reorder",
                             layer=position)
        weight = np.asarray(layer.weight, dtype=np.float64)
        if weight.ndim != 2 or weight.shape[1] != self.width:
            raise ModelError(f"layer {position} expects {weight.shape[-1]} inputs but receives {self.width}",
                             layer=position)
        integer_path = (isinstance(layer, IntLinear) and layer.input_scale is None and self.batch is not None
                        and self.uniform_rows(layer.q) is not None and np.all(np.asarray(layer.scale) != 0))
        out = self.int_linear(layer) if integer_path else self.linear(weight)
        if layer.bias is not None:
            bias = np.asarray(layer.bias, dtype=np.float64)
            if bias.shape != (weight.shape[0],):
                raise ModelError(f"layer {position}'s bias must have shape ({weight.shape[0]},)", layer=position)
            self.bias(bias)
        self.current, self.width = out, weight.shape[0]

    def spend(self, levels: int) -> None:
        """Account for an operation of `levels` levels since the input or the last bootstrap."""
        self.level += levels
        if self.max_depth is not None and self.level > self.max_depth:
            raise ModelError(f"the level plan leaves {self.max_depth} levels between bootstraps and the model needs "
                             f"{self.level}: raise max_depth")

    def refresh(self) -> None:
        """Bootstrap the current value, a deferred scale applied first (one level): bootstrapping wants small values."""
        if not np.all(self.pending == 1):
            self.value = self.builder.scale(self.value, self.channel_plain(self.pending))
            self.pending = np.ones_like(self.pending)
        self.value = self.builder.bootstrap(self.value)
        self.level = 0

    def channel_plain(self, per_channel: np.ndarray) -> str:
        """Register one value per channel as a plain operand (repeated over the batch in the batched packing)."""
        values = np.asarray(per_channel, dtype=np.float64)
        return self.plain(values if self.batch is None else np.repeat(values[:, None], self.batch, axis=1))

    def plain(self, array: np.ndarray) -> str:
        """Register a plain operand and return its name in the plan."""
        self.plains.append(np.asarray(array, dtype=np.float64))
        self.operands.append(PlainInput(len(self.operands), self.plains[-1].shape))
        return f"op{len(self.operands) - 1}"

    def linear(self, weight: np.ndarray) -> str:
        """Float linear layer (deferred scale folded into the weight): one level."""
        self.spend(1)
        weight = weight * self.pending[None, :]
        out = next(self.letters)
        self.sizes[out] = weight.shape[0]
        self.pending = np.ones(weight.shape[0])
        if self.batch is not None:
            self.value = self._sparse_batched_linear(weight, out)
            return out
        builder = self.builder
        joint = builder.joint_layout(out + self.extra, self.current, self.sizes, self.value.layout if self.value else None)
        if self.value is None:
            x_layout = builder.restrict(joint, self.current, (self.width,))
            self.operands.append(CipherInput(0, x_layout))
            loaded = builder.load(0, x_layout)
            left = [loaded.cts[c] for c in builder.ct_map(joint, x_layout)]
        else:
            left = builder.align(self.value, joint)
        refs = builder.plain_refs(self.plain(weight), out + self.current, weight.shape, joint)
        reduced = builder.multiply_reduce(left, refs, joint, self.current)
        shape = (weight.shape[0],) + ((self.batch,) if self.batch else ())
        self.value = Packed(reduced.cts, Layout(reduced.layout.dims, self.slots, out + self.extra, shape))
        return out

    def _sparse_batched_linear(self, weight: np.ndarray, out: str) -> Packed:
        """Each output ciphertext is the sum of its nonzero weights times input ciphertexts, rescaled once."""
        builder = self.builder
        joint = builder.joint_layout(out + self.extra, self.current, self.sizes, self.value.layout)
        left = builder.align(self.value, joint)
        refs = builder.plain_refs(self.plain(weight), out + self.current, weight.shape, joint)
        inputs = self.value.layout.num_cts
        rows = []
        for o in range(next_pow2(weight.shape[0])):
            cts = [o * inputs + f for f in range(min(inputs, weight.shape[1]))
                   if o < weight.shape[0] and weight[o, f] != 0]
            rows.append(builder.weighted_sum([left[c] for c in cts], [refs[c] for c in cts], left[0]))
        return Packed(tuple(rows), self.batched_layout(out, weight.shape[0]))

    def int_linear(self, layer: IntLinear) -> str:
        """Integer layer in the batched packing: additions only, the row scales deferred (no level)."""
        q = np.asarray(layer.q)
        out = next(self.letters)
        self.sizes[out] = q.shape[0]
        padded = next_pow2(q.shape[0])
        inputs = list(self.value.cts)
        rows = [self.builder.int_combination(inputs, q[o]) if o < q.shape[0]
                else self.builder.int_combination(inputs, np.zeros(len(inputs), dtype=int)) for o in range(padded)]
        self.value = Packed(tuple(rows), self.batched_layout(out, q.shape[0]))
        self.pending = self.uniform_rows(q) * np.asarray(layer.scale, dtype=np.float64)
        return out

    def uniform_rows(self, q: np.ndarray) -> np.ndarray | None:
        """Per output row, the one deferred scale all its inputs share, or None when a row mixes scales."""
        common = np.ones(q.shape[0])
        for row in range(q.shape[0]):
            used = self.pending[np.asarray(q[row]) != 0]
            if used.size and not np.allclose(used, used[0], rtol=1e-12, atol=0):
                return None
            common[row] = used[0] if used.size else 1.0
        return common

    def bias(self, bias: np.ndarray) -> None:
        """Add a bias, divided by the deferred scale (a plaintext addition, no level)."""
        scaled = np.asarray(bias, dtype=np.float64) / self.pending
        self.value = self.builder.add_plain(self.value, self.channel_plain(scaled))

    def square(self) -> None:
        """Square every ciphertext (one level); the deferred scale squares too."""
        self.spend(1)
        self.value = self.builder.square(self.value)
        self.pending = self.pending ** 2

    def chebyshev(self, layer: ChebyshevActivation) -> None:
        """f(p * s) on stored s with deferred scale p: the same series on [lo/p, hi/p] (odd terms negated where
        p < 0), one domain per ciphertext in the batched packing; a single shared scale otherwise."""
        if self.batch is None and not np.all(self.pending == self.pending[0]):
            self.spend(1)
            self.value = self.builder.scale(self.value, self.channel_plain(self.pending))
            self.pending = np.ones_like(self.pending)
        self.spend(chebyshev_levels(len(layer.coeffs) - 1))
        flipped = tuple(c * (-1) ** k for k, c in enumerate(layer.coeffs))
        series = []
        for i in range(len(self.value.cts)):
            p = self.pending[min(i, len(self.pending) - 1)] if self.batch is not None else self.pending[0]
            if p > 0:
                series.append((layer.coeffs, layer.lo / p, layer.hi / p))
            else:
                series.append((flipped, layer.hi / p, layer.lo / p))
        self.value = self.builder.chebyshev(self.value, series)
        self.pending = np.ones_like(self.pending)

    def relu(self, layer: CompositeReLU) -> None:
        """x * (1 + s(x)) / 2, s the composite sign (einfhe.compiler.activations): its stages as Chebyshev series on
        the value, one product with the value itself, and the value added back; the 1/2 joins the deferred scale."""
        skip, skip_pending = self.value, self.pending
        for coeffs, lo, hi in layer.stages:
            self.chebyshev(ChebyshevActivation(coeffs, lo, hi))
        self.spend(1)
        product = self.builder.multiply(list(skip.cts), list(self.value.cts))
        self.value = self.builder.add_values(Packed(tuple(product), skip.layout), skip)
        self.pending = skip_pending / 2

    def quadratic(self, layer: Quadratic) -> None:
        """a*x^2 + b*x + c in one level: with x = p*s (p deferred), it is a*p^2 * (s^2 + b/(a*p) * s + c/(a*p^2));
        the square and the scaled copy run side by side, and a*p^2 becomes the new deferred scale."""
        self.spend(1)
        p = self.pending
        if layer.a == 0:
            self.pending = layer.b * p
            self.bias(np.full(p.shape, layer.c))
            return
        linear = self.builder.scale(self.value, self.channel_plain(layer.b / (layer.a * p)))
        self.value = self.builder.add_values(self.builder.square(self.value), linear)
        self.pending = layer.a * p**2
        self.bias(np.full(p.shape, layer.c))


def compile_model(layers: list[Layer], n_features: int, *, batch: int | None = None, slots: int | str | None = None,
                  max_cts: int = 1 << 16, max_depth: int | None = None, placement: str = "cost",
                  ring_dim: int = 65536, rescale: str = "early", input_bound: float | None = None) -> ModelPlan:
    """Compile a sequential model on inputs of `n_features` into one plan (see the module docstring).

    With `max_depth` (levels between bootstraps; off by default: models that fit a practical ring need none), a
    level plan places the bootstraps: `placement="cost"` where they cost least (einfhe.compiler.levels, priced
    at `ring_dim`), `"greedy"` just before the first layer that would not fit. `ModelPlan.levels` holds it.
    `rescale="late"` sums each linear layer's rotations before its rescale (einfhe.compile's option).
    `slots="auto"` compiles for 4,096 and 8,192 slots and keeps the program whose 128-bit ring is cheapest by the
    cost table, as `einfhe.compile` does (N=2^13 holds depths 1-2 there, for results below 2^14 in magnitude); the
    default (None) is "auto" where `input_bound` (the largest |feature| the client encrypts) bounds the outputs within
    `einfhe.compiler.bounds.SAFE_BOUND`, else 8,192 slots."""
    if not layers or (batch in (None, 1) and not isinstance(layers[0], (Linear, IntLinear))):
        raise ModelError("a model starts with a Linear layer (the batched packing, batch=..., takes any first layer)")
    if placement not in PLACEMENTS:
        raise ModelError(f"unknown bootstrap placement {placement!r}; valid placements: {', '.join(PLACEMENTS)}")
    if rescale not in RESCALES:
        raise ModelError(f"unknown rescale placement {rescale!r}; valid placements: {', '.join(RESCALES)}")
    if input_bound is not None and not (np.isfinite(input_bound) and input_bound > 0):
        raise ModelError(f"input_bound must be a positive finite number, got {input_bound!r}")
    if slots is None:
        bound = model_bound(layers, n_features, input_bound)
        slots = AUTO_SLOTS if bound is not None and bound <= SAFE_BOUND else DEFAULT_SLOTS
    options = dict(slots=slots, max_cts=max_cts, max_depth=max_depth, placement=placement, ring_dim=ring_dim,
                   late_rescale=rescale == LATE)
    if slots != AUTO_SLOTS:
        return _compile_packing(layers, n_features, batch, options)
    programs = {}  # every candidate ring compiled and priced, the cheapest kept (einfhe.compiler.rings)

    def compile_at(candidate: int) -> Plan:
        programs[candidate] = _compile_packing(layers, n_features, batch, dict(options, slots=candidate), True)
        return programs[candidate].plan

    plan = choose_ring(compile_at)
    return replace(programs[plan.slots], plan=plan)


def _compile_packing(layers, n_features: int, batch: int | None, options: dict, small_ring: bool = False) -> ModelPlan:
    """The one-sample program (batch None or 1) or the batched one, at `options["slots"]` slots; `small_ring`: the
    plans are priced on the rings `slots="auto"` gives them (a small first modulus where it fits)."""
    if batch is not None and not 1 <= batch <= options["slots"]:
        raise ModelError(f"the batch must lie in 1..{options['slots']} (the slot count)", batch=batch)
    if batch in (None, 1):  # the one-sample program (no samples to share the slots with)
        program = _one_sample(layers, n_features, options, small_ring)
        return replace(program, batch=1) if batch == 1 else program
    program = _compile_program(layers, n_features, batch, **options)
    _warn_if_small(program, layers, n_features, options)
    return program


def _seconds(plan: Plan, small_ring: bool = False) -> float:
    """The plan's estimated seconds (server steps and the client's encryption), on the ring `slots="auto"` would
    give it where `small_ring`."""
    params = Parameters.derive(max(1, plan.depth), plan.slots, small_first_modulus=True) if small_ring else None
    estimate = estimate_plan(plan, params)
    return estimate.seconds + estimate.encrypt_seconds


def _one_sample(layers, n_features: int, options: dict, small_ring: bool = False) -> ModelPlan:
    """The one-sample program layer by layer, or with its opening quadratic block collapsed (the client uploads
    its input's monomials, einfhe.compiler.quadratic_form) where that applies and is estimated cheaper."""
    program = _compile_program(layers, n_features, None, **options)
    collapsed = None if options["max_depth"] is not None else _compile_program(layers, n_features, None, expand=True,
                                                                              **options)
    if collapsed is None or _seconds(program.plan, small_ring) <= _seconds(collapsed.plan, small_ring):
        return program
    return collapsed


def _warn_if_small(batched: "ModelPlan", layers, n_features: int, options: dict) -> None:
    """Warn when running the batch's samples one by one through the one-sample program is estimated cheaper."""
    try:
        single = _one_sample(layers, n_features, options)
    except EinfheError:  # no one-sample program for this model (a residual block): nothing to compare
        return
    per_batch, one_by_one = _seconds(batched.plan), batched.batch * _seconds(single.plan)
    if one_by_one < per_batch:
        warnings.warn(f"a batch of {batched.batch} in the batched packing is estimated at {1e3 * per_batch:.0f} ms, its "
                      f"samples one by one at {1e3 * one_by_one:.0f} ms: compile with batch=None (or 1) and run each "
                      "sample, or fill the batch", SmallBatchWarning, stacklevel=3)


def _compile_program(layers, n_features: int, batch: int | None, *, slots: int, max_cts: int, max_depth,
                     placement: str, ring_dim: int, late_rescale: bool = False, expand: bool = False):
    """Lower the layers in the packing `batch` chooses (None: one sample), bootstraps placed by `placement`; with
    `expand`, the opening quadratic block collapsed onto the input's monomials (None where it does not apply)."""
    input_scale = None
    if isinstance(layers[0], IntLinear) and layers[0].input_scale is not None:
        input_scale = np.asarray(layers[0].input_scale, dtype=np.float64)
        layers = [IntLinear(layers[0].q, layers[0].scale, layers[0].bias), *layers[1:]]
    state = _ModelLowering(n_features, batch, slots, max_cts, late_rescale=late_rescale)
    first = 0
    if expand:
        form = quadratic_form(layers, n_features, slots)
        if form is None:
            return None
        lower_quadratic_form(state, form)
        first = 3
    profile = tuple(profile_layer(state, layer, position) for position, layer in enumerate(layers) if position >= first)
    level_plan = None
    if max_depth is not None:
        level_plan = PLACEMENTS[placement](profile, max_depth, slots, ring_dim=ring_dim)
        state = _ModelLowering(n_features, batch, slots, max_cts, max_depth, late_rescale)
        for position, layer in enumerate(layers):
            if position in level_plan.bootstrap_before:
                state.refresh()
            state.apply(layer, position)
    kinds = "batched-features-across-ciphertexts" if batch is not None else "quadratic-form" if expand else \
        "iteration-space"
    plan = Plan(
        spec=f"model[{', '.join(type(layer).__name__ for layer in layers)}]",
        slots=slots,
        operands=tuple(state.operands),
        plain_program=(),
        steps=tuple(state.builder.steps),
        outputs=state.value.cts,
        output_layout=state.value.layout,
        strategy=kinds,
    )
    return ModelPlan(plan, tuple(state.plains), batch, state.pending, input_scale, level_plan,
                     QUADRATIC if expand else None)
