"""Triton int8 GEMM with the W4A8 scale epilogue (under TRITON_INTERPRET=1) against exact integer products."""

import pytest
import torch

from quant.kernels import int8_gemm_scaled, reference_int8_gemm_scaled

pytestmark = pytest.mark.triton

# K not a multiple of the 128-deep step (masked tail) and a multiple; M and N not multiples of the tiles;
# M on both sides of the 256-row block switch.
CASES = [(5, 300, 40), (70, 256, 130), (300, 512, 64)]


@pytest.mark.parametrize("m, k, n", CASES)
def test_integer_product_is_exact(m, k, n, rng):
    a = torch.randint(-128, 128, (m, k), generator=rng, dtype=torch.int8)
    b = torch.randint(-128, 128, (n, k), generator=rng, dtype=torch.int8)
    # unit scales and a float32 output: |acc| <= 512 * 128 * 128 < 2^24, so float32 holds the int32 exactly
    y = int8_gemm_scaled(a, b, torch.ones(m), torch.ones(n), torch.float32)
    assert torch.equal(y, (a.double() @ b.double().t()).float())


@pytest.mark.parametrize("m, k, n", CASES)
def test_scales_are_applied_per_row_and_column(m, k, n, rng):
    a = torch.randint(-127, 128, (m, k), generator=rng, dtype=torch.int8)
    b = torch.randint(-127, 128, (n, k), generator=rng, dtype=torch.int8)
    # scales keep |y| < 2^12 (|acc| <= 512 * 127 * 127 < 2^23): no fp16 overflow
    xs, ws = (torch.rand(m, generator=rng) + 0.1) * 2**-6, (torch.rand(n, generator=rng) + 0.1) * 2**-6
    y = int8_gemm_scaled(a, b, xs, ws)
    ref = (a.double() @ b.double().t()) * xs.double()[:, None] * ws.double()[None, :]
    # exact int32 times two fp32 scales (two fp32 roundings, 2^-23 each), then one fp16 rounding (2^-11)
    assert y.dtype == torch.float16
    assert torch.all((y.double() - ref).abs() <= 2.0**-10 * ref.abs() + 1e-6)


@pytest.mark.parametrize("m, k, n", CASES)
def test_reference_matches_the_kernel(m, k, n, rng):
    a = torch.randint(-127, 128, (m, k), generator=rng, dtype=torch.int8)
    b = torch.randint(-127, 128, (n, k), generator=rng, dtype=torch.int8)
    xs, ws = torch.rand(m, generator=rng) + 0.1, torch.rand(n, generator=rng) + 0.1
    y = int8_gemm_scaled(a, b, xs, ws, torch.float32)
    ref = reference_int8_gemm_scaled(a, b, xs, ws, torch.float32)
    # the same exact integer product and the same two float32 scale multiplications
    torch.testing.assert_close(y, ref, rtol=2.0**-22, atol=0.0)
