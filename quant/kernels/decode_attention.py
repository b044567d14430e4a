"""Decode attention over an int4 KV cache: one new query per (batch, head) against every cached token.

The cache is :class:`quant.kv_cache.QuantKVCache`'s: per head and token, asymmetric int4 codes packed two a
byte (the head's first half of channels in the low nibbles, the second half in the high ones) with, per group
of channels, a uint8 log2 scale code and an int8 zero point. The kernel streams the packed keys and values once
(decode is bound by reading the cache, the reason for KV4: QServe, Lin et al. 2024, section 5.3), unpacks the
two halves with a shift and a mask, dequantizes each block of tokens in registers (each channel's group
scale and zero gathered by ``channel // group``), and keeps an online softmax (FlashAttention's running max
and sum). ``reference_decode_attention`` (dequantize, then softmax in float32) is the oracle.

A cache with static ranges (codes only, a fixed ``low + code * step`` grid per head and channel) runs the same
kernel with ``STATIC``; with ``rope_base`` its keys were cached before RoPE, and the kernel rotates each
dequantized block of keys at its tokens' positions before the dot products (``reference_static_decode_attention``
is that kernel's oracle).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from quant.errors import ShapeError
from quant.kv_cache import QuantKVCache, dequantize_heads, dequantize_static, rotate_half_rope

__all__ = ["decode_attention", "reference_decode_attention", "triton_decode_attention",
           "reference_static_decode_attention", "triton_static_decode_attention"]


def decode_attention(q: torch.Tensor, cache: QuantKVCache, sm_scale: float) -> torch.Tensor:
    """Attend ``q [B, H, D]`` over everything ``cache`` holds: the Triton kernel for int4 on CUDA, else the reference.

    The cache's value centers, if any, are added back to the output (the key centers need nothing).
    """
    if len(cache) == 0:
        raise ShapeError("the cache holds no tokens yet; append the current token's key and value first")
    if cache.ranges is not None:
        attend = triton_static_decode_attention if q.is_cuda and cache.bits == 4 else reference_static_decode_attention
        return attend(q, cache.keys[0], *cache.ranges[0], cache.values[0], *cache.ranges[1], sm_scale, cache.rope_base)
    attend = triton_decode_attention if q.is_cuda and cache.bits == 4 else reference_decode_attention
    out = attend(q, *cache.keys, *cache.values, sm_scale)
    return out if cache.centers is None else out + cache.centers[1].to(out.device)


def reference_decode_attention(q: torch.Tensor, k_codes: torch.Tensor, k_scale: torch.Tensor, k_zero: torch.Tensor,
                               v_codes: torch.Tensor, v_scale: torch.Tensor, v_zero: torch.Tensor,
                               sm_scale: float) -> torch.Tensor:
    """Attend ``q [B, H, D]`` over a cache: codes, ``[B, H, T, groups]`` scale codes and zeros; float32 ``[B, H, D]``.

    Codes ``[B, H, T, D/2]`` are packed int4, ``[B, H, T, D]`` int8 (the KV8 cache, which has no kernel here).
    """
    bits = 4 if 2 * k_codes.shape[-1] == q.shape[-1] else 8
    k, v = dequantize_heads(k_codes, k_scale, k_zero, bits), dequantize_heads(v_codes, v_scale, v_zero, bits)
    return _attend(q, k, v, sm_scale)


def reference_static_decode_attention(q: torch.Tensor, k_codes: torch.Tensor, k_low: torch.Tensor,
                                      k_step: torch.Tensor, v_codes: torch.Tensor, v_low: torch.Tensor,
                                      v_step: torch.Tensor, sm_scale: float,
                                      rope_base: float | None = None) -> torch.Tensor:
    """Attend ``q [B, H, D]`` over static-range codes (``[H, D]`` lows and steps); keys rotated if ``rope_base``."""
    bits = 4 if 2 * k_codes.shape[-1] == q.shape[-1] else 8
    k, v = dequantize_static(k_codes, k_low, k_step, bits), dequantize_static(v_codes, v_low, v_step, bits)
    if rope_base is not None:
        k = rotate_half_rope(k, torch.arange(k.shape[2]), rope_base)
    return _attend(q, k, v, sm_scale)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float) -> torch.Tensor:
    """Softmax attention of one query per (batch, head) over float32 keys and values ``[B, H, T, D]``."""
    scores = torch.einsum("bhd,bhtd->bht", q.float(), k) * sm_scale
    return torch.einsum("bht,bhtd->bhd", scores.softmax(dim=-1), v)


@triton.jit
def _dequantize_half(codes, scale_ptr, zero_ptr, rows, head, offs_d, mask_t, FIRST: tl.constexpr,
                     HALF: tl.constexpr, GROUP: tl.constexpr, STATIC: tl.constexpr):
    """One packed half of a block of tokens as float32 ``[BT, HALF]``: ``(code - zero) * 2 ** ((scale - 128) / 8)``,
    or (``STATIC``: ``scale_ptr`` the steps, ``zero_ptr`` the lows, ``[H, D]``) ``low + code * step``."""
    nibble = ((codes & 15) if FIRST == 0 else (codes >> 4)).to(tl.float32)
    if STATIC:
        step = tl.load(scale_ptr + head * 2 * HALF + FIRST + offs_d)
        low = tl.load(zero_ptr + head * 2 * HALF + FIRST + offs_d)
        return low[None, :] + nibble * step[None, :]
    groups = 2 * HALF // GROUP
    idx = rows[:, None] * groups + ((FIRST + offs_d) // GROUP)[None, :]
    scale = tl.load(scale_ptr + idx, mask=mask_t[:, None], other=128).to(tl.float32)
    zero = tl.load(zero_ptr + idx, mask=mask_t[:, None], other=0).to(tl.float32)
    return (nibble - zero) * tl.exp2((scale - 128.0) / 8.0)


@triton.jit
def _decode_kernel(q_ptr, kc_ptr, ks_ptr, kz_ptr, vc_ptr, vs_ptr, vz_ptr, o_ptr, T, H, sm_scale, log2_base,
                   HALF: tl.constexpr, KG: tl.constexpr, VG: tl.constexpr, BT: tl.constexpr, STATIC: tl.constexpr,
                   ROPE: tl.constexpr):
    bh = tl.program_id(0)
    head = bh % H
    offs_d = tl.arange(0, HALF)
    if ROPE:  # channel pair (i, i + HALF) turns by position / base ** (i / HALF)
        inv_freq = tl.exp2(-log2_base * offs_d.to(tl.float32) / HALF)
    q_lo = tl.load(q_ptr + bh * 2 * HALF + offs_d).to(tl.float32)
    q_hi = tl.load(q_ptr + bh * 2 * HALF + HALF + offs_d).to(tl.float32)
    m_i = tl.zeros([1], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([1], dtype=tl.float32)
    acc_lo = tl.zeros([HALF], dtype=tl.float32)
    acc_hi = tl.zeros([HALF], dtype=tl.float32)
    for t0 in range(0, T, BT):
        offs_t = t0 + tl.arange(0, BT)
        mask_t = offs_t < T
        rows = bh * T + offs_t
        packed = rows[:, None] * HALF + offs_d[None, :]
        kc = tl.load(kc_ptr + packed, mask=mask_t[:, None], other=0).to(tl.int32)
        k_lo = _dequantize_half(kc, ks_ptr, kz_ptr, rows, head, offs_d, mask_t, 0, HALF, KG, STATIC)
        k_hi = _dequantize_half(kc, ks_ptr, kz_ptr, rows, head, offs_d, mask_t, HALF, HALF, KG, STATIC)
        if ROPE:
            angles = offs_t.to(tl.float32)[:, None] * inv_freq[None, :]
            cos, sin = tl.cos(angles), tl.sin(angles)
            k_lo, k_hi = k_lo * cos - k_hi * sin, k_lo * sin + k_hi * cos
        dot = tl.sum(k_lo * q_lo[None, :], axis=1) + tl.sum(k_hi * q_hi[None, :], axis=1)
        s = tl.where(mask_t, dot * sm_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        vc = tl.load(vc_ptr + packed, mask=mask_t[:, None], other=0).to(tl.int32)
        v_lo = _dequantize_half(vc, vs_ptr, vz_ptr, rows, head, offs_d, mask_t, 0, HALF, VG, STATIC)
        v_hi = _dequantize_half(vc, vs_ptr, vz_ptr, rows, head, offs_d, mask_t, HALF, HALF, VG, STATIC)
        acc_lo = acc_lo * alpha + tl.sum(p[:, None] * v_lo, axis=0)
        acc_hi = acc_hi * alpha + tl.sum(p[:, None] * v_hi, axis=0)
        m_i = m_new
    tl.store(o_ptr + bh * 2 * HALF + offs_d, acc_lo / l_i)
    tl.store(o_ptr + bh * 2 * HALF + HALF + offs_d, acc_hi / l_i)


def triton_decode_attention(q: torch.Tensor, k_codes: torch.Tensor, k_scale: torch.Tensor, k_zero: torch.Tensor,
                            v_codes: torch.Tensor, v_scale: torch.Tensor, v_zero: torch.Tensor,
                            sm_scale: float, block_t: int = 64) -> torch.Tensor:
    """Attend ``q [B, H, D]`` over the packed int4 cache with the Triton kernel; return float32 ``[B, H, D]``."""
    b, h, d = _check_codes(q, k_codes, v_codes)
    groups = {}
    for name, scale, zero in (("keys", k_scale, k_zero), ("values", v_scale, v_zero)):
        g = scale.shape[-1] if scale.dim() == 4 else 0
        if g == 0 or d % g or scale.shape != (*k_codes.shape[:3], g) or zero.shape != scale.shape:
            raise ShapeError(f"the {name}' scales and zeros must be [B, H, T, groups] with groups dividing D",
                             scale=tuple(scale.shape), zero=tuple(zero.shape), head_dim=d)
        groups[name] = d // g
    return _launch(q, (k_codes, k_scale, k_zero, v_codes, v_scale, v_zero), sm_scale, block_t, groups["keys"],
                   groups["values"], static=False, rope_base=None)


def triton_static_decode_attention(q: torch.Tensor, k_codes: torch.Tensor, k_low: torch.Tensor, k_step: torch.Tensor,
                                   v_codes: torch.Tensor, v_low: torch.Tensor, v_step: torch.Tensor, sm_scale: float,
                                   rope_base: float | None = None, block_t: int = 64) -> torch.Tensor:
    """Attend ``q [B, H, D]`` over packed int4 static-range codes with the Triton kernel; float32 ``[B, H, D]``."""
    b, h, d = _check_codes(q, k_codes, v_codes)
    if any(t.shape != (h, d) for t in (k_low, k_step, v_low, v_step)):
        raise ShapeError("static lows and steps must be [H, D]", head_dim=d, heads=h,
                         shapes=[tuple(t.shape) for t in (k_low, k_step, v_low, v_step)])
    tables = [t.float() for t in (k_step, k_low, v_step, v_low)]
    return _launch(q, (k_codes, *tables[:2], v_codes, *tables[2:]), sm_scale, block_t, 1, 1, static=True,
                   rope_base=rope_base)


def _check_codes(q: torch.Tensor, k_codes: torch.Tensor, v_codes: torch.Tensor) -> tuple[int, int, int]:
    """Return ``(B, H, D)`` after checking ``q [B, H, D]`` (D/2 a power of two) against codes ``[B, H, T>0, D/2]``."""
    b, h, d = q.shape
    t = k_codes.shape[2] if k_codes.dim() == 4 else 0
    if d % 2 or d // 2 & (d // 2 - 1) or k_codes.shape != (b, h, t, d // 2) or v_codes.shape != k_codes.shape \
            or t == 0:
        raise ShapeError("decode attention needs q [B, H, D] (D/2 a power of two) and codes [B, H, T>0, D/2]",
                         q=tuple(q.shape), k_codes=tuple(k_codes.shape), v_codes=tuple(v_codes.shape))
    return b, h, d


def _launch(q: torch.Tensor, cache: tuple[torch.Tensor, ...], sm_scale: float, block_t: int, key_group: int,
            value_group: int, *, static: bool, rope_base: float | None) -> torch.Tensor:
    """Run the kernel: one program per (batch, head); ``cache`` is (key codes, two key tables, value codes, two)."""
    b, h, d = q.shape
    out = torch.empty(b, h, d, device=q.device, dtype=torch.float32)
    args = [x.contiguous() for x in (q, *cache)]
    log2_base = math.log2(rope_base) if rope_base is not None else 0.0
    _decode_kernel[(b * h,)](*args, out, cache[0].shape[2], h, float(sm_scale), log2_base, HALF=d // 2, KG=key_group,
                             VG=value_group, BT=block_t, STATIC=static, ROPE=rope_base is not None, num_warps=4)
    return out
