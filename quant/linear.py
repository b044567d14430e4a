"""``QuantLinear``: an ``nn.Linear`` replacement that holds packed int4 weights and dispatches to a kernel.

On CUDA tensors the forward runs the Triton kernel of its format; elsewhere it runs the torch reference
beside that kernel. Shape-based choices (GEMV-like split-K for small M, large tiles for large M) are made
by :func:`quant.kernels.pick_blocks`. An optional per-input-channel ``input_scale`` (from AWQ or
SmoothQuant) multiplies activations first; it is the smoothing factor ``1 / s`` not yet folded upstream.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from quant.configs import W4A4, W4A8, W4A16, QuantConfig, config_from_json, config_to_json
from quant.errors import ConfigError, ShapeError
from quant.kernels import (reference_w4a4, reference_w4a8, reference_w4a16, triton_w4a4, triton_w4a8,
                           triton_w4a16)
from quant.packing import padded_k
from quant.quantizers import (quantize_per_token, quantize_w4a4_weight, quantize_w4a8_weight,
                              quantize_w4a16_weight)

__all__ = ["QuantLinear"]

_LINEAR_FORMATS = (W4A16, W4A8, W4A4)


class QuantLinear(nn.Module):
    """A linear layer with int4 weights in one of the W4A16 / W4A8 / W4A4 formats."""

    def __init__(self, in_features: int, out_features: int, config: QuantConfig, *, bias: bool = True,
                 smoothed: bool = False, outliers: int = 0) -> None:
        super().__init__()
        if not isinstance(config, _LINEAR_FORMATS):
            raise ConfigError("QuantLinear takes W4A16, W4A8 or W4A4", got=type(config).__name__)
        if in_features < 1 or out_features < 1:
            raise ShapeError("a QuantLinear needs positive sizes", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features, self.config = in_features, out_features, config
        self.n_outliers = outliers if isinstance(config, W4A4) else 0
        if self.n_outliers > in_features:
            raise ShapeError("more outlier channels than input channels", outliers=outliers, in_features=in_features)
        kp, n, groups = padded_k(in_features, config.group_size), out_features, padded_k(in_features, config.group_size) // config.group_size
        self.register_buffer("qweight", torch.zeros(kp // 8, n, dtype=torch.int32))
        if isinstance(config, W4A16):
            self.register_buffer("scales", torch.zeros(groups, n, dtype=torch.float16))
            self.register_buffer("zeros", torch.zeros(groups, n, dtype=torch.float16))
        elif isinstance(config, W4A8):
            self.register_buffer("gscale", torch.zeros(groups, n, dtype=torch.uint8))
            self.register_buffer("gzero", torch.zeros(groups, n, dtype=torch.uint8))
            self.register_buffer("wscale", torch.zeros(n, dtype=torch.float32))
        else:
            self.register_buffer("scales", torch.zeros(groups, n, dtype=torch.float16))
            self.register_buffer("oweight", torch.zeros(self.n_outliers, n, dtype=torch.int8))
            self.register_buffer("oscale", torch.zeros(n, dtype=torch.float32))
            self.register_buffer("outlier_idx", torch.zeros(self.n_outliers, dtype=torch.int64))
        self.register_buffer("bias", torch.zeros(n, dtype=torch.float32) if bias else None)
        self.register_buffer("input_scale", torch.ones(in_features, dtype=torch.float32) if smoothed else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantConfig, *, smooth: torch.Tensor | None = None,
                    act_absmax: torch.Tensor | None = None) -> QuantLinear:
        """Quantize ``linear`` by round-to-nearest after multiplying its input channels by ``smooth``.

        ``act_absmax`` (per input channel, before smoothing) picks W4A4's outlier channels; without it the
        channels whose weight columns are largest are kept in int8.
        """
        weight = linear.weight.detach().float()
        n, k = weight.shape
        outliers = min(config.outliers, k) if isinstance(config, W4A4) else 0
        layer = cls(k, n, config, bias=linear.bias is not None, smoothed=smooth is not None, outliers=outliers)
        if smooth is not None:
            smooth = smooth.detach().float().to(weight.device)
            if smooth.shape != (k,) or not torch.all(smooth > 0):
                raise ShapeError("smooth must be a positive vector of length in_features", shape=tuple(smooth.shape))
            weight = weight * smooth[None, :]
            layer.input_scale.copy_(1.0 / smooth)
        if isinstance(config, W4A16):
            tensors = quantize_w4a16_weight(weight, config.group_size)
        elif isinstance(config, W4A8):
            tensors = quantize_w4a8_weight(weight, config.group_size)
        else:
            magnitude = weight.abs().amax(dim=0) if act_absmax is None else act_absmax.float().to(weight.device)
            if smooth is not None and act_absmax is not None:
                magnitude = magnitude / smooth
            idx = torch.topk(magnitude, outliers).indices.sort().values
            tensors = {**quantize_w4a4_weight(weight, config.group_size, idx), "outlier_idx": idx}
        for name, value in tensors.items():
            getattr(layer, name).copy_(value)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        return layer.to(linear.weight.device)

    def describe(self) -> dict[str, Any]:
        """Return the JSON-able facts needed to rebuild an empty layer of this shape and format."""
        return {"config": config_to_json(self.config), "in_features": self.in_features,
                "out_features": self.out_features, "bias": self.bias is not None,
                "smoothed": self.input_scale is not None, "outliers": self.n_outliers}

    @classmethod
    def from_description(cls, desc: dict[str, Any]) -> QuantLinear:
        """Build an empty layer (to be filled by ``load_state_dict``) from :meth:`describe`'s output."""
        return cls(int(desc["in_features"]), int(desc["out_features"]), config_from_json(desc["config"]),
                   bias=bool(desc["bias"]), smoothed=bool(desc["smoothed"]), outliers=int(desc["outliers"]))

    def extra_repr(self) -> str:
        """Summarize the layer for ``print(model)``."""
        return f"in_features={self.in_features}, out_features={self.out_features}, config={self.config}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the quantized layer to ``x`` of shape ``[..., in_features]``."""
        if x.shape[-1] != self.in_features:
            raise ShapeError("input's last axis does not match in_features", got=x.shape[-1], expected=self.in_features)
        x2 = x.reshape(-1, self.in_features)
        if self.input_scale is not None:
            x2 = x2 * self.input_scale.to(x2.dtype)
        y = self._matmul(x2)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """Run the format's kernel (CUDA) or torch reference (elsewhere) on a 2-D input."""
        gs, cuda = self.config.group_size, x2.is_cuda
        if isinstance(self.config, W4A16):
            fn = triton_w4a16 if cuda else reference_w4a16
            return fn(x2, self.qweight, self.scales, self.zeros, gs).float()
        if isinstance(self.config, W4A8):
            xq, xs = quantize_per_token(x2, 8)
            fn = triton_w4a8 if cuda else reference_w4a8
            return fn(xq, xs, self.qweight, self.gscale, self.gzero, self.wscale, gs).float()
        xoq, xos = quantize_per_token(x2[:, self.outlier_idx], 8)
        xq, xs = quantize_per_token(x2.index_fill(1, self.outlier_idx, 0.0), 4)
        fn = triton_w4a4 if cuda else reference_w4a4
        return fn(xq, xs, xoq, xos, self.qweight, self.scales, self.oweight, self.oscale, gs).float()
