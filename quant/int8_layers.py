"""Int8 per-output-channel weights outside linear layers: ``Int8Conv2d`` (float activations) and the quantizer
``int8_per_channel`` (a weight of any rank). The int8 linear layer is ``quant.w8a8_linear.W8A8Linear``.
``Int8Conv2d`` holds the integers as buffers, so ``state_dict`` round-trips them exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quant.errors import ShapeError
from quant.quantizers import quantize_channel_weight

__all__ = ["Int8Conv2d", "int8_per_channel"]


def int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a float weight symmetric int8 per output channel (axis 0, any rank): the int8 integers and the
    float32 scales ``[N]``."""
    w = weight.detach().float().cpu()
    codes = quantize_channel_weight(w.reshape(w.shape[0], -1), 8)
    return codes["w8"].reshape(w.shape), codes["wscale"]


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
