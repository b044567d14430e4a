"""``QuantLayer``: what every quantized linear layer shares (sizes, config, recipe, bias, smoothing, forward).

A format's layer subclasses it with its buffers, ``from_linear``, ``_matmul`` (its kernel on CUDA, the
torch reference elsewhere) and ``dequantize`` (the weight as the kernel applies it). An optional
per-input-channel ``input_scale`` (from AWQ or SmoothQuant) multiplies activations first: the smoothing
factor ``1 / s``, applied at run time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from quant.configs import QuantConfig, config_from_json, config_to_json
from quant.errors import ShapeError
from quant.packing import TILE_K, pack_int4, unpack_int4

__all__ = ["QuantLayer"]


class QuantLayer(nn.Module):
    """Base of the quantized replacements of ``nn.Linear``; ``weight`` is the dequantized ``[out, in]`` view."""

    EXTRA_FIELDS: tuple[str, ...] = ()  # a format's own integer constructor arguments, kept in the manifest
    GROUP_ROWS = ("scales", "zeros", "gscale", "gzero", "a8_groups")  # buffers with one row per K group

    def __init__(self, in_features: int, out_features: int, config: QuantConfig, *, bias: bool = True,
                 smoothed: bool = False, recipe: str = "rtn") -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ShapeError("a quantized layer needs positive sizes", in_features=in_features,
                             out_features=out_features)
        self.in_features, self.out_features, self.config, self.recipe = in_features, out_features, config, recipe
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32) if bias else None)
        self.register_buffer("input_scale", torch.ones(in_features, dtype=torch.float32) if smoothed else None)

    @staticmethod
    def smoothed_weight(linear: nn.Linear, smooth: torch.Tensor | None) -> torch.Tensor:
        """Return ``linear``'s float32 ``[N, K]`` weight with input channel ``j`` times ``smooth[j]`` (checked)."""
        weight = linear.weight.detach().float()
        if smooth is None:
            return weight
        smooth = smooth.detach().float().to(weight.device)
        if smooth.shape != (weight.shape[1],) or not torch.all(smooth > 0):
            raise ShapeError("smooth must be a positive vector of length in_features", shape=tuple(smooth.shape))
        return weight * smooth[None, :]

    def finish_from_linear(self, linear: nn.Linear, smooth: torch.Tensor | None,
                           tensors: dict[str, torch.Tensor]) -> QuantLayer:
        """Copy quantized ``tensors``, the bias and ``1 / smooth`` into this layer; move it to ``linear``'s device."""
        for name, value in tensors.items():
            getattr(self, name).copy_(value)
        if smooth is not None:
            self.input_scale.copy_(1.0 / smooth.detach().float())
        if linear.bias is not None:
            self.bias.copy_(linear.bias.detach().float())
        return self.to(linear.weight.device)

    def dequantize(self) -> torch.Tensor:
        """Return the quantized weight as float32 ``[out, in]``, as it multiplies the (smoothed) input."""
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight ``[out, in]`` as it multiplies the layer's input (smoothing folded back)."""
        w = self.dequantize()
        return w if self.input_scale is None else w * self.input_scale[None, :]

    def describe(self) -> dict[str, Any]:
        """Return the JSON-able facts needed to rebuild an empty layer of this shape and format."""
        return {"config": config_to_json(self.config), "in_features": self.in_features,
                "out_features": self.out_features, "bias": self.bias is not None,
                "smoothed": self.input_scale is not None, "recipe": self.recipe,
                **{key: getattr(self, key) for key in self.EXTRA_FIELDS}}

    @classmethod
    def from_description(cls, desc: dict[str, Any]) -> QuantLayer:
        """Build an empty layer (to be filled by ``load_state_dict``) from :meth:`describe`'s output."""
        extras = {key: int(desc[key]) for key in cls.EXTRA_FIELDS}
        return cls(int(desc["in_features"]), int(desc["out_features"]), config_from_json(desc["config"]),
                   bias=bool(desc["bias"]), smoothed=bool(desc["smoothed"]), recipe=str(desc.get("recipe", "rtn")),
                   **extras)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load as ``nn.Module`` does, first trimming packed int4 weights saved padded to whole 256-row tiles."""
        self._trim_tile_padding(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _trim_tile_padding(self, state: dict[str, Any], prefix: str) -> None:
        """Repack a ``qweight`` saved with K padded to whole 256-row tiles (quant's layout before K was padded
        only to the group) to this layer's rows, and drop the group rows past them: the dropped rows multiplied
        only the zeros that padded the input, so the layer computes the same."""
        key, rows = prefix + "qweight", getattr(self, "qweight", None)
        saved = state.get(key)
        if rows is None or saved is None or saved.dim() != 2 or saved.shape[1:] != rows.shape[1:]:
            return
        step = max(TILE_K, self.config.group_size)
        if saved.shape[0] == rows.shape[0] or saved.shape[0] * 8 != -(-self.in_features // step) * step:
            return  # this layer's own layout, or a mismatch load_state_dict reports
        k = rows.shape[0] * 8
        state[key] = pack_int4(unpack_int4(saved)[:k])
        for name in self.GROUP_ROWS:
            if prefix + name in state and getattr(self, name, None) is not None:
                state[prefix + name] = state[prefix + name][: k // self.config.group_size]

    def extra_repr(self) -> str:
        """Summarize the layer for ``print(model)``."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, config={self.config}, "
                f"recipe={self.recipe!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the quantized layer to ``x`` of shape ``[..., in_features]``."""
        if x.shape[-1] != self.in_features:
            raise ShapeError("input's last axis does not match in_features", got=x.shape[-1], expected=self.in_features)
        x2 = x.reshape(-1, self.in_features)
        if self.input_scale is not None:
            x2 = x2 * self.input_scale.to(x2.dtype)
        return self._linear(x2).to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _linear(self, x2: torch.Tensor) -> torch.Tensor:
        """Multiply a 2-D (smoothed) input by the quantized weight and add the bias."""
        y = self._matmul(x2)
        return y if self.bias is None else y + self.bias

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """Multiply a 2-D (smoothed) input by the quantized weight: the format's kernel or reference."""
        raise NotImplementedError
