"""Layers with int8 weights, one scale per output channel: W8A16 (float activations) and W8A8 (per-token int8).

``Int8Linear`` with ``activation_bits=8`` runs the int8 GEMM with the scale epilogue (Triton on CUDA, its torch
reference elsewhere): the W8A8 format, and the exact int8 intermediate of W4A8 (QServe). With float activations
it multiplies by the dequantized weight. ``Int8Conv2d`` holds a convolution's weight the same way (float
activations). Both hold the integers as buffers, so ``state_dict`` round-trips them exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quant.errors import ShapeError
from quant.kernels import int8_gemm_scaled, reference_int8_gemm_scaled
from quant.quantizers import quantize_per_token

__all__ = ["Int8Conv2d", "Int8Linear", "int8_per_channel"]


def int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a float weight symmetric int8 per output channel: the int8 integers and the float32 scales ``[N]``."""
    w = weight.detach().float().cpu()
    scale = (w.reshape(w.shape[0], -1).abs().amax(dim=1) / 127.0).clamp(min=1e-8)
    q = torch.round(w / scale.view(-1, *([1] * (w.dim() - 1)))).clamp(-127, 127)
    return q.to(torch.int8), scale


class Int8Linear(nn.Module):
    """``y = (x * input_scale) @ (weight * scale).T + bias`` with int8 ``weight [N, K]``; activations float or int8 per token."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, *,
                 activation_bits: int | None = None, input_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.dim() != 2 or scale.shape != (weight.shape[0],) or activation_bits not in (None, 8):
            raise ShapeError("Int8Linear needs weight [N, K], scale [N] and activation_bits None or 8",
                             weight=tuple(weight.shape), scale=tuple(scale.shape), activation_bits=activation_bits)
        self.out_features, self.in_features = weight.shape
        self.activation_bits = activation_bits
        self.register_buffer("weight", weight.to(torch.int8))
        self.register_buffer("scale", scale.float())
        self.register_buffer("bias", None if bias is None else bias.float())
        self.register_buffer("input_scale", None if input_scale is None else input_scale.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape ``[..., in_features]`` (input channels smoothed first, if given)."""
        x2 = x.reshape(-1, self.in_features).float()
        if self.input_scale is not None:
            x2 = x2 * self.input_scale
        if self.activation_bits == 8:
            xq, xs = quantize_per_token(x2, 8)
            gemm = int8_gemm_scaled if x2.is_cuda else reference_int8_gemm_scaled
            y = gemm(xq, self.weight, xs, self.scale, torch.float32)
        else:
            y = x2 @ (self.weight.float() * self.scale[:, None]).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class Int8Conv2d(nn.Module):
    """A 2-D convolution (NCHW, groups 1) with int8 weights ``[Cout, Cin, kh, kw]`` and one scale per channel."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, *,
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        if weight.dim() != 4 or scale.shape != (weight.shape[0],):
            raise ShapeError("Int8Conv2d needs weight [Cout, Cin, kh, kw] and scale [Cout]",
                             weight=tuple(weight.shape), scale=tuple(scale.shape))
        self.stride, self.padding = tuple(stride), tuple(padding)
        self.register_buffer("weight", weight.to(torch.int8))
        self.register_buffer("scale", scale.float())
        self.register_buffer("bias", None if bias is None else bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` of shape ``[B, Cin, H, W]``."""
        weight = self.weight.float() * self.scale[:, None, None, None]
        return F.conv2d(x.float(), weight, self.bias, self.stride, self.padding)
