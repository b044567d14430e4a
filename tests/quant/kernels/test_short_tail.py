"""K padded only to the group: every int4 kernel (under TRITON_INTERPRET=1) on weights that end in a packed tail.

Each kernel is checked against its torch reference and against an independent reference: the codes decoded
nibble by nibble from the layout quant.packing documents (not through ``unpack_int4``), dequantized by the
format's formula and multiplied in float64; the decoded weights are also checked to lie within a quantization
step of the float weight, so a wrong layout cannot pass by being wrong in the same way on both sides.
"""

import pytest
import torch

from quant.kernels import (Blocks, reference_fmpq, reference_w4a4, reference_w4a8, reference_w4a16,
                           triton_dequant_w4a4, triton_dequant_w4a8, triton_dequant_w4a16, triton_fmpq,
                           triton_w4a4, triton_w4a8, triton_w4a16)
from quant.packing import padded_k
from quant.quantizers import (quantize_per_group, quantize_per_token, quantize_sym_int4_weight, quantize_w4a4_weight,
                              quantize_w4a8_weight, quantize_w4a16_weight)

pytestmark = pytest.mark.triton

# (m, k, group, blocks): no whole tile (K = 100 -> 128 at g128, 3 sub-blocks at g32), a tile and a tail
# (384 at g128, 300 -> 320 at g32), split-K with the tail on the last slice, both W4A16 paths (BM <= 16 raw,
# taller fp16), N not a multiple of BN
CASES = [
    (1, 100, 128, Blocks(16, 32, 1, 4, 2)),
    (5, 96, 32, Blocks(16, 32, 1, 2, 2)),
    (3, 384, 128, Blocks(16, 32, 2, 4, 2)),
    (20, 300, 32, Blocks(32, 32, 2, 4, 2)),
    (7, 640, 64, Blocks(16, 16, 3, 4, 2)),
]
N = 40


def decode(packed: torch.Tensor) -> torch.Tensor:
    """Codes ``[K_padded, N]`` read one row at a time from quant.packing's documented formulas."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    tiles = packed.shape[0] // 32
    rows = []
    for k in range(packed.shape[0] * 8):
        if k < 256 * tiles:
            t, i, r = k // 256, (k % 256) // 32, k % 32
            word = words[32 * t + r]
        else:
            j, a, i = (k - 256 * tiles) // 32, (k % 32) // 8, k % 8
            word = words[32 * tiles + 4 * j + a]
        rows.append((word >> (4 * i)) & 15)
    return torch.stack(rows)


def per_row(t: torch.Tensor, gs: int, k: int) -> torch.Tensor:
    """Group-wise ``[G, N]`` values repeated to each of the first ``k`` rows, float64."""
    return t.double().repeat_interleave(gs, 0)[:k]


@pytest.mark.parametrize("m, k, gs, blocks", CASES)
def test_w4a16(m, k, gs, blocks, rng):
    w, x = torch.randn(N, k, generator=rng), torch.randn(m, k, generator=rng).half()
    t = quantize_w4a16_weight(w, gs)
    assert t["qweight"].shape == (padded_k(k, gs) // 8, N) and padded_k(k, gs) == -(-k // gs) * gs
    scale = per_row(t["scales"], gs, k)
    w_deq = (decode(t["qweight"])[:k].double() - per_row(t["zeros"], gs, k)) * scale
    assert torch.all((w_deq - w.t().double()).abs() <= scale + 1e-6)  # within one step of the float weight
    y = triton_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs, blocks).double()
    independent = x.double() @ w_deq
    ref = reference_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs).double()
    # fp16 dequantization (one rounding, 2^-11) and an fp16 output (2^-11), against float32 / float64 sums
    bound = 2.0**-10 * (x.double().abs() @ w_deq.abs()) + 2.0**-10 * independent.abs() + 1e-3
    assert torch.all((y - ref).abs() <= bound) and torch.all((y - independent).abs() <= bound)
    dequant = triton_dequant_w4a16(t["qweight"], t["scales"], t["zeros"], gs, k)
    assert torch.equal(dequant, w_deq.half())  # (q - z) exact, one rounding of the product in both


@pytest.mark.parametrize("m, k, gs, blocks", CASES)
def test_w4a8(m, k, gs, blocks, rng):
    w = torch.randn(N, k, generator=rng)
    t = quantize_w4a8_weight(w, gs)
    xq, xs = quantize_per_token(torch.randn(m, k, generator=rng), 8)
    w8 = (decode(t["qweight"])[:k] - per_row(t["gzero"], gs, k).long()) * per_row(t["gscale"], gs, k).long()
    w_deq = w8.double() * t["wscale"].double()[None, :]
    step = per_row(t["gscale"], gs, k) * t["wscale"].double()[None, :]
    assert torch.all((w_deq - w.t().double()).abs() <= step + t["wscale"].double()[None, :])  # int8, then int4
    ones_m, ones_n = torch.ones(m), torch.ones(N)
    y = triton_w4a8(xq, ones_m, t["qweight"], t["gscale"], t["gzero"], ones_n, gs, torch.float32, blocks)
    assert torch.equal(y, reference_w4a8(xq, ones_m, t["qweight"], t["gscale"], t["gzero"], ones_n, gs))
    assert torch.equal(y.double(), xq.double() @ w8.double())  # |sums| < 2^24: exact in float32
    dequant = triton_dequant_w4a8(t["qweight"], t["gscale"], t["gzero"], gs, k)
    assert dequant.shape == (N, k) and torch.equal(dequant, w8.t().to(torch.int8))


@pytest.mark.parametrize("m, k, gs, blocks", CASES)
def test_w4a4(m, k, gs, blocks, rng):
    w, x = torch.randn(N, k, generator=rng), torch.randn(m, k, generator=rng)
    idx = torch.tensor([2, k - 1])  # the last real input channel is an outlier: the padding rows stay zero codes
    t = quantize_w4a4_weight(w, gs, idx)
    xq, xs = quantize_per_token(x.index_fill(1, idx, 0.0), 4)
    xoq, xos = quantize_per_token(x[:, idx], 8)
    scale = per_row(t["scales"], gs, k)
    w_deq = (decode(t["qweight"])[:k].double() - 8) * scale
    plain = w.t().double().index_fill(0, idx, 0.0)
    assert torch.all((w_deq - plain).abs() <= scale / 2 + 1e-6)
    args = (xq, xs, xoq, xos, t["qweight"], t["scales"], t["oweight"], t["oscale"], gs)
    y = triton_w4a4(*args, torch.float32, blocks).double()
    independent = (xq.double() @ w_deq) * xs.double()[:, None] \
        + (xoq.double() @ t["oweight"].double()) * t["oscale"].double()[None, :] * xos.double()[:, None]
    bound = 1e-5 * ((xq.double().abs() @ w_deq.abs()) * xs.double()[:, None]).max() + 1e-5 * independent.abs()
    assert torch.all((y - reference_w4a4(*args).double()).abs() <= bound)
    assert torch.all((y - independent).abs() <= bound)
    assert torch.equal(triton_dequant_w4a4(t["qweight"], t["scales"], gs, k), w_deq.half())


@pytest.mark.parametrize("m, k, gs, blocks", CASES)
def test_fmpq(m, k, gs, blocks, rng):
    w, x = torch.randn(N, k, generator=rng), torch.randn(m, k, generator=rng)
    t = quantize_sym_int4_weight(w, gs)
    a8 = torch.zeros(t["scales"].shape[0], dtype=torch.bool)
    a8[-1] = True  # the tail's last group in 8 bits
    xq, xs = quantize_per_group(x, gs, a8)
    w_deq = (decode(t["qweight"])[:k].double() - 8) * per_row(t["scales"], gs, k)
    y = triton_fmpq(xq, xs, t["qweight"], t["scales"], gs, torch.float32, blocks).double()
    independent = (xq.double() * xs.double().repeat_interleave(gs, 1)[:, :k]) @ w_deq
    bound = 1e-5 * (xq.double().abs() * xs.double().repeat_interleave(gs, 1)[:, :k]) @ w_deq.abs() + 1e-6
    assert torch.all((y - reference_fmpq(xq, xs, t["qweight"], t["scales"], gs).double()).abs() <= bound)
    assert torch.all((y - independent).abs() <= bound)
