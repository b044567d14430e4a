"""Activations with an exact low-degree polynomial form, for models meant to run encrypted."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Square"]


class Square(nn.Module):
    """Element-wise x**2: the activation of CryptoNets-style models (one multiplicative level under CKKS)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Square every element."""
        return x * x
