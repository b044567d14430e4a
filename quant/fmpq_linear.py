"""``FMPQLinear``: W4A4 with fine-grained mixed-precision activations (COMET's FMPQ).

Liu et al., "COMET: Towards Practical W4A4KV4 LLMs Serving" (ASPLOS 2025), section 4: activations are
quantized with one scale per token and per group of input channels (not one per token over all of K); the
few groups that hold activation outliers stay in 8 bits, the rest take 4; a channel permutation gathers the
outlier channels into those groups. Here the permutation sorts input channels by their calibration
magnitude (largest first) and is folded into the weights: the weight's input rows are stored in that order,
so the layer gathers its input once (``x[:, perm]``) and the kernel reads contiguous groups. The 8-bit
groups are the ``ceil(a8_fraction * groups)`` groups of largest calibration magnitude, i.e. the first ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from quant.configs import FMPQ, QuantConfig
from quant.errors import CalibrationError, ConfigError
from quant.kernels import reference_fmpq, triton_fmpq
from quant.layer_base import QuantLayer
from quant.packing import padded_k, unpack_int4
from quant.quantizers import quantize_per_group, quantize_sym_int4_weight

__all__ = ["FMPQLinear"]


class FMPQLinear(QuantLayer):
    """A linear layer with group-wise int4 weights and per-(token, group) 4- or 8-bit activations."""

    def __init__(self, in_features: int, out_features: int, config: QuantConfig, *, bias: bool = True,
                 smoothed: bool = False, recipe: str = "rtn") -> None:
        if not isinstance(config, FMPQ):
            raise ConfigError("FMPQLinear takes FMPQ", got=type(config).__name__)
        super().__init__(in_features, out_features, config, bias=bias, smoothed=smoothed, recipe=recipe)
        kp = padded_k(in_features, config.group_size)
        self.register_buffer("qweight", torch.zeros(kp // 8, out_features, dtype=torch.int32))
        self.register_buffer("scales", torch.zeros(kp // config.group_size, out_features, dtype=torch.float16))
        self.register_buffer("perm", torch.arange(in_features, dtype=torch.int64))
        self.register_buffer("a8_groups", torch.zeros(kp // config.group_size, dtype=torch.bool))

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantConfig, *, smooth: torch.Tensor | None = None,
                    act_absmax: torch.Tensor | None = None, recipe: str = "rtn") -> FMPQLinear:
        """Quantize ``linear``: order its input channels by ``act_absmax`` (after ``smooth``), pick 8-bit groups."""
        if act_absmax is None:
            raise CalibrationError("FMPQ orders channels and picks its 8-bit groups on calibration data; "
                                   "pass calibration= to quantize_")
        weight = cls.smoothed_weight(linear, smooth)
        n, k = weight.shape
        layer = cls(k, n, config, bias=linear.bias is not None, smoothed=smooth is not None, recipe=recipe)
        magnitude = act_absmax.float().to(weight.device)
        if smooth is not None:
            magnitude = magnitude / smooth.float().to(weight.device)
        perm = torch.argsort(magnitude, descending=True, stable=True)
        a8 = torch.zeros_like(layer.a8_groups)
        a8[: math.ceil(config.a8_fraction * -(-k // config.group_size))] = True
        tensors = {**quantize_sym_int4_weight(weight[:, perm], config.group_size), "perm": perm, "a8_groups": a8}
        return layer.finish_from_linear(linear, smooth, tensors)

    def dequantize(self) -> torch.Tensor:
        """Return the quantized weight as float32 ``[out, in]`` in the input's own channel order."""
        gs, k = self.config.group_size, self.in_features
        w = ((unpack_int4(self.qweight) - 8).float() * self.scales.float().repeat_interleave(gs, 0))[:k]
        out = torch.empty(self.out_features, k, device=w.device)
        out[:, self.perm] = w.t()
        return out

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """Gather the input into the stored channel order, quantize it per (token, group), run the kernel."""
        xq, xs = quantize_per_group(x2[:, self.perm], self.config.group_size, self.a8_groups)
        fn = triton_fmpq if x2.is_cuda else reference_fmpq
        return fn(xq, xs, self.qweight, self.scales, self.config.group_size).float()
