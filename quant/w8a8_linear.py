"""``W8A8Linear``: quant's one int8-weight linear layer. W8A8 (SmoothQuant's format) and W6A6/W6A8 (FlexQ) on the
int8 GEMM, LLM.int8(), and W8A16 (``act_bits=16``: float activations times the int8 weight dequantized, how a
float ``nn.Linear`` is exported and the exact int8 intermediate of an integer-exported W4A8 layer is held).

The int8 formats hold per-channel weight codes and per-token activation codes in int8 (6-bit codes are
-31..31, not packed: the int6 memory saving of FlexQ's kernels is not had here) and run on the same int8
GEMM. Under the ``llm.int8`` recipe a W8A8 layer also does LLM.int8()'s decomposition. ``from_int8`` builds a
layer from int8 codes and scales that are already quantized (an artifact's or an integer export's).

Dettmers et al., "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale" (NeurIPS 2022),
section 3.2: the input columns holding an activation of magnitude at least the threshold (6.0 in the
paper) in the current batch are multiplied in 16 bits (fp16 activations times the int8 weight columns
dequantized to fp16); every other column runs int8 x int8. The columns are found per batch at run time
(the decomposition is dynamic), so no calibration is needed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from quant.configs import W6A6, W8A8, QuantConfig
from quant.errors import ConfigError, ShapeError
from quant.kernels import int8_gemm_scaled, quantize_tokens, reference_int8_gemm_scaled
from quant.layer_base import QuantLayer
from quant.quantizers import quantize_channel_weight

__all__ = ["W8A8Linear", "LLM_INT8_THRESHOLD"]

LLM_INT8_THRESHOLD = 6.0  # LLM.int8(), section 3.2: activations of magnitude >= 6 mark an outlier column


class W8A8Linear(QuantLayer):
    """A linear layer with per-channel int8 (or int6) weights and per-token int8 (or int6) activations."""

    EXTRA_FIELDS = ("act_bits",)

    def __init__(self, in_features: int, out_features: int, config: QuantConfig, *, bias: bool = True,
                 smoothed: bool = False, recipe: str = "rtn", act_bits: int = 0) -> None:
        if not isinstance(config, (W8A8, W6A6)):
            raise ConfigError("W8A8Linear takes W8A8 or W6A6", got=type(config).__name__)
        super().__init__(in_features, out_features, config, bias=bias, smoothed=smoothed, recipe=recipe)
        self.weight_bits = 8 if isinstance(config, W8A8) else 6
        self.act_bits = act_bits or self.weight_bits  # W6A6 layers that FlexQ finds sensitive get 8
        if self.act_bits not in (6, 8, 16):
            raise ConfigError("act_bits must be 6, 8 or 16 (float activations)", act_bits=act_bits)
        self.register_buffer("w8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("wscale", torch.zeros(out_features, dtype=torch.float32))
        threshold = LLM_INT8_THRESHOLD if recipe == "llm.int8" else math.inf
        self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float32))

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantConfig, *, smooth: torch.Tensor | None = None,
                    act_absmax: torch.Tensor | None = None, recipe: str = "rtn") -> W8A8Linear:
        """Quantize ``linear`` by round-to-nearest after multiplying its input channels by ``smooth``."""
        weight = cls.smoothed_weight(linear, smooth)
        layer = cls(weight.shape[1], weight.shape[0], config, bias=linear.bias is not None,
                    smoothed=smooth is not None, recipe=recipe)
        return layer.finish_from_linear(linear, smooth, quantize_channel_weight(weight, layer.weight_bits))

    @classmethod
    def from_int8(cls, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, *,
                  act_bits: int = 16, input_scale: torch.Tensor | None = None) -> W8A8Linear:
        """A W8A8 layer (``act_bits=8``) or a W8A16 one (16) holding int8 codes ``weight [N, K]`` and float scales
        ``scale [N]`` as they are; ``input_scale`` multiplies the input channels first."""
        if weight.dim() != 2 or scale.shape != (weight.shape[0],) or act_bits not in (8, 16):
            raise ShapeError("an int8 linear layer needs weight [N, K], scale [N] and act_bits 8 or 16",
                             weight=tuple(weight.shape), scale=tuple(scale.shape), act_bits=act_bits)
        layer = cls(weight.shape[1], weight.shape[0], W8A8(), bias=bias is not None,
                    smoothed=input_scale is not None, act_bits=act_bits)
        layer.w8.copy_(weight.to(torch.int8))
        layer.wscale.copy_(scale.float())
        if bias is not None:
            layer.bias.copy_(bias.float())
        if input_scale is not None:
            layer.input_scale.copy_(input_scale.float())
        return layer

    def dequantize(self) -> torch.Tensor:
        """Return the quantized weight as float32 ``[out, in]``, as it multiplies the (smoothed) input."""
        return self.w8.float() * self.wscale[:, None]

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """Run the int8 GEMM (CUDA) or its reference, plus the 16-bit product of this batch's outlier columns."""
        if self.act_bits == 16:
            return x2.float() @ self.dequantize().t()
        fn = int8_gemm_scaled if x2.is_cuda else reference_int8_gemm_scaled
        # only llm.int8 layers look for outlier columns: the search waits on the device (nonzero), which a
        # plain W8A8 or W6A6 forward need not do (and could then not be captured in a CUDA graph)
        columns = (x2.detach().abs().amax(dim=0) >= self.threshold).nonzero().squeeze(1) \
            if self.recipe == "llm.int8" else None
        if columns is None or columns.numel() == 0:
            xq, xs = quantize_tokens(x2, self.act_bits)
            return fn(xq, self.w8, xs, self.wscale, torch.float32)
        xq, xs = quantize_tokens(x2.index_fill(1, columns, 0.0), 8)
        x16 = x2[:, columns].half()
        w16 = (self.w8[:, columns].float() * self.wscale[:, None]).half()
        outlier = x16 @ w16.t() if x2.is_cuda else x16.float() @ w16.float().t()  # fp16 operands either way
        return fn(xq, self.w8, xs, self.wscale, torch.float32) + outlier.float()
