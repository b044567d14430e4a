"""``QuantLinear``: an ``nn.Linear`` replacement that holds packed int4 weights and dispatches to a kernel.

On CUDA tensors the forward runs the kernel of its format (for W4A16 at small batches the CUDA kernel of
:mod:`quant.kernels.w4a16_cuda`, bias fused, where it builds; otherwise Triton); elsewhere it runs the torch
reference beside that kernel. Shape-based choices (GEMV-like split-K for small M, large tiles for large M) are made
by :func:`quant.kernels.pick_blocks`. What every quantized layer shares (bias, smoothing, the recipe, the
``weight`` view) lives in :class:`quant.layer_base.QuantLayer`.
"""

from __future__ import annotations

import torch
from torch import nn

from quant.configs import W4A4, W4A8, W4A16, QuantConfig
from quant.errors import ConfigError, ShapeError
from quant.kernels import (dequantize_w4a8_int8, dequantize_w4a16, quantize_tokens, reference_w4a4,
                           reference_w4a8, reference_w4a16, triton_w4a4, triton_w4a8, w4a16_matmul)
from quant.layer_base import QuantLayer
from quant.packing import padded_k, unpack_int4
from quant.quantizers import quantize_w4a4_weight, quantize_w4a8_weight, quantize_w4a16_weight

__all__ = ["QuantLinear"]

_LINEAR_FORMATS = (W4A16, W4A8, W4A4)


class QuantLinear(QuantLayer):
    """A linear layer with int4 weights in one of the W4A16 / W4A8 / W4A4 formats."""

    EXTRA_FIELDS = ("outliers",)

    def __init__(self, in_features: int, out_features: int, config: QuantConfig, *, bias: bool = True,
                 smoothed: bool = False, outliers: int = 0, recipe: str = "rtn") -> None:
        if not isinstance(config, _LINEAR_FORMATS):
            raise ConfigError("QuantLinear takes W4A16, W4A8 or W4A4", got=type(config).__name__)
        super().__init__(in_features, out_features, config, bias=bias, smoothed=smoothed, recipe=recipe)
        self.outliers = outliers if isinstance(config, W4A4) else 0  # W4A4 input channels kept in int8
        if self.outliers > in_features:
            raise ShapeError("more outlier channels than input channels", outliers=outliers, in_features=in_features)
        kp, n = padded_k(in_features, config.group_size), out_features
        groups = kp // config.group_size
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
            self.register_buffer("oweight", torch.zeros(self.outliers, n, dtype=torch.int8))
            self.register_buffer("oscale", torch.zeros(n, dtype=torch.float32))
            self.register_buffer("outlier_idx", torch.zeros(self.outliers, dtype=torch.int64))

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantConfig, *, smooth: torch.Tensor | None = None,
                    act_absmax: torch.Tensor | None = None, recipe: str = "rtn") -> QuantLinear:
        """Quantize ``linear`` by round-to-nearest after multiplying its input channels by ``smooth``.

        ``act_absmax`` (per input channel, before smoothing) picks W4A4's outlier channels; without it the
        channels whose weight columns are largest are kept in int8.
        """
        weight = cls.smoothed_weight(linear, smooth)
        n, k = weight.shape
        outliers = min(config.outliers, k) if isinstance(config, W4A4) else 0
        layer = cls(k, n, config, bias=linear.bias is not None, smoothed=smooth is not None, outliers=outliers,
                    recipe=recipe)
        if isinstance(config, W4A16):
            tensors = quantize_w4a16_weight(weight, config.group_size)
        elif isinstance(config, W4A8):
            tensors = quantize_w4a8_weight(weight, config.group_size)
        else:
            magnitude = weight.abs().amax(dim=0) if act_absmax is None else act_absmax.float().to(weight.device)
            if smooth is not None and act_absmax is not None:
                magnitude = magnitude / smooth.to(weight.device)
            idx = torch.topk(magnitude, outliers).indices.sort().values
            tensors = {**quantize_w4a4_weight(weight, config.group_size, idx), "outlier_idx": idx}
        return layer.finish_from_linear(linear, smooth, tensors)

    def dequantize(self) -> torch.Tensor:
        """Return the quantized weight as float32 ``[out, in]``, as it multiplies the (smoothed) input."""
        gs, k = self.config.group_size, self.in_features
        if isinstance(self.config, W4A16):
            return dequantize_w4a16(self.qweight, self.scales, self.zeros, gs)[:k].t().contiguous()
        if isinstance(self.config, W4A8):
            w8 = dequantize_w4a8_int8(self.qweight, self.gscale, self.gzero, gs)[:k]
            return (w8.float() * self.wscale[None, :]).t().contiguous()
        w = ((unpack_int4(self.qweight) - 8).float() * self.scales.float().repeat_interleave(gs, 0))[:k]
        w[self.outlier_idx] = self.oweight.float() * self.oscale[None, :]
        return w.t().contiguous()

    def _linear(self, x2: torch.Tensor) -> torch.Tensor:
        """W4A16 on CUDA: one call with the bias fused where the CUDA kernel runs; other cases as the base."""
        if isinstance(self.config, W4A16) and x2.is_cuda:
            return w4a16_matmul(x2, self.qweight, self.scales, self.zeros, self.config.group_size, self.bias)
        return super()._linear(x2)

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """Run the format's kernel (CUDA) or torch reference (elsewhere) on a 2-D input."""
        gs, cuda = self.config.group_size, x2.is_cuda
        if isinstance(self.config, W4A16):
            return reference_w4a16(x2, self.qweight, self.scales, self.zeros, gs)
        if isinstance(self.config, W4A8):
            xq, xs = quantize_tokens(x2, 8)
            fn = triton_w4a8 if cuda else reference_w4a8
            return fn(xq, xs, self.qweight, self.gscale, self.gzero, self.wscale, gs)
        xoq, xos = quantize_tokens(x2[:, self.outlier_idx], 8)
        xq, xs = quantize_tokens(x2.index_fill(1, self.outlier_idx, 0.0), 4)
        fn = triton_w4a4 if cuda else reference_w4a4
        return fn(xq, xs, xoq, xos, self.qweight, self.scales, self.oweight, self.oscale, gs)
