"""The int4/int8 KV cache (per head and token, packed halves) and SmoothAttention, against plain float math."""

import numpy as np
import pytest
import torch
from torch import nn

from quant import QuantKVCache, ShapeError, dequantize_heads, fold_smooth_attention, quantize_heads, smooth_attention_scales


@pytest.mark.parametrize("bits", [4, 8])
def test_codes_are_within_half_a_step_of_each_head_vector(bits, rng):
    t = torch.randn(2, 3, 5, 64, generator=rng) * torch.linspace(0.1, 4, 64)
    codes, scale, zero = quantize_heads(t, bits)
    assert codes.shape == (2, 3, 5, 64 if bits == 8 else 32) and scale.shape == zero.shape == (2, 3, 5)
    back = dequantize_heads(codes, scale, zero, bits)
    step = (t.amax(-1) - t.amin(-1)) / (2**bits - 1)
    assert torch.all((back - t).abs() <= step[..., None] * 0.5 + 1e-3 * step[..., None] + 1e-6)


def test_int4_packs_first_half_low_second_half_high(rng):
    t = torch.randn(1, 1, 1, 8, generator=rng)
    codes, scale, zero = quantize_heads(t, 4)
    x = t[0, 0, 0].double().numpy()
    s = float(scale[0, 0, 0])
    naive = np.clip(np.round(x / s) + int(zero[0, 0, 0]), 0, 15).astype(int)  # the schema, written out
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
    # per head and token: 16 bytes of codes + 2 (fp16 scale) + 1 (uint8 zero), for keys and values
    assert cache.nbytes() == 2 * 2 * 4 * 7 * (16 + 3)
    with pytest.raises(ShapeError):
        cache.append(k, v[..., :16])
    with pytest.raises(ShapeError):
        QuantKVCache(3)


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
