"""Peer 4-bit weight-only quantizers measured beside quant's formats: torchao's int4 and HQQ, on CPU.

- torchao (PyPI ``torchao``): ``Int4WeightOnlyConfig``'s packed formats run only on CUDA (tinygemm, fbgemm), so
  on CPU the peer is ``IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(g))`` with asymmetric
  (min/max) group scales, the same grid as tinygemm's int4, dequantized to float for the matmul.
- HQQ (PyPI ``hqq``; Badri and Shaji 2023, "Half-Quadratic Quantization of Large Machine Learning Models"):
  ``HQQLinear`` with 4-bit groups, zero points and scales refined by its half-quadratic solver, no calibration data.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["torchao_int4", "hqq_int4"]


def torchao_int4(model: nn.Module, group_size: int) -> nn.Module:
    """Quantize every ``nn.Linear`` of ``model`` in place to torchao's asymmetric int4 weight-only groups."""
    from torchao.quantization import IntxWeightOnlyConfig, MappingType, quantize_
    from torchao.quantization.granularity import PerGroup

    quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size),
                                          mapping_type=MappingType.ASYMMETRIC))
    return model


def hqq_int4(model: nn.Module, group_size: int) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` in place by HQQ's 4-bit ``HQQLinear`` (float32 compute)."""
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    config = BaseQuantizeConfig(nbits=4, group_size=group_size)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, HQQLinear(child, config, compute_dtype=torch.float32, device="cpu"))
    return model
