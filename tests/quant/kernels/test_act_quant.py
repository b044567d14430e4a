"""The per-token activation quantization kernel (under TRITON_INTERPRET=1 on CPU) against quantize_per_token."""

import pytest
import torch

from quant.kernels.act_quant import quantize_tokens, triton_quantize_per_token
from quant.quantizers import quantize_per_token

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("m, k, bits", [(1, 384, 8), (5, 1000, 4), (3, 5000, 8), (2, 7, 4)])
def test_codes_and_scales_equal_the_torch_oracle(m, k, bits, rng):
    # same float32 operations (IEEE division, round half to even): equal codes and scales, ties included
    qmax = 2 ** (bits - 1) - 1
    x = (torch.randn(m, k, generator=rng) * 3).half()
    if k >= 5:  # row 0 has scale exactly 1 (its maximum is qmax) and four exact ties
        x[0] = x[0].clamp(-1, 1)
        x[0, :5] = torch.tensor([qmax, 0.5, -0.5, 1.5, -2.5]).half()
    q, s = triton_quantize_per_token(x, bits)
    q_ref, s_ref = quantize_per_token(x, bits)
    assert q.dtype == torch.int8 and s.dtype == torch.float32
    assert torch.equal(s, s_ref)
    assert torch.equal(q, q_ref)


def test_strided_rows_and_zero_rows(rng):
    # a column slice (row stride > K) and an all-zero row (scale clamped to 1e-8, codes 0)
    x = torch.randn(4, 600, generator=rng)[:, 100:400]
    x[2] = 0.0
    q, s = triton_quantize_per_token(x, 8)
    q_ref, s_ref = quantize_per_token(x, 8)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)
    assert torch.all(q[2] == 0)


def test_dispatch_off_cuda_is_the_oracle(rng):
    x = torch.randn(3, 64, generator=rng)
    for got, want in zip(quantize_tokens(x, 4), quantize_per_token(x, 4)):
        assert torch.equal(got, want)
    empty = torch.zeros(2, 0)
    q, s = quantize_tokens(empty, 8)
    assert q.shape == (2, 0) and s.shape == (2,)
