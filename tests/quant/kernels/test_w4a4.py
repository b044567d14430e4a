"""Triton W4A4 (under TRITON_INTERPRET=1 on CPU): exact integer parts, group scaling within fp32 rounding."""

import pytest
import torch

from quant.packing import unpack_int4
from quant.kernels import Blocks, reference_w4a4, triton_w4a4
from quant.quantizers import quantize_per_token, quantize_w4a4_weight

pytestmark = pytest.mark.triton

CASES = [  # (m, k, n, group, outliers, blocks): groups below, at and above the 256 tile; outliers 0..40
    (3, 300, 40, 32, 5, Blocks(16, 32, 1, 4, 2)),
    (20, 512, 33, 256, 0, Blocks(16, 32, 2, 4, 2)),
    (9, 1024, 24, 512, 40, Blocks(16, 16, 3, 4, 2)),
]


def _operands(m, k, n, gs, outliers, rng):
    x = torch.randn(m, k, generator=rng)
    idx = torch.randperm(k, generator=rng)[:outliers].sort().values
    x[:, idx] *= 40
    t = quantize_w4a4_weight(torch.randn(n, k, generator=rng), gs, idx)
    xq, xs = quantize_per_token(x.index_fill(1, idx, 0.0), 4)
    xoq, xos = quantize_per_token(x[:, idx], 8)
    return t, xq, xs, xoq, xos


@pytest.mark.parametrize("m, k, n, gs, outliers, blocks", CASES)
def test_integer_parts_are_exact(m, k, n, gs, outliers, blocks, rng):
    t, xq, _, xoq, _ = _operands(m, k, n, gs, outliers, rng)
    ones_m, ones_n = torch.ones(m), torch.ones(n)
    unit = torch.ones_like(t["scales"])
    # unit scales: every partial is an integer below 2^24, so the float32 sums are exact
    y = triton_w4a4(xq, ones_m, xoq, ones_m, t["qweight"], unit, t["oweight"], ones_n, gs, torch.float32, blocks)
    ref = reference_w4a4(xq, ones_m, xoq, ones_m, t["qweight"], unit, t["oweight"], ones_n, gs)
    assert torch.equal(y, ref)


@pytest.mark.parametrize("m, k, n, gs, outliers, blocks", CASES)
def test_scaled_output_matches_reference(m, k, n, gs, outliers, blocks, rng):
    t, xq, xs, xoq, xos = _operands(m, k, n, gs, outliers, rng)
    args = (xq, xs, xoq, xos, t["qweight"], t["scales"], t["oweight"], t["oscale"], gs)
    y = triton_w4a4(*args, torch.float32, blocks)
    ref = reference_w4a4(*args)
    # per-group int32 partials times fp16 scales summed in fp32 vs a float64 reference: fp32 rounding
    # of a sum of K / group terms, bounded by a few 2^-24 of the sum of magnitudes
    w_abs = (unpack_int4(t["qweight"]) - 8).abs().double()[:k] * t["scales"].double().repeat_interleave(gs, 0)[:k]
    mag = (xq.abs().double() @ w_abs) * xs.double()[:, None] + (xoq.abs().double() @ t["oweight"].abs().double()) * (
        xos.double()[:, None] * t["oscale"].double()[None, :])
    assert torch.all((y - ref).abs() <= 2.0**-20 * mag.float() + 1e-6)
