"""Triton W4A8 (under TRITON_INTERPRET=1 on CPU): bit-exact integer product, then scaled like the reference."""

import pytest
import torch

from quant.kernels import Blocks, reference_w4a8, triton_w4a8
from quant.quantizers import quantize_per_token, quantize_w4a8_weight

pytestmark = pytest.mark.triton

CASES = [
    (1, 300, 40, 32, Blocks(16, 32, 1, 4, 2)),
    (5, 520, 33, 64, Blocks(16, 32, 3, 4, 2)),
    (37, 512, 64, 256, Blocks(32, 64, 1, 4, 2)),
]


@pytest.mark.parametrize("m, k, n, gs, blocks", CASES)
def test_integer_product_is_exact(m, k, n, gs, blocks, rng):
    t = quantize_w4a8_weight(torch.randn(n, k, generator=rng), gs)
    xq, _ = quantize_per_token(torch.randn(m, k, generator=rng), 8)
    ones_m, ones_n = torch.ones(m), torch.ones(n)
    # unit scales and a float32 output: |acc| <= K * 127 * 127 < 2^24, so float32 holds the int32 exactly
    y = triton_w4a8(xq, ones_m, t["qweight"], t["gscale"], t["gzero"], ones_n, gs, torch.float32, blocks)
    ref = reference_w4a8(xq, ones_m, t["qweight"], t["gscale"], t["gzero"], ones_n, gs)
    assert torch.equal(y, ref)


@pytest.mark.parametrize("m, k, n, gs, blocks", CASES)
def test_scaled_output_matches_reference(m, k, n, gs, blocks, rng):
    t = quantize_w4a8_weight(torch.randn(n, k, generator=rng), gs)
    xq, xs = quantize_per_token(torch.randn(m, k, generator=rng) * 3, 8)
    y = triton_w4a8(xq, xs, t["qweight"], t["gscale"], t["gzero"], t["wscale"], gs, torch.float16, blocks)
    ref = reference_w4a8(xq, xs, t["qweight"], t["gscale"], t["gzero"], t["wscale"], gs)
    # exact int32 times two fp32 scales, then one fp16 rounding of the output (2^-11 relative)
    assert torch.all((y.float() - ref).abs() <= 2.0**-10 * ref.abs() + 1e-6)
