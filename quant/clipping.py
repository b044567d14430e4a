"""AWQ's weight clipping search: shrink each (output channel, group) range where that lowers the output error.

Lin et al., "AWQ" (MLSys 2024), section 3.3 and its reference code (``auto_clip``): after scaling, the
largest weights of a group set its quantization step, so clipping them (to ``r`` times the group's range,
``r`` from 1.0 down to 0.5) trades their error for a finer step on the rest. ``r`` is chosen per output
channel and group to minimize ``|x_g (w_g - Q(w_g))|^2`` on the calibration rows ``x_g`` of that group.
"""

from __future__ import annotations

import torch
from torch import nn

from quant.configs import QuantConfig
from quant.layers import layer_type

__all__ = ["CLIP_RATIOS", "search_clipping"]

CLIP_RATIOS = tuple(round(1.0 - 0.05 * i, 2) for i in range(11))  # 1.0, 0.95, ..., 0.5 (AWQ's grid)


def _clipped(weight: torch.Tensor, ratio: torch.Tensor, group_size: int) -> torch.Tensor:
    """Clip each ``[N, group]`` block of ``weight`` to ``ratio[n, g]`` times its own min and max."""
    n, k = weight.shape
    groups = -(-k // group_size)
    padded = torch.zeros(n, groups * group_size, device=weight.device)
    padded[:, :k] = weight
    g = padded.view(n, groups, group_size)
    hi = g.amax(dim=-1, keepdim=True).clamp(min=0.0) * ratio[..., None]
    lo = g.amin(dim=-1, keepdim=True).clamp(max=0.0) * ratio[..., None]
    return torch.maximum(torch.minimum(g, hi), lo).view(n, -1)[:, :k]


@torch.no_grad()
def search_clipping(linear: nn.Linear, x: torch.Tensor, config: QuantConfig, smooth: torch.Tensor | None,
                    group_size: int) -> nn.Linear:
    """Return a copy of ``linear`` whose weight is clipped per (output channel, group) by AWQ's search.

    ``x`` holds calibration rows of the layer's input. Ranges are clipped after ``smooth`` (where the format
    quantizes), and each ratio's error is measured through the format's own quantizer and the layer's
    output on ``x``, so the choice fits the format's rounding.
    """
    weight = linear.weight.detach().float()
    n, k = weight.shape
    groups = -(-k // group_size)
    x = x.float().to(weight.device)
    scale = smooth.float().to(weight.device) if smooth is not None else torch.ones(k, device=weight.device)
    scaled = weight * scale  # the ranges are clipped where the format quantizes: after smoothing
    cls = layer_type(config)
    best_err = torch.full((n, groups), float("inf"), device=weight.device)
    best_ratio = torch.ones(n, groups, device=weight.device)
    probe = nn.Linear(k, n, bias=False, device=weight.device)
    for ratio in CLIP_RATIOS:
        probe.weight.copy_(_clipped(scaled, torch.full((n, groups), ratio, device=weight.device), group_size) / scale)
        layer = cls.from_linear(probe, config, smooth=smooth, act_absmax=x.abs().amax(dim=0).to(weight.device))
        diff = weight - layer.weight
        err = torch.stack([(x[:, g * group_size:(g + 1) * group_size] @ diff[:, g * group_size:(g + 1) * group_size].t())
                           .pow(2).sum(dim=0) for g in range(groups)], dim=1)
        better = err < best_err
        best_err, best_ratio = torch.where(better, err, best_err), torch.where(better, ratio, best_ratio)
    out = nn.Linear(k, n, bias=linear.bias is not None, device=weight.device)
    out.weight.copy_(_clipped(scaled, best_ratio, group_size) / scale)
    if linear.bias is not None:
        out.bias.copy_(linear.bias.detach().float())
    return out
