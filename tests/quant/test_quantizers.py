"""Round-to-nearest quantizers: ranges and error bounds, on adversarial weights too."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from quant import ShapeError
from quant.kernels import dequantize_w4a8_int8, dequantize_w4a16
from quant.packing import unpack_int4
from quant.quantizers import (W4A8_PROTECT, dequantize_kv, quantize_kv, quantize_per_token, quantize_w4a4_weight,
                              quantize_w4a8_weight, quantize_w4a16_weight)

heavy = st.tuples(st.integers(0, 2**31), st.floats(1e-3, 100.0), st.integers(1, 200))


def _weight(seed, spread, k):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(5, k, generator=g) * spread
    w[:, 0] *= 100  # one huge column per row: worst case for a group's range
    return w


@settings(max_examples=30, deadline=None)
@given(heavy)
def test_w4a16_error_is_half_a_step_inside_the_range_and_one_step_at_its_ends(args):
    w = _weight(*args)
    t = quantize_w4a16_weight(w, 32)
    deq = dequantize_w4a16(t["qweight"], t["scales"], t["zeros"], 32)[: w.shape[1]].t()
    q = unpack_int4(t["qweight"])[: w.shape[1]].t()
    step = t["scales"].float().t().repeat_interleave(32, 1)[:, : w.shape[1]]
    err = (deq - w).abs() / step
    # the rounded zero point can push a group's extreme one code past 0 or 15, where it is clipped
    assert torch.all(err <= 1.0 + 1e-3)
    inside = (q > 0) & (q < 15)
    assert torch.all(err[inside] <= 0.5 + 1e-3)


@settings(max_examples=30, deadline=None)
@given(heavy)
def test_w4a8_progressive_stays_in_int8_and_close_to_the_int8_level(args):
    w = _weight(*args)
    t = quantize_w4a8_weight(w, 32)
    w8 = dequantize_w4a8_int8(t["qweight"], t["gscale"], t["gzero"], 32)
    assert int(w8.min()) >= -128 and int(w8.max()) <= 127
    assert int(t["gscale"].max()) <= 16 and int(t["gzero"].max()) <= 15
    level = torch.round(w / t["wscale"][:, None]).clamp(-W4A8_PROTECT, W4A8_PROTECT)
    gs = t["gscale"].float().t().repeat_interleave(32, 1)[:, : w.shape[1]]
    assert torch.all((w8[: w.shape[1]].t().float() - level).abs() <= gs / 2)


def test_w4a4_keeps_outlier_columns_out_of_the_int4_part(rng):
    w = torch.randn(6, 256, generator=rng)
    idx = torch.tensor([5, 77])
    t = quantize_w4a4_weight(w, 64, idx)
    q = unpack_int4(t["qweight"]) - 8
    assert torch.all(q[idx] == 0) and q.min() >= -8 and q.max() <= 7
    outl = t["oweight"].float() * t["oscale"][None, :]
    assert torch.allclose(outl, w[:, idx].t(), atol=float(t["oscale"].max()) / 2 + 1e-6)


def test_per_token_quantization_bounds(rng):
    x = torch.randn(7, 50, generator=rng) * torch.logspace(-3, 3, 7)[:, None]
    for bits in (4, 8):
        q, s = quantize_per_token(x, bits)
        qmax = 2 ** (bits - 1) - 1
        assert q.dtype == torch.int8 and int(q.abs().max()) <= qmax + 1
        assert torch.all((q.float() * s[:, None] - x).abs() <= s[:, None] / 2 * (1 + 1e-5))
        assert torch.all(q.abs().amax(dim=1) == qmax)  # each row's largest value hits the top code


@pytest.mark.parametrize("width", [128, 100])
def test_kv4_round_trip_error_is_half_a_step(rng, width):
    t = torch.randn(2, 3, width, generator=rng)
    q, s, z = quantize_kv(t, 32)
    assert q.dtype == torch.uint8 and q.shape == t.shape and int(q.max()) <= 15 and s.shape == (2, 3, 4)
    back = dequantize_kv(q, s, z, 32)
    assert torch.all((back - t).abs() <= s.float().repeat_interleave(32, -1)[..., :width] * 0.51)


def test_kv4_short_last_group_matches_a_group_by_group_reference(rng):
    t = torch.randn(5, 100, generator=rng) * torch.linspace(0.5, 3, 100)
    t[0] = t[0].abs() + 1  # a row of positive numbers only: its range still has to hold the zero point
    back = dequantize_kv(*quantize_kv(t, 32), 32).numpy()
    x = t.double().numpy()
    for start in range(0, 100, 32):  # groups 0-31, 32-63, 64-95 and the short 96-99, each on its own range
        g = x[:, start:start + 32]
        lo, hi = np.minimum(g.min(1, keepdims=True), 0), np.maximum(g.max(1, keepdims=True), 0)
        scale = np.float16(np.maximum((hi - lo) / 15, 1e-6)).astype(np.float64)  # stored in fp16
        zero = np.clip(np.round(-lo / scale), 0, 15)
        expected = (np.clip(np.round(g / scale) + zero, 0, 15) - zero) * scale
        np.testing.assert_allclose(back[:, start:start + 32], expected, rtol=1e-6, atol=1e-6)


def test_weights_beyond_fp16_scales_raise():
    with pytest.raises(ShapeError, match="fp16"):
        quantize_w4a16_weight(torch.full((2, 32), 1e7), 32)
