"""What `compile_model` returns: the plan of a compiled model with what the client does around it (the input's
smoothing scale and expansion before encryption, the deferred output scale after decryption)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..layout import Layout
from ..plan import Plan
from .levels import LevelPlan
from .quadratic_form import QUADRATIC, monomials

__all__ = ["ModelPlan", "BATCH_INDEX"]

BATCH_INDEX = "Z"  # the batched packing's sample index


@dataclass(frozen=True)
class ModelPlan:
    """A compiled model: plan, plain operands after the input, batch size, output scale, input scale, level plan (if
    any) and the client's expansion of the input (None, or `QUADRATIC`: its monomials, see
    einfhe.compiler.quadratic_form)."""

    plan: Plan
    plains: tuple[np.ndarray, ...]
    batch: int | None
    output_scale: np.ndarray
    input_scale: np.ndarray | None = None
    levels: LevelPlan | None = None
    input_expansion: str | None = None

    @property
    def input_layout(self) -> Layout:
        """Layout the client encrypts the input in ((features,) or (features, batch))."""
        return self.plan.input_layout(0)

    def input_level(self, params) -> int:
        """The level the client can encrypt the input at under `params` (einfhe.encrypt's `level`): where the plan
        bootstraps, its first stretch's levels above where a bootstrap takes its input (the last level but one,
        as a refreshed stretch ends: smaller ciphertexts, cheaper steps); the top (0) otherwise."""
        first = None if self.levels is None else self.levels.first_stretch_levels
        return 0 if first is None else params.total_depth - 1 - first

    def operands(self, encrypted_input) -> tuple:
        """The operand list for `einfhe.run(ctx, model.plan, *model.operands(xe))`."""
        return (encrypted_input, *self.plains)

    @property
    def batched(self) -> bool:
        """True for the batched packing (samples in the slots), False for the one-sample program."""
        return BATCH_INDEX in self.input_layout.indices

    def pack_input(self, x: np.ndarray) -> np.ndarray:
        """The input as the client encrypts it: smoothed by the first layer's input scale (free on the
        client), in the plan's logical shape (features,) or (features, batch) from (batch, features), expanded into
        its monomials where the program takes them."""
        x = np.asarray(x, dtype=np.float64)
        if self.input_scale is not None:
            x = x * self.input_scale
        if self.batched:
            return x.T
        if x.ndim == 2:  # the one-sample program of batch=1 takes a (1, features) batch
            if x.shape[0] != 1:
                raise ModelError(f"this one-sample program takes one sample, not a batch of {x.shape[0]}")
            x = x[0]
        return monomials(x) if self.input_expansion == QUADRATIC else x

    def unpack_output(self, y: np.ndarray) -> np.ndarray:
        """Decrypted output as (batch, classes) or (classes,), with the deferred scale applied."""
        if self.batched:
            return y.T * self.output_scale
        y = y * self.output_scale
        return y[None, :] if self.batch == 1 else y
