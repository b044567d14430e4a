"""Triton W4A16 (under TRITON_INTERPRET=1 on CPU) against its torch reference."""

import pytest
import torch

from quant.kernels import Blocks, cuda_w4a16, reference_w4a16, triton_w4a16, w4a16_matmul
from quant.quantizers import quantize_w4a16_weight

pytestmark = pytest.mark.triton

# Shapes cover: M, N and K not multiples of the tiles (masks), K spanning several 256-tiles and groups
# of 32..512, split-K 1..3 (partial sums added by the last slice), GEMV-like M = 1, and both kernel paths
# (tiles of <= 16 rows: MMA on raw 1024 + q values; taller tiles: fp16 dequantization).
CASES = [
    (1, 300, 40, 32, Blocks(16, 32, 1, 4, 2)),
    (5, 520, 33, 64, Blocks(16, 32, 3, 4, 2)),
    (37, 256, 64, 128, Blocks(32, 64, 1, 4, 2)),
    (17, 1024, 16, 512, Blocks(16, 16, 2, 4, 2)),
    (40, 768, 48, 128, Blocks(32, 32, 3, 2, 2)),
]


@pytest.mark.parametrize("m, k, n, gs, blocks", CASES)
def test_kernel_matches_reference(m, k, n, gs, blocks, rng):
    w = torch.randn(n, k, generator=rng)
    x = torch.randn(m, k, generator=rng).half()
    t = quantize_w4a16_weight(w, gs)
    y = triton_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs, blocks)
    ref = reference_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs)
    assert y.dtype == torch.float16 and y.shape == (m, n)
    # The tall-tile path dequantizes in fp16 ((q - z) exact, times an fp16 scale: one rounding, 2^-11
    # relative; the raw path has no such rounding) and accumulates in fp32, then rounds the output to fp16
    # (2^-11 relative). The reference is fp32.
    # So each output is off by at most ~2^-11 of sum_k |x_k w_k| plus 2^-11 of |y|.
    bound = (x.float().abs() @ reference_w4a16(torch.eye(k), t["qweight"], t["scales"], t["zeros"], gs).abs())
    assert torch.all((y.float() - ref).abs() <= 2.0**-10 * bound + 2.0**-10 * ref.abs() + 1e-3)


def test_split_k_reuses_its_workspace(rng):
    # the last K slice of a tile resets the tile's counter: a second call (new data, another shape sharing the
    # cached workspace) must again sum exactly its own partials
    for m, k, n, split in [(3, 768, 40, 3), (3, 768, 40, 3), (2, 1024, 72, 4), (3, 768, 40, 2)]:
        w = torch.randn(n, k, generator=rng)
        x = torch.randn(m, k, generator=rng).half()
        t = quantize_w4a16_weight(w, 64)
        y = triton_w4a16(x, t["qweight"], t["scales"], t["zeros"], 64, Blocks(16, 32, split, 2, 2))
        ref = reference_w4a16(x, t["qweight"], t["scales"], t["zeros"], 64)
        bound = (x.float().abs() @ reference_w4a16(torch.eye(k), t["qweight"], t["scales"], t["zeros"], 64).abs())
        assert torch.all((y.float() - ref).abs() <= 2.0**-10 * bound + 2.0**-10 * ref.abs() + 1e-3)


@pytest.mark.parametrize("m, k, n, gs", [(1, 384, 40, 64), (8, 500, 36, 256), (9, 300, 40, 256),
                                         (33, 512, 96, 128), (64, 768, 36, 128)])
def test_matmul_matches_reference_with_the_bias(m, k, n, gs, rng):
    # QuantLinear's W4A16 entry point at each kind of batch: here the Triton kernel and a float32 bias; with
    # QUANT_KERNEL_DEVICE=cuda the CUDA kernel at M <= 8 and, under EINFHE_W4A16_WIDE=1, its wide variant at
    # 9..64 rows (groups of >= 128), each with the bias fused, where K pads to whole 256-row tiles (384 at
    # groups of 64 keeps a packed tail: Triton)
    w = torch.randn(n, k, generator=rng)
    x = torch.randn(m, k, generator=rng).half()
    bias = torch.randn(n, generator=rng)
    t = quantize_w4a16_weight(w, gs)
    y = w4a16_matmul(x, t["qweight"], t["scales"], t["zeros"], gs, bias)
    ref = reference_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs) + bias
    bound = (x.float().abs() @ reference_w4a16(torch.eye(k), t["qweight"], t["scales"], t["zeros"], gs).abs())
    assert y.shape == (m, n)
    assert torch.all((y.float() - ref).abs() <= 2.0**-10 * (bound + bias.abs()) + 2.0**-10 * ref.abs() + 1e-3)


@pytest.mark.cpu_only
def test_matmul_without_cuda_falls_back_to_triton_and_adds_the_bias(rng):
    # QuantLinear's W4A16 entry point: the CUDA kernel only takes CUDA tensors, so here the Triton kernel runs
    # and the bias is added in float32 (the CUDA kernel is checked against the reference on the GPU by
    # bench/kernels_bench.py before it is timed)
    m, k, n, gs = 3, 384, 40, 64
    w = torch.randn(n, k, generator=rng)
    x = torch.randn(m, k, generator=rng).half()
    bias = torch.randn(n, generator=rng)
    t = quantize_w4a16_weight(w, gs)
    assert cuda_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs, bias) is None
    y = w4a16_matmul(x, t["qweight"], t["scales"], t["zeros"], gs, bias)
    ref = reference_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs) + bias
    bound = (x.float().abs() @ reference_w4a16(torch.eye(k), t["qweight"], t["scales"], t["zeros"], gs).abs())
    assert y.dtype == torch.float32 and y.shape == (m, n)
    assert torch.all((y - ref).abs() <= 2.0**-10 * bound + 2.0**-10 * ref.abs() + 1e-3)


def test_cuda_kernels_can_be_switched_off(monkeypatch):
    # EINFHE_CUDA_KERNELS=0: no build is attempted (no nvcc run, no warning) and W4A16 stays on Triton
    from quant.kernels import w4a16_cuda

    monkeypatch.setenv("EINFHE_CUDA_KERNELS", "0")
    w4a16_cuda._extension.cache_clear()
    try:
        assert w4a16_cuda._extension() is None
    finally:
        w4a16_cuda._extension.cache_clear()
