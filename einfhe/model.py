"""Sequential models (linear layers, square activations) compiled into one einfhe plan.

Two packings, chosen by `batch`:
- one sample (`batch=None`): the client packs the features replicated for the first layer's joint space;
  each linear layer is an iteration-space matrix-vector product (mul_plain, then rotate-and-sum);
- a batch (`batch=B`, B <= slots): samples fill the slots and each feature is its own ciphertext, so a linear
  layer is plaintext-scalar products and additions across ciphertexts, with no rotation at all, and the
  throughput grows with the slot count (the layout CryptoNets used, Gilad-Bachrach et al., ICML 2016).
A square activation costs one level and one ciphertext product per ciphertext; a bias is a plaintext addition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from .compile import DEFAULT_SLOTS
from .errors import EinsumError
from .layout import Dim, Layout, next_pow2
from .lower import Packed, PlanBuilder
from .plan import CipherInput, PlainInput, Plan

__all__ = ["Linear", "Square", "ModelPlan", "compile_model"]

BATCH_INDEX = "Z"


@dataclass(frozen=True, eq=False)
class Linear:
    """y = weight @ x + bias, with weight of shape (out, in)."""

    weight: np.ndarray
    bias: np.ndarray | None = None


@dataclass(frozen=True)
class Square:
    """Element-wise x**2 (the polynomial activation of CryptoNets-style models)."""


Layer = Union[Linear, Square]


@dataclass(frozen=True)
class ModelPlan:
    """A compiled model: the plan, the plain operands it takes after the input, and the batch size."""

    plan: Plan
    plains: tuple[np.ndarray, ...]
    batch: int | None

    @property
    def input_layout(self) -> Layout:
        """Layout the client encrypts the input in ((features,) or (features, batch))."""
        return self.plan.input_layout(0)

    def operands(self, encrypted_input) -> tuple:
        """The operand list for `einfhe.run(ctx, model.plan, *model.operands(xe))`."""
        return (encrypted_input, *self.plains)

    def pack_input(self, x: np.ndarray) -> np.ndarray:
        """The input array in the plan's logical shape: (features,) or (features, batch) from (batch, features)."""
        x = np.asarray(x, dtype=np.float64)
        return x.T if self.batch is not None else x

    def unpack_output(self, y: np.ndarray) -> np.ndarray:
        """Decrypted output as (batch, classes) or (classes,)."""
        return y.T if self.batch is not None else y


def compile_model(layers: list[Layer], n_features: int, *, batch: int | None = None,
                  slots: int = DEFAULT_SLOTS, max_cts: int = 1 << 16) -> ModelPlan:
    """Compile a sequential model on inputs of `n_features` into one plan (see the module docstring)."""
    if not layers or not isinstance(layers[0], Linear):
        raise EinsumError("a model starts with a Linear layer")
    if batch is not None and not 1 <= batch <= slots:
        raise EinsumError(f"the batch must lie in 1..{slots} (the slot count)", batch=batch)
    builder = PlanBuilder(slots, max_cts)
    letters = iter("abcdefghijklmnopqrstuvwxy")
    current, width = next(letters), int(n_features)
    sizes = {current: width}
    operands: list = []
    plains: list[np.ndarray] = []
    value: Packed | None = None
    extra = BATCH_INDEX if batch is not None else ""
    if batch is not None:
        sizes[BATCH_INDEX] = batch
        layout = Layout((Dim(current, next_pow2(width), "axis", width), Dim(BATCH_INDEX, slots, "axis", batch)),
                        slots, current + BATCH_INDEX, (width, batch))
        operands.append(CipherInput(0, layout))
        value = builder.load(0, layout)

    def plain(array: np.ndarray) -> str:
        plains.append(np.asarray(array, dtype=np.float64))
        operands.append(PlainInput(len(operands), plains[-1].shape))
        return f"op{len(operands) - 1}"

    for position, layer in enumerate(layers):
        if isinstance(layer, Square):
            if value is None:
                raise EinsumError("a model starts with a Linear layer")
            value = builder.square(value)
            continue
        if not isinstance(layer, Linear):
            raise EinsumError(f"unsupported layer {type(layer).__name__}; supported: Linear, Square", layer=position)
        weight = np.asarray(layer.weight, dtype=np.float64)
        if weight.ndim != 2 or weight.shape[1] != width:
            raise EinsumError(
                f"layer {position} expects {weight.shape[-1]} inputs but receives {width}", layer=position
            )
        out = next(letters)
        sizes[out] = weight.shape[0]
        joint = builder.joint_layout(out + extra, current, sizes, value.layout if value else None)
        if value is None:
            x_layout = builder.restrict(joint, current, (width,))
            operands.append(CipherInput(0, x_layout))
            loaded = builder.load(0, x_layout)
            left = [loaded.cts[c] for c in builder.ct_map(joint, x_layout)]
        else:
            left = builder.align(value, joint)
        refs = builder.plain_refs(plain(weight), out + current, weight.shape, joint)
        reduced = builder.multiply_reduce(left, refs, joint, current)
        value = Packed(reduced.cts, Layout(reduced.layout.dims, slots, out + extra, (weight.shape[0],) + ((batch,) if batch else ())))
        if layer.bias is not None:
            bias = np.asarray(layer.bias, dtype=np.float64)
            if bias.shape != (weight.shape[0],):
                raise EinsumError(f"layer {position}'s bias must have shape ({weight.shape[0]},)", layer=position)
            if batch is not None:
                bias = np.repeat(bias[:, None], batch, axis=1)
            value = builder.add_plain(value, plain(bias))
        current, width = out, weight.shape[0]
    plan = Plan(
        spec=f"model[{', '.join(type(layer).__name__ for layer in layers)}]",
        slots=slots,
        operands=tuple(operands),
        plain_program=(),
        steps=tuple(builder.steps),
        outputs=value.cts,
        output_layout=value.layout,
        strategy="batched-features-across-ciphertexts" if batch is not None else "iteration-space",
    )
    return ModelPlan(plan, tuple(plains), batch)
