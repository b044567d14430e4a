"""One-sample CNNs in the channel-packed layout: the whole image in one ciphertext (einfhe.compiler.image_layout),
each convolution one slot-to-slot linear map (einfhe.compiler.slot_linear: kernel offsets and channel shifts as
rotations of the packed image, times plaintext diagonals that mix the channels), for networks whose activations
do not fit one ciphertext per feature (a ResNet-20 on 32x32x3 images has 16,384 features a layer).

Layers: `Conv` (weight (C_out, C_in, k, k) with BatchNorm folded by `conv_with_batchnorm`, any stride, padding),
`CompositeReLU` (einfhe.compiler.activations: its stages as Chebyshev series, the last one giving (1 + sign) / 2
so that ReLU is one product with the input), `Block` (body(x) + shortcut(x), the shortcut empty or a strided 1x1
`Conv`), `GlobalAvgPool` (rotate-and-sum over the rows and columns of every channel) and a final `Linear` head
(the pool's 1/(H*W) folded into it). A convolution costs one level, a ReLU its stages' levels plus one. Every
ReLU stage runs on [-1, 1], where OpenFHE's Chebyshev series spends one level less: the convolution or block
before a ReLU divides its output by the first stage's bound (in its weights; an identity shortcut by a constant
product), each stage's coefficients are divided by the next stage's bound, and the last stage multiplies the
first bound back.

Bootstraps go where a value runs out of levels: before an operation that would pass `max_depth` levels since the
value's last refresh, its input is bootstrapped (both inputs of the ReLU's product; a residual sum takes the
larger level of its two branches). `PackedCNN.level_map` lists where each layer runs and each bootstrap sits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError
from ..layout import Dim, Layout, natural_layout
from ..plan import (Add, AddPlain, Bootstrap, Chebyshev, CipherInput, Mul, MulPlain, PlainInput, PlainSlice, Plan,
                    Rescale, Rotate, chebyshev_levels, step_level)
from .activations import CompositeReLU
from .builder import PlanBuilder
from .cnn import fold_batchnorm
from .image_layout import ImageLayout
from .layers import Linear
from .slot_linear import slot_linear

__all__ = ["Conv", "Block", "GlobalAvgPool", "PackedCNN", "compile_packed_cnn", "compile_packed_image",
           "conv_with_batchnorm"]


@dataclass(frozen=True, eq=False)
class Conv:
    """A 2-D convolution (torch's Conv2d weight layout) with an optional bias."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True, eq=False)
class Block:
    """A residual block: body(x) + shortcut(x); an empty shortcut is the identity."""

    body: tuple
    shortcut: tuple = ()


@dataclass(frozen=True)
class GlobalAvgPool:
    """The mean of every channel over its pixels."""


def conv_with_batchnorm(weight, bias, gamma, beta, mean, var, stride: int = 1, padding: int = 0,
                        eps: float = 1e-5) -> Conv:
    """A convolution followed by an inference-time BatchNorm, as one convolution."""
    weight = np.asarray(weight, dtype=np.float64)
    folded = fold_batchnorm(Linear(weight.reshape(weight.shape[0], -1), bias), gamma, beta, mean, var, eps)
    return Conv(folded.weight.reshape(weight.shape), folded.bias, stride, padding)


@dataclass
class PackedCNN:
    """A compiled channel-packed CNN: the plan, its plain operands after the input, the input's image layout, and
    the level map (one line per layer and per bootstrap)."""

    plan: Plan
    plains: tuple[np.ndarray, ...]
    input_layout: ImageLayout
    level_map: list[str] = field(default_factory=list)
    layer_starts: tuple[int, ...] = ()  # the first step of each top-level layer (the head last), for timings

    @property
    def bootstraps(self) -> int:
        """Bootstraps one inference runs."""
        return self.plan.bootstraps

    def input_level(self, params) -> int:
        """The level the client encrypts the input at (einfhe.encrypt's `level`): with bootstraps, only the levels
        the first stretch uses above where a bootstrap takes its input (as `ModelPlan.input_level`; OpenFHE returns
        a ciphertext with more levels left than bootstrapping needs unchanged); the top (0) otherwise."""
        first = next((step for step in self.plan.steps if step.op == "bootstrap"), None)
        return 0 if first is None else params.total_depth - 1 - self.plan.levels()[first.src]

    def operands(self, encrypted_input) -> tuple:
        """The operand list for `einfhe.run(ctx, cnn.plan, *cnn.operands(xe))` (or `einfhe.simulate`)."""
        return (encrypted_input, *self.plains)


class _Lowering:
    """State of one compilation: the builder, the plain operands, each value's level since its last refresh."""

    def __init__(self, slots: int, max_depth: int, input_layout: ImageLayout) -> None:
        self.builder = PlanBuilder(slots, 1)
        self.slots, self.max_depth = slots, max_depth
        self.operands: list = [CipherInput(0, input_layout.client_layout())]
        self.plains: list[np.ndarray] = []
        self.levels: dict[int, int] = {}
        self.log: list[str] = []
        self.starts: list[int] = []
        self.refreshed: dict[int, int] = {}

    def emit(self, cls, *args) -> int:
        out = self.builder.emit(cls, *args)
        self.levels[out] = step_level(self.builder.steps[-1], self.levels)
        return out

    def sum_values(self, values: list[int]) -> int:
        while len(values) > 1:
            values = [self.emit(Add, values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                      for i in range(0, len(values), 2)]
        return values[0]

    def plain(self, array: np.ndarray) -> str:
        self.plains.append(np.asarray(array, dtype=np.float64))
        self.operands.append(PlainInput(len(self.operands), self.plains[-1].shape))
        return f"op{len(self.operands) - 1}"

    def room(self, value: int, levels: int, why: str) -> int:
        """`value`, bootstrapped first when `levels` more would pass the depth between refreshes."""
        if levels > self.max_depth:
            raise ModelError(f"{why} needs {levels} levels, more than the {self.max_depth} between bootstraps")
        if self.levels[value] + levels <= self.max_depth:
            return value
        if value in self.refreshed:  # a value read twice (a block's body and its shortcut) is refreshed once
            return self.refreshed[value]
        self.log.append(f"  -- bootstrap (at level {self.levels[value]}, {why} needs {levels})")
        out = self.refreshed[value] = self.builder.emit(Bootstrap, value)
        self.levels[out] = 0
        return out

    def linear_map(self, value: int, out_slots, in_slots, weights, period: int, out_period, why: str) -> int:
        value = self.room(value, 1, why)
        transform = slot_linear(out_slots, in_slots, weights, period, out_period)
        out = transform.lower(self, value, self.plain(transform.plain), self.slots)
        self.log.append(f"  {why}: level {self.levels[value]}->{self.levels[out]}, {transform.diagonals} diagonals, "
                        f"{transform.rotations()} rotations")
        return out

    def add_vector(self, value: int, vector: np.ndarray) -> int:
        name = self.plain(vector[None, :])
        return self.emit(AddPlain, value, PlainSlice(name, natural_layout((vector.size,), self.slots, "s"), 0))

    def scale(self, value: int, factor: float, why: str) -> int:
        """`value` times a constant (one plaintext product and a rescale): an identity shortcut's share of the
        factor its block's output carries."""
        value = self.room(value, 1, why)
        name = self.plain(np.full((1, self.slots), factor))
        product = self.emit(MulPlain, value, PlainSlice(name, natural_layout((self.slots,), self.slots, "s"), 0))
        return self.emit(Rescale, product)

    def conv(self, value: int, layout: ImageLayout, conv: Conv, why: str,
             factor: float = 1.0) -> tuple[int, ImageLayout]:
        """The convolution of `value`, its output times `factor` (folded into the weights and the bias)."""
        weight = np.asarray(conv.weight, dtype=np.float64) * factor
        c_out, c_in, kernel, _ = weight.shape
        if c_in != layout.channels:
            raise ModelError(f"{why} takes {c_in} channels, its input has {layout.channels}")
        out_layout = layout.strided(c_out, conv.stride)
        rows = (layout.height + 2 * conv.padding - kernel) // conv.stride + 1
        cols = (layout.width + 2 * conv.padding - kernel) // conv.stride + 1
        if (rows, cols) != (out_layout.height, out_layout.width):
            raise ModelError(f"{why}: only convolutions that keep ceil(size / stride) pixels are supported")
        src, dst = layout.positions(), out_layout.positions()
        co, ci, di, dj, i, j = np.meshgrid(np.arange(c_out), np.arange(c_in), np.arange(kernel), np.arange(kernel),
                                           np.arange(rows), np.arange(cols), indexing="ij")
        y, x = i * conv.stride + di - conv.padding, j * conv.stride + dj - conv.padding
        inside = (y >= 0) & (y < layout.height) & (x >= 0) & (x < layout.width) & (weight[co, ci, di, dj] != 0)
        co, ci, di, dj, i, j, y, x = (a[inside] for a in (co, ci, di, dj, i, j, y, x))
        period = max(layout.period, out_layout.period)
        out = self.linear_map(value, dst[co, i, j], src[ci, y, x], weight[co, ci, di, dj], period,
                              out_layout.period, why)
        if conv.bias is not None:
            out = self.add_vector(out, out_layout.pack(np.broadcast_to(
                factor * np.asarray(conv.bias, dtype=np.float64)[:, None, None],
                (c_out, rows, cols)))[:out_layout.period])
        return out, out_layout

    def relu(self, value: int, relu: CompositeReLU, why: str, prescaled: bool = False, factor: float = 1.0) -> int:
        """The ReLU of `value` (of `value` times the first stage's bound where `prescaled`: the first stage then
        reads [-1, 1] too), its output times `factor`, both folded into the last stage's coefficients."""
        x, stages = value, _unit_domains(relu.stages, prescaled)
        gain = factor * (relu.stages[0][2] if prescaled else 1.0)
        for index, (coeffs, lo, hi) in enumerate(stages):
            if index == len(stages) - 1:  # gain * (1 + s) / 2 from the last stage: c0 carries the doubled constant
                coeffs = coeffs * (gain / 2)
                coeffs[0] += gain
            value = self.room(value, chebyshev_levels(coeffs.size - 1, lo, hi), f"{why} stage {index + 1}")
            x = value if index == 0 else x  # a refreshed input serves the product too
            value = self.emit(Chebyshev, value, tuple(coeffs), lo, hi)
        x, value = self.room(x, 1, f"{why} product (input)"), self.room(value, 1, f"{why} product")
        out = self.emit(Rescale, self.emit(Mul, x, value))
        self.log.append(f"  {why}: level {self.levels[out]} after {len(stages)} stages and the product")
        return out


def _unit_domains(stages, prescaled: bool) -> list[tuple[np.ndarray, float, float]]:
    """The composite's stages with every later stage on [-1, 1] (OpenFHE then skips its linear map: one level
    less): a stage on [-r, r] reads the previous stage's output divided by r, folded into that one's coefficients;
    the first stage too where its input comes `prescaled` (divided by r)."""
    out = []
    for index, (coeffs, lo, hi) in enumerate(stages):
        coeffs = np.array(coeffs, dtype=np.float64)
        if index + 1 < len(stages) and stages[index + 1][1] == -stages[index + 1][2]:
            coeffs = coeffs / stages[index + 1][2]
        if (index or prescaled) and lo == -hi:
            lo, hi = -1.0, 1.0
        out.append((coeffs, lo, hi))
    return out


def _prescaled(layers, index: int) -> bool:
    """Whether layer `index` is a ReLU whose input comes divided by its first stage's bound r (domain [-r, r]):
    where a convolution or a block before it can fold the division in (its first stage then reads [-1, 1])."""
    layer = layers[index]
    return (index > 0 and isinstance(layers[index - 1], (Conv, Block)) and isinstance(layer, CompositeReLU)
            and layer.stages[0][1] == -layer.stages[0][2])


def _factors(layers, scale: float) -> list[float]:
    """The factor each layer's output carries: 1 / r before a prescaled ReLU, `scale` on the last layer, else 1."""
    out = [1.0 / layers[i + 1].stages[0][2] if _prescaled(layers, i + 1) else 1.0 for i in range(len(layers) - 1)]
    return out + [scale] if layers else []


def _lower(state: _Lowering, layers, value: int, layout: ImageLayout, prefix: str, scale: float = 1.0):
    """Lower a sequence of image layers, its output times `scale`; return the value and its layout."""
    if not layers and scale != 1.0:  # an identity shortcut: the body's refreshed input, if any, times the scale
        value = state.scale(state.refreshed.get(value, value), scale, f"{prefix}scale")
    factors = _factors(layers, scale)
    for index, (layer, factor) in enumerate(zip(layers, factors)):
        if not prefix:
            state.starts.append(len(state.builder.steps))
        why = f"{prefix}{index} {type(layer).__name__}"
        if isinstance(layer, Conv):
            value, layout = state.conv(value, layout, layer, why, factor)
        elif isinstance(layer, CompositeReLU):
            value = state.relu(value, layer, why, _prescaled(layers, index), factor)
        elif isinstance(layer, Block):
            body, body_layout = _lower(state, layer.body, value, layout, f"{why}.body.", factor)
            skip, skip_layout = _lower(state, layer.shortcut, value, layout, f"{why}.shortcut.", factor)
            skip = state.refreshed.get(skip, skip)  # an identity shortcut adds the body's refreshed input, if any
            if body_layout != skip_layout:
                raise ModelError(f"{why}: the body's output layout {body_layout} differs from the shortcut's "
                                 f"{skip_layout}")
            value, layout = state.emit(Add, body, skip), body_layout
        else:
            raise ModelError(f"{why}: not an image layer (Conv, CompositeReLU, Block)")
    return value, layout


def _head(state: _Lowering, value: int, layout: ImageLayout, head: Linear) -> int:
    """Global average pool (rotate-and-sum) and the Linear head, its outputs in the first slots."""
    if layout.height & (layout.height - 1) or layout.width & (layout.width - 1):
        raise ModelError("the global average pool needs power-of-two image sides")
    for size, stride in ((layout.width, layout.gap), (layout.height, layout.gap * layout.cols)):
        step = 1
        while step < size:
            value = state.emit(Add, value, state.emit(Rotate, value, step * stride))
            step *= 2
    weight = np.asarray(head.weight, dtype=np.float64) / (layout.height * layout.width)
    classes, channels = weight.shape
    if channels != layout.channels:
        raise ModelError(f"the head takes {channels} features, the pool gives {layout.channels}")
    o, c = np.meshgrid(np.arange(classes), np.arange(channels), indexing="ij")
    value = state.linear_map(value, o.ravel(), layout.positions()[:, 0, 0][c.ravel()], weight.ravel(),
                             layout.period, None, "pool + Linear head")
    if head.bias is not None:
        bias = np.zeros(layout.period)
        bias[:classes] = head.bias
        value = state.add_vector(value, bias)
    return value


def _start(image_shape, slots: int, max_depth: int) -> tuple[_Lowering, int, ImageLayout]:
    layout = ImageLayout(*image_shape, slots)
    state = _Lowering(slots, max_depth, layout)
    value = state.builder.load(0, layout.client_layout()).cts[0]
    state.levels[value] = 0
    return state, value, layout


def _plan(state: _Lowering, value: int, output: Layout, image_shape) -> PackedCNN:
    plan = Plan(spec=f"packed-cnn{tuple(image_shape)}", slots=state.slots, operands=tuple(state.operands),
                plain_program=(), steps=tuple(state.builder.steps), outputs=(value,), output_layout=output,
                strategy="channel-packed")
    return PackedCNN(plan, tuple(state.plains), ImageLayout(*image_shape, state.slots), state.log, tuple(state.starts))


def compile_packed_image(layers: list, image_shape: tuple[int, int, int], *, slots: int,
                         max_depth: int) -> tuple[PackedCNN, ImageLayout]:
    """Compile image layers alone (Conv, CompositeReLU, Block); the plan returns the whole slot vector, which the
    returned output layout's `unpack` reads as an image (a stage of a network, measured on its own)."""
    state, value, layout = _start(image_shape, slots, max_depth)
    value, layout = _lower(state, layers, value, layout, "")
    return _plan(state, value, natural_layout((slots,), slots, "s"), image_shape), layout


def compile_packed_cnn(layers: list, image_shape: tuple[int, int, int], *, slots: int, max_depth: int) -> PackedCNN:
    """Compile image layers then `GlobalAvgPool()` and a `Linear` head into one channel-packed plan on `slots`
    slots, bootstrapping where `max_depth` levels since a refresh would be passed."""
    if len(layers) < 2 or not isinstance(layers[-2], GlobalAvgPool) or not isinstance(layers[-1], Linear):
        raise ModelError("a channel-packed CNN ends with GlobalAvgPool() and a Linear head")
    state, value, layout = _start(image_shape, slots, max_depth)
    value, layout = _lower(state, layers[:-2], value, layout, "")
    state.starts.append(len(state.builder.steps))
    value = _head(state, value, layout, layers[-1])
    classes = np.asarray(layers[-1].weight).shape[0]
    size = 1 << max(0, classes - 1).bit_length()
    output = Layout((Dim("_r", slots // size, "junk"), Dim("o", size, "axis", classes)), slots, "o", (classes,))
    return _plan(state, value, output, image_shape)
