"""Triton decode attention over the int4 cache (TRITON_INTERPRET=1; whole-head, grouped scales) vs reference, numpy."""

import numpy as np
import pytest
import torch

from quant import QuantKVCache, ShapeError, dequantize_heads, kv_ranges
from quant.kernels import (reference_decode_attention, reference_static_decode_attention, triton_decode_attention,
                           triton_static_decode_attention)

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("b, h, t, d, block, key_group, value_group",
                         [(2, 3, 70, 32, 16, None, None), (1, 2, 5, 64, 64, None, None), (2, 2, 37, 32, 16, 8, 32),
                          (1, 3, 20, 16, 8, 4, 16)])
def test_kernel_matches_reference_and_numpy(b, h, t, d, block, key_group, value_group, rng):
    q = torch.randn(b, h, d, generator=rng)
    k, v = torch.randn(b, h, t, d, generator=rng) * 2, torch.randn(b, h, t, d, generator=rng)
    if key_group:
        k[..., :key_group] += 6.0  # outlier key channels, which a group of their own serves better
    cache = QuantKVCache(4, key_group=key_group, value_group=value_group)
    cache.append(k, v)
    out = triton_decode_attention(q, *cache.keys, *cache.values, d**-0.5, block_t=block)
    ref = reference_decode_attention(q, *cache.keys, *cache.values, d**-0.5)
    # an online softmax in float32 over T tokens against a one-pass float32 softmax
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    kd = dequantize_heads(*cache.keys, 4).double().numpy()
    vd = dequantize_heads(*cache.values, 4).double().numpy()
    scores = np.einsum("bhd,bhtd->bht", q.double().numpy(), kd) * d**-0.5
    p = np.exp(scores - scores.max(-1, keepdims=True))
    expected = np.einsum("bht,bhtd->bhd", p / p.sum(-1, keepdims=True), vd)
    np.testing.assert_allclose(ref.numpy(), expected, rtol=1e-4, atol=1e-5)
    # and the int4 cache stays close to attention over the float keys and values
    exact = torch.einsum("bht,bhtd->bhd", (torch.einsum("bhd,bhtd->bht", q, k) * d**-0.5).softmax(-1), v)
    error = float((out - exact).norm() / exact.norm())
    assert error < 0.2
    if key_group:  # the same data through whole-head scales loses more
        whole = QuantKVCache(4)
        whole.append(k, v)
        whole_error = reference_decode_attention(q, *whole.keys, *whole.values, d**-0.5) - exact
        assert error < float(whole_error.norm() / exact.norm())


@pytest.mark.parametrize("b, h, t, d, block, rope_base", [(2, 3, 70, 32, 16, None), (1, 2, 37, 64, 16, 10000.0),
                                                          (2, 1, 5, 16, 8, 100.0)])
def test_static_kernel_matches_reference_and_numpy(b, h, t, d, block, rope_base, rng):
    q = torch.randn(b, h, d, generator=rng)
    k, v = torch.randn(b, h, t, d, generator=rng) * 2 + 1.5, torch.randn(b, h, t, d, generator=rng)
    cache = QuantKVCache(4, ranges=kv_ranges(k, v), rope_base=rope_base)
    cache.append(k, v)
    args = (q, cache.keys[0], *cache.ranges[0], cache.values[0], *cache.ranges[1], d**-0.5, rope_base)
    out = triton_static_decode_attention(*args, block_t=block)
    ref = reference_static_decode_attention(*args)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)  # float32 cos/sin of angles up to t in either
    (k_low, k_step), (v_low, v_step) = (tuple(x.double().numpy()[:, None, :] for x in r) for r in cache.ranges)
    kd = k_low + np.concatenate([cache.keys[0].numpy() & 15, cache.keys[0].numpy() >> 4], -1) * k_step
    vd = v_low + np.concatenate([cache.values[0].numpy() & 15, cache.values[0].numpy() >> 4], -1) * v_step
    if rope_base is not None:  # pair (i, i + D/2) as a complex number, turned by position / base ** (2 i / D)
        angles = np.arange(t)[:, None] / rope_base ** (np.arange(d // 2) / (d // 2))[None, :]
        z = (kd[..., :d // 2] + 1j * kd[..., d // 2:]) * np.exp(1j * angles)
        kd = np.concatenate([z.real, z.imag], -1)
    scores = np.einsum("bhd,bhtd->bht", q.double().numpy(), kd) * d**-0.5
    p = np.exp(scores - scores.max(-1, keepdims=True))
    expected = np.einsum("bht,bhtd->bhd", p / p.sum(-1, keepdims=True), vd)
    np.testing.assert_allclose(ref.numpy(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ShapeError, match=r"\[H, D\]"):
        triton_static_decode_attention(q, cache.keys[0], cache.ranges[0][0][:, :4], *args[3:])
