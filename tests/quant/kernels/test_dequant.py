"""Large-M path: Triton dequantization (under TRITON_INTERPRET=1) and the dispatch to cuBLAS-style GEMMs."""

import pytest
import torch

from quant.kernels import (DEQUANT_GEMM_MIN_M, dequantize_w4a8_int8, dequantize_w4a16, reference_w4a4,
                           reference_w4a8, reference_w4a16, triton_dequant_w4a4, triton_dequant_w4a8,
                           triton_dequant_w4a16, triton_w4a4, triton_w4a8, triton_w4a16, use_dequant_gemm)
from quant.packing import unpack_int4
from quant.quantizers import quantize_per_token, quantize_w4a4_weight, quantize_w4a8_weight, quantize_w4a16_weight

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("k, n, gs", [(300, 40, 32), (512, 72, 256), (1024, 16, 512)])
def test_dequantized_weights_are_exact(k, n, gs, rng):
    w = torch.randn(n, k, generator=rng)
    t16, t8 = quantize_w4a16_weight(w, gs), quantize_w4a8_weight(w, gs)
    idx = torch.tensor([1, 5])
    t4 = quantize_w4a4_weight(w, gs, idx)
    # (q - z) is a small integer, exact in fp16; one product with an fp16 scale rounds once in either
    # implementation, so the fp16 results are equal bit for bit; the int8 intermediate is integer math
    ref16 = dequantize_w4a16(t16["qweight"], t16["scales"], t16["zeros"], gs)[:k].half()
    assert torch.equal(triton_dequant_w4a16(t16["qweight"], t16["scales"], t16["zeros"], gs, k), ref16)
    ref8 = dequantize_w4a8_int8(t8["qweight"], t8["gscale"], t8["gzero"], gs)[:k].t().to(torch.int8)
    assert torch.equal(triton_dequant_w4a8(t8["qweight"], t8["gscale"], t8["gzero"], gs, k), ref8)
    ref4 = ((unpack_int4(t4["qweight"]) - 8).float() * t4["scales"].float().repeat_interleave(gs, 0))[:k].half()
    assert torch.equal(triton_dequant_w4a4(t4["qweight"], t4["scales"], gs, k), ref4)


def test_large_batches_take_the_dequant_path_and_match_the_references(rng):
    m, k, n, gs = DEQUANT_GEMM_MIN_M + 3, 264, 48, 64
    assert use_dequant_gemm(m, k, n) and not use_dequant_gemm(m - 4, k, n) and not use_dequant_gemm(m, k + 1, n)
    w, x = torch.randn(n, k, generator=rng), torch.randn(m, k, generator=rng)
    t = quantize_w4a16_weight(w, gs)
    y = triton_w4a16(x.half(), t["qweight"], t["scales"], t["zeros"], gs)
    ref = reference_w4a16(x.half(), t["qweight"], t["scales"], t["zeros"], gs)
    assert float((y.float() - ref).norm() / ref.norm()) < 2e-3  # fp16 weights and output, fp32 reference
    t = quantize_w4a8_weight(w, gs)
    xq, xs = quantize_per_token(x, 8)
    ones_m, ones_n = torch.ones(m), torch.ones(n)
    y = triton_w4a8(xq, ones_m, t["qweight"], t["gscale"], t["gzero"], ones_n, gs, torch.float32)
    assert torch.equal(y, reference_w4a8(xq, ones_m, t["qweight"], t["gscale"], t["gzero"], ones_n, gs))
    idx = torch.tensor([0, 9, 200])
    t = quantize_w4a4_weight(w, gs, idx)
    xq, xs = quantize_per_token(x.index_fill(1, idx, 0.0), 4)
    xoq, xos = quantize_per_token(x[:, idx], 8)
    args = (xq, xs, xoq, xos, t["qweight"], t["scales"], t["oweight"], t["oscale"], gs)
    y, ref = triton_w4a4(*args, torch.float32), reference_w4a4(*args)
    assert float((y - ref).norm() / ref.norm()) < 2e-3  # fp16 operands (int4 * scale rounds once) and output
