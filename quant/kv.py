"""KV4: group-wise int4 keys and values, applied by wrapping the layers that produce them."""

from __future__ import annotations

import torch
from torch import nn

from quant.configs import KV4
from quant.quantizers import dequantize_kv, quantize_kv

__all__ = ["KVQuantized"]


class KVQuantized(nn.Module):
    """Wrap a key or value projection so its output is what an int4 KV cache would return.

    A width that is not a multiple of the config's group size ends in a shorter group (never refused).
    """

    def __init__(self, inner: nn.Module, config: KV4) -> None:
        super().__init__()
        self.inner, self.config = inner, config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project, then store-and-load through group-wise int4 (round-to-nearest, asymmetric)."""
        y = self.inner(x)
        return dequantize_kv(*quantize_kv(y, self.config.group_size), self.config.group_size).to(y.dtype)
