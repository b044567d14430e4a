"""The int4/int8 KV cache (grouped scales per head and token, packed halves, centers) and SmoothAttention vs float."""

import numpy as np
import pytest
import torch
from torch import nn

from quant import (QuantKVCache, ShapeError, decode_scales, dequantize_heads, dequantize_static, encode_scales,
                   fold_smooth_attention, kv_centers, kv_ranges, quantize_heads, quantize_static, rotate_half_rope,
                   smooth_attention_scales)


def _naive(x: np.ndarray, bits: int, group: int) -> np.ndarray:
    """The cache's rounding written out in numpy: per group, log2 scale in eighths, zero widened to 0 if far."""
    levels, offset = 2**bits - 1, 0 if bits == 4 else 128
    out = np.empty_like(x)
    for start in range(0, x.shape[-1], group):
        g = x[..., start:start + group]
        lo, hi = g.min(-1, keepdims=True), g.max(-1, keepdims=True)
        for _ in range(2):
            s = 2.0 ** (np.clip(np.round(np.log2(np.maximum((hi - lo) / levels, 2.0**-16)) * 8) + 128, 0, 255) / 8 - 16)
            z = np.round(-lo / s)
            far = (z < offset - 128) | (z > offset + 127)
            lo, hi = np.where(far, np.minimum(lo, 0), lo), np.where(far, np.maximum(hi, 0), hi)
        out[..., start:start + group] = (np.clip(np.round(g / s) + z, 0, levels) - z) * s
    return out


@pytest.mark.parametrize("bits, group", [(4, None), (4, 16), (8, None), (8, 32)])
def test_codes_match_a_numpy_reference_within_half_a_step(bits, group, rng):
    t = torch.randn(2, 3, 5, 64, generator=rng) * torch.linspace(0.1, 4, 64)
    t[0, 0, 0] = t[0, 0, 0].abs() + 50  # one vector far from 0 for its spread: its range is widened to hold 0
    codes, scale, zero = quantize_heads(t, bits, group)
    groups = 64 // (group or 64)
    assert codes.shape == (2, 3, 5, 64 if bits == 8 else 32) and scale.shape == zero.shape == (2, 3, 5, groups)
    assert scale.dtype == torch.uint8 and zero.dtype == torch.int8
    back = dequantize_heads(codes, scale, zero, bits)
    np.testing.assert_allclose(back.double().numpy(), _naive(t.double().numpy(), bits, group or 64), rtol=1e-5,
                               atol=1e-5)
    step = decode_scales(scale).repeat_interleave(group or 64, dim=-1)
    lo = t.view(2, 3, 5, groups, -1).amin(-1).clamp(max=0).repeat_interleave(group or 64, dim=-1)
    inside = t >= lo  # (every number is: the range is the group's own, or widened to 0)
    assert bool(inside.all()) and torch.all((back - t).abs() <= step * 0.5 * 1.001 + step * (2**bits - 1) * 0.044)


def test_scale_codes_are_eighths_of_a_power_of_two(rng):
    s = torch.rand(1000, generator=rng) * 100 + 1e-4
    back = decode_scales(encode_scales(s))
    assert torch.all((back / s - 1).abs() <= 2 ** (1 / 16) - 1 + 1e-6)
    every_code = torch.arange(256).to(torch.uint8)
    assert torch.equal(encode_scales(decode_scales(every_code)), every_code)


def test_int4_packs_first_half_low_second_half_high(rng):
    t = torch.randn(1, 1, 1, 8, generator=rng)
    codes, scale, zero = quantize_heads(t, 4)
    x = t[0, 0, 0].double().numpy()
    s = float(decode_scales(scale)[0, 0, 0, 0])
    naive = np.clip(np.round(x / s) + int(zero[0, 0, 0, 0]), 0, 15).astype(int)  # the schema, written out
    assert [int(c) & 15 for c in codes[0, 0, 0]] == list(naive[:4])
    assert [int(c) >> 4 for c in codes[0, 0, 0]] == list(naive[4:])


def test_cache_appends_and_counts_its_bytes(rng):
    cache = QuantKVCache(4)
    k, v = torch.randn(2, 4, 7, 32, generator=rng), torch.randn(2, 4, 7, 32, generator=rng)
    cache.append(k[:, :, :3], v[:, :, :3])
    cache.append(k[:, :, 3:], v[:, :, 3:])
    assert len(cache) == 7
    whole = QuantKVCache(4)
    whole.append(k, v)
    assert all(torch.equal(a, b) for a, b in zip(cache.keys + cache.values, whole.keys + whole.values))
    # per head and token: 16 bytes of codes + 1 (scale code) + 1 (zero), for keys and values
    assert cache.nbytes() == 2 * 2 * 4 * 7 * (16 + 2)
    grouped = QuantKVCache(4, key_group=8)  # keys in 4 groups of 8 channels: 3 more bytes of keys per head and token
    grouped.append(k, v)
    assert grouped.keys[1].shape == (2, 4, 7, 4) and grouped.values[1].shape == (2, 4, 7, 1)
    assert grouped.nbytes() == 2 * 4 * 7 * (16 + 2 * 4 + 16 + 2)
    with pytest.raises(ShapeError):
        cache.append(k, v[..., :16])
    with pytest.raises(ShapeError):
        QuantKVCache(3)
    with pytest.raises(ShapeError):
        QuantKVCache(4, key_group=5).append(k, v)


def test_smooth_attention_keeps_scores_and_flattens_keys(rng):
    d, heads = 32, 2
    q_proj, k_proj = nn.Linear(64, heads * d), nn.Linear(64, heads * d)
    with torch.no_grad():
        k_proj.weight[3] *= 30.0  # an outlier key channel (and its RoPE partner shares the factor)
    x = torch.randn(50, 64, generator=rng)
    keys = k_proj(x).detach().view(50, heads, d)
    scales = smooth_attention_scales(keys)
    assert torch.equal(scales[:, :d // 2], scales[:, d // 2:])

    def scores(dequantize: bool) -> torch.Tensor:  # per head: queries times (int4-cached) keys
        q, k = q_proj(x).detach().view(50, heads, d), k_proj(x).detach().view(50, heads, d)
        k = dequantize_heads(*quantize_heads(k, 4), 4) if dequantize else k
        return torch.einsum("ahd,bhd->hab", q, k)

    exact = scores(False)
    plain_error = float((scores(True) - exact).norm())
    fold_smooth_attention(q_proj, k_proj, scales)
    assert torch.allclose(scores(False), exact, rtol=1e-4, atol=1e-2)  # scores unchanged by the fold
    assert float((scores(True) - exact).norm()) < 0.5 * plain_error


def test_centered_cache_attends_like_the_uncentered_keys_and_values(rng):
    from quant.kernels import decode_attention

    b, h, t, d = 2, 3, 9, 32
    offset = torch.linspace(-6, 6, d)  # constant per-channel offsets: they widen every token's range
    k, v = torch.randn(b, h, t, d, generator=rng) + offset, torch.randn(b, h, t, d, generator=rng) - offset
    q = torch.randn(b, h, d, generator=rng)
    centers = kv_centers(k, v)
    np.testing.assert_allclose(centers[0].numpy(), k.double().mean(dim=(0, 2)).numpy(), rtol=1e-5, atol=1e-6)
    cache = QuantKVCache(4, centers=centers)
    cache.append(k, v)
    # numpy: softmax attention over the dequantized codes plus the centers
    kd = dequantize_heads(*cache.keys, 4).double().numpy() + centers[0].double().numpy()[:, None, :]
    vd = dequantize_heads(*cache.values, 4).double().numpy() + centers[1].double().numpy()[:, None, :]
    scores = np.einsum("bhd,bhtd->bht", q.double().numpy(), kd) * d**-0.5
    p = np.exp(scores - scores.max(-1, keepdims=True))
    expected = np.einsum("bht,bhtd->bhd", p / p.sum(-1, keepdims=True), vd)
    out = decode_attention(q, cache, d**-0.5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)
    # and centering loses less than the plain cache against float attention
    exact = torch.einsum("bht,bhtd->bhd", (torch.einsum("bhd,bhtd->bht", q, k) * d**-0.5).softmax(-1), v)
    plain = QuantKVCache(4)
    plain.append(k, v)
    assert float((out - exact).norm()) < float((decode_attention(q, plain, d**-0.5) - exact).norm())
    assert cache.nbytes() == plain.nbytes() + 2 * h * d * 4  # the two float32 center tables
    with pytest.raises(ShapeError):
        QuantKVCache(4, centers=(centers[0], centers[1][:, :8]))
    with pytest.raises(ShapeError):
        decode_attention(q, QuantKVCache(4), d**-0.5)


def _numpy_rope(x: np.ndarray, base: float) -> np.ndarray:
    """Rotate-half RoPE as complex numbers: pair (i, i + D/2) at position p times exp(1j p / base ** (2 i / D))."""
    half = x.shape[-1] // 2
    p = np.arange(x.shape[-2])[:, None] / base ** (np.arange(half) / half)[None, :]
    z = (x[..., :half] + 1j * x[..., half:]) * np.exp(1j * p)
    return np.concatenate([z.real, z.imag], axis=-1)


def test_static_ranges_pick_the_least_squares_shrink_and_round_within_half_a_step(rng):
    h, d = 3, 16
    calib_k = torch.randn(4, h, 50, d, generator=rng) * torch.linspace(0.2, 3, d) + torch.linspace(-5, 5, d)
    calib_k[0, 0, 0, 0] = 40.0  # one far sample: a lopsided range
    calib_v = torch.randn(4, h, 50, d, generator=rng) ** 3  # heavy tails
    tables = kv_ranges(calib_k, calib_v)
    for (low, step), calib in zip(tables, (calib_k, calib_v)):
        assert low.shape == step.shape == (h, d)
        f = calib.double().numpy().transpose(1, 3, 0, 2).reshape(h, d, -1)  # [H, D, samples]
        lo, hi = f.min(-1), f.max(-1)
        errors = []
        shrink = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)
        for c_low in shrink:  # numpy: each end moved in by its own factor of the half-range, every pair's error
            for c_high in shrink:
                a = (lo + hi) / 2 - (hi - lo) / 2 * c_low
                s = (hi - lo) / 2 * (c_low + c_high) / 15
                q = np.clip(np.round((f - a[..., None]) / s[..., None]), 0, 15)
                errors.append((((a[..., None] + q * s[..., None]) - f) ** 2).sum(-1))
        mine = (((dequantize_static(quantize_static(calib, low, step, 4), low, step, 4) - calib) ** 2)
                .double().sum(dim=(0, 2)).numpy())
        np.testing.assert_allclose(mine, np.min(errors, axis=0), rtol=1e-4, atol=1e-6)
        assert np.all(np.min(errors, axis=0) <= errors[0])  # never worse than the full calibration range
    low, step = tables[1]
    x = torch.rand(2, h, 5, d, generator=rng) * step[:, None, :] * 15 + low[:, None, :]  # inside every range
    back = dequantize_static(quantize_static(x, low, step, 4), low, step, 4)
    assert torch.all((back - x).abs() <= step[:, None, :] * 0.5 * (1 + 1e-5))


def test_static_cache_holds_codes_only_and_rotates_pre_rope_keys(rng):
    from quant.kernels import decode_attention

    b, h, t, d = 2, 3, 12, 32
    k, v = torch.randn(b, h, t, d, generator=rng) + torch.linspace(-4, 4, d), torch.randn(b, h, t, d, generator=rng)
    q = torch.randn(b, h, d, generator=rng)
    ranges = kv_ranges(k, v)
    cache = QuantKVCache(4, ranges=ranges, rope_base=100.0)
    cache.append(k[:, :, :5], v[:, :, :5])
    cache.append(k[:, :, 5:], v[:, :, 5:])
    assert len(cache.keys) == 1 and cache.keys[0].shape == (b, h, t, d // 2)
    # codes only per token: a quarter of fp16's 2 bytes a number, plus four [H, D] float32 tables
    assert cache.constant_bytes() == 4 * h * d * 4 and cache.nbytes() == 2 * b * h * t * d // 2 + 4 * h * d * 4
    # numpy: dequantize by the formula from the unpacked nibbles, rotate the keys at positions 0..t-1, attend
    codes_k, codes_v = (np.concatenate([c.numpy() & 15, c.numpy() >> 4], -1) for c in (cache.keys[0], cache.values[0]))
    (k_low, k_step), (v_low, v_step) = (tuple(x.double().numpy()[:, None, :] for x in r) for r in ranges)
    kd = _numpy_rope(k_low + codes_k * k_step, 100.0)
    vd = v_low + codes_v * v_step
    scores = np.einsum("bhd,bhtd->bht", q.double().numpy(), kd) * d**-0.5
    p = np.exp(scores - scores.max(-1, keepdims=True))
    expected = np.einsum("bht,bhtd->bhd", p / p.sum(-1, keepdims=True), vd)
    out = decode_attention(q, cache, d**-0.5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rotate_half_rope(k, torch.arange(t), 100.0).double().numpy(),
                               _numpy_rope(k.double().numpy(), 100.0), rtol=1e-4, atol=1e-4)
    # and it stays close to float attention over the rotated float keys
    kr = rotate_half_rope(k, torch.arange(t), 100.0)
    exact = torch.einsum("bht,bhtd->bhd", (torch.einsum("bhd,bhtd->bht", q, kr) * d**-0.5).softmax(-1), v)
    assert float((out - exact).norm() / exact.norm()) < 0.2
    with pytest.raises(ShapeError, match="needs static ranges"):
        QuantKVCache(4, rope_base=100.0)
    with pytest.raises(ShapeError, match="no centers or groups"):
        QuantKVCache(4, ranges=ranges, centers=kv_centers(k, v))
    with pytest.raises(ShapeError):
        QuantKVCache(4, ranges=(ranges[0], (ranges[1][0][:, :8], ranges[1][1][:, :8])))
    with pytest.raises(ShapeError, match="do not match"):
        QuantKVCache(4, ranges=ranges).append(k[:, :2], v[:, :2])
    odd = kv_ranges(k[..., :7], v[..., :7])
    with pytest.raises(ShapeError, match="even head_dim"):
        QuantKVCache(4, ranges=odd)
    QuantKVCache(8, ranges=kv_ranges(k[..., :7], v[..., :7], bits=8)).append(k[..., :7], v[..., :7])  # int8: any
