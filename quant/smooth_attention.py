"""SmoothAttention: divide keys by a per-channel factor and multiply queries by it, so int4 keys lose less.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design" (2024), section 5.2: keys have outlier
channels (values do not), which set each head's int4 step. With ``lambda_i = max|K_i| ** alpha`` (alpha 0.5),
``K' = K / lambda`` and ``Q' = Q * lambda`` leave every score ``Q K^T`` unchanged while flattening the keys.
Under rotate-half RoPE, channels ``i`` and ``i + D/2`` are rotated together, so they share one factor; the
factor then commutes with the rotation and is folded into the query and key projections' weights.
"""

from __future__ import annotations

import torch
from torch import nn

from quant.errors import ShapeError

__all__ = ["smooth_attention_scales", "fold_smooth_attention"]


def smooth_attention_scales(keys: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Return ``[H, D]`` factors from calibration keys ``[N, H, D]`` (after RoPE), tied across RoPE pairs."""
    if keys.dim() != 3 or keys.shape[-1] % 2:
        raise ShapeError("calibration keys must be [tokens, heads, head_dim] with an even head_dim",
                         shape=tuple(keys.shape))
    absmax = keys.detach().float().abs().amax(dim=0)
    half = absmax.shape[-1] // 2
    paired = torch.maximum(absmax[:, :half], absmax[:, half:])
    return (torch.cat([paired, paired], dim=-1).clamp(min=1e-5) ** alpha)


@torch.no_grad()
def fold_smooth_attention(q_proj: nn.Linear, k_proj: nn.Linear, scales: torch.Tensor) -> None:
    """Fold ``[H, D]`` factors into the projections in place: query rows times them, key rows divided."""
    flat = scales.reshape(-1).to(q_proj.weight.device, q_proj.weight.dtype)
    if flat.shape[0] != q_proj.out_features or flat.shape[0] != k_proj.out_features:
        raise ShapeError("factors must cover every query and key channel", factors=flat.shape[0],
                         q=q_proj.out_features, k=k_proj.out_features)
    q_proj.weight.mul_(flat[:, None])
    k_proj.weight.div_(flat[:, None])
    if q_proj.bias is not None:
        q_proj.bias.mul_(flat)
    if k_proj.bias is not None:
        k_proj.bias.div_(flat)
