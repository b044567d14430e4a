"""Round-to-nearest quantizers: the integer math every format and recipe shares.

Weights arrive as ``nn.Linear`` stores them, ``[N, K]`` (out, in), and leave K-major and packed
(``[K_padded // 8, N]`` int32, see :mod:`quant.packing`) with per-group tensors ``[G, N]``.
"""

from __future__ import annotations

import torch

from quant.errors import ShapeError
from quant.packing import pack_int4, padded_k

__all__ = [
    "quantize_w4a16_weight",
    "quantize_w4a8_weight",
    "quantize_w4a4_weight",
    "quantize_sym_int4_weight",
    "quantize_channel_weight",
    "quantize_per_group",
    "quantize_per_token",
    "quantize_kv",
    "dequantize_kv",
    "W4A8_PROTECT",
]

W4A8_PROTECT = 119  # QServe's protective range: int8 levels kept so (q4 - z) * s never leaves int8


def _groups(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """Return the weight K-major, zero-padded to whole groups, as ``[G, group_size, N]`` float32."""
    n, k = weight.shape
    kp = padded_k(k, group_size)
    wt = torch.zeros(kp, n, dtype=torch.float32, device=weight.device)
    wt[:k] = weight.detach().float().t()
    return wt.view(kp // group_size, group_size, n)


def _fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """Round scales to fp16 (what the kernels read), raising if a weight is too large for that."""
    half = scale.half()
    if not torch.isfinite(half).all():
        raise ShapeError("weights too large for fp16 group scales (max about 1e6); rescale the layer",
                         max_scale=float(scale.max()))
    return half.float()


def quantize_w4a16_weight(weight: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """Asymmetric group-wise int4: ``W ~= (q - zero) * scale`` with fp16 scale and zero per (group, column)."""
    g = _groups(weight, group_size)
    lo = g.amin(dim=1).clamp(max=0.0)
    hi = g.amax(dim=1).clamp(min=0.0)
    scale = _fp16_scale(((hi - lo) / 15.0).clamp(min=1e-6))
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = torch.clamp(torch.round(g / scale[:, None]) + zero[:, None], 0, 15)
    return {"qweight": pack_int4(q.reshape(-1, q.shape[-1])), "scales": scale.half(), "zeros": zero.half()}


def quantize_w4a8_weight(weight: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """QServe progressive quantization: int8 per output channel, then int4 per group with uint8 scale and zero.

    Lin et al., "QServe: W4A8KV4 Quantization and System Co-design" (2024), section 4.1: the int8 level
    uses the protective range [-119, 119], so the integer dequantization ``(q4 - z) * s`` of every group
    (``s <= 16``) stays inside int8 and runs on integer units before the int8 MMA.
    """
    w = weight.detach().float()
    wscale = (w.abs().amax(dim=1) / W4A8_PROTECT).clamp(min=1e-8)
    w8 = torch.round(w / wscale[:, None]).clamp(-W4A8_PROTECT, W4A8_PROTECT)
    g = _groups(w8, group_size)
    lo, hi = g.amin(dim=1).clamp(max=0.0), g.amax(dim=1).clamp(min=0.0)
    gscale = torch.ceil((hi - lo) / 15.0).clamp(min=1.0)
    gzero = torch.round(-lo / gscale).clamp(0, 15)
    q = torch.clamp(torch.round(g / gscale[:, None]) + gzero[:, None], 0, 15)
    return {"qweight": pack_int4(q.reshape(-1, q.shape[-1])), "gscale": gscale.to(torch.uint8),
            "gzero": gzero.to(torch.uint8), "wscale": wscale}


def quantize_w4a4_weight(weight: torch.Tensor, group_size: int, outlier_idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Symmetric group-wise int4 for the ordinary input channels, per-channel int8 for the outlier ones.

    The outlier columns are zeroed in the int4 part and kept in an int8 ``[n_outliers, N]`` block: the
    mixed-precision split of LLM.int8() (Dettmers et al. 2022) and COMET (2024) applied to activations.
    """
    w = weight.detach().float().clone()
    outlier_w = w[:, outlier_idx]
    w[:, outlier_idx] = 0.0
    oscale = (outlier_w.abs().amax(dim=1) / 127.0 if outlier_w.shape[1] else w.new_zeros(w.shape[0])).clamp(min=1e-8)
    oweight = torch.round(outlier_w / oscale[:, None]).clamp(-127, 127).t().contiguous()
    return {**quantize_sym_int4_weight(w, group_size), "oweight": oweight.to(torch.int8), "oscale": oscale}


def quantize_sym_int4_weight(weight: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """Symmetric group-wise int4: ``W ~= (q - 8) * scale`` with one fp16 scale per (group, column), packed."""
    g = _groups(weight, group_size)
    scale = _fp16_scale((g.abs().amax(dim=1) / 7.0).clamp(min=1e-6))
    q = torch.clamp(torch.round(g / scale[:, None]), -8, 7) + 8
    return {"qweight": pack_int4(q.reshape(-1, q.shape[-1])), "scales": scale.half()}


def quantize_per_token(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization of ``[M, K]`` activations to ``bits`` (4 or 8), as int8 plus float32 scales."""
    qmax = 2 ** (bits - 1) - 1
    if x.shape[-1] == 0:
        return torch.zeros(x.shape, dtype=torch.int8, device=x.device), torch.ones(x.shape[:-1], device=x.device)
    scale = (x.detach().float().abs().amax(dim=-1) / qmax).clamp(min=1e-8)
    q = torch.clamp(torch.round(x.float() / scale[..., None]), -qmax - 1, qmax)
    return q.to(torch.int8), scale


def quantize_channel_weight(weight: torch.Tensor, bits: int = 8) -> dict[str, torch.Tensor]:
    """Symmetric per-output-channel ``bits``-bit (<= 8) codes held in int8: ``W ~= w8 * wscale[:, None]``, ``[N, K]``."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    wscale = (w.abs().amax(dim=1) / qmax).clamp(min=1e-8)
    return {"w8": torch.round(w / wscale[:, None]).clamp(-qmax, qmax).to(torch.int8), "wscale": wscale}


def quantize_per_group(x: torch.Tensor, group_size: int, a8_groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-(row, group) quantization of ``[M, K]`` activations: 8 bits where ``a8_groups`` says, else 4.

    Returns int8 codes ``[M, K]`` and float32 scales ``[M, G]`` (``G = len(a8_groups)``, groups past K unused).
    """
    m, k = x.shape
    groups = a8_groups.shape[0]
    padded = torch.zeros(m, groups * group_size, dtype=torch.float32, device=x.device)
    padded[:, :k] = x.detach().float()
    g = padded.view(m, groups, group_size)
    qmax = torch.where(a8_groups.to(x.device), 127.0, 7.0)[None, :, None]
    scale = (g.abs().amax(dim=-1, keepdim=True) / qmax).clamp(min=1e-8)
    q = torch.clamp(torch.round(g / scale), -qmax - 1, qmax)
    return q.view(m, -1)[:, :k].to(torch.int8).contiguous(), scale.squeeze(-1)


def quantize_kv(t: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 over groups of the last axis: uint8 codes, fp16 scales, uint8 zeros per group.

    A last axis that is not a multiple of ``group_size`` ends in a shorter group (padded with copies of its last
    number, which leave the group's range unchanged); codes keep the input's shape.
    """
    width = t.shape[-1]
    x = t.detach().float()
    pad = -width % group_size
    if pad:
        x = torch.cat([x, x[..., -1:].expand(*x.shape[:-1], pad)], dim=-1)
    g = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    lo, hi = g.amin(dim=-1).clamp(max=0), g.amax(dim=-1).clamp(min=0)  # the range holds 0: the zero point is a code
    scale = ((hi - lo) / 15.0).clamp(min=1e-6)
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = torch.clamp(torch.round(g / scale[..., None]) + zero[..., None], 0, 15)
    return q.to(torch.uint8).reshape(x.shape)[..., :width], scale.half(), zero.to(torch.uint8)


def dequantize_kv(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """Invert :func:`quantize_kv` up to rounding, returning float32 of the codes' shape."""
    width = q.shape[-1]
    per_number = lambda t: t.float().repeat_interleave(group_size, dim=-1)[..., :width]  # noqa: E731
    return (q.float() - per_number(zero)) * per_number(scale)
