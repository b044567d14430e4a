"""Triton FMPQ (under TRITON_INTERPRET=1): exact integer parts, scaled output against the reference and numpy."""

import numpy as np
import pytest
import torch

from quant.kernels import Blocks, reference_fmpq, triton_fmpq
from quant.packing import unpack_int4
from quant.quantizers import quantize_per_group, quantize_sym_int4_weight

pytestmark = pytest.mark.triton

CASES = [  # (m, k, n, group, 8-bit groups, blocks): groups below and above the 256 tile, K not a tile multiple
    (3, 200, 40, 32, (0, 3), Blocks(16, 32, 1, 4, 2)),
    (9, 512, 24, 512, (0,), Blocks(16, 16, 2, 4, 2)),
]


def _operands(m, k, n, gs, a8, rng):
    x = torch.randn(m, k, generator=rng)
    x[:, :5] *= 30  # outlier channels in group 0
    t = quantize_sym_int4_weight(torch.randn(n, k, generator=rng), gs)
    mask = torch.zeros(t["scales"].shape[0], dtype=torch.bool)
    mask[list(a8)] = True
    xq, xs = quantize_per_group(x, gs, mask)
    return x, t, xq, xs, mask


@pytest.mark.parametrize("m, k, n, gs, a8, blocks", CASES)
def test_integer_parts_are_exact(m, k, n, gs, a8, blocks, rng):
    _, t, xq, xs, _ = _operands(m, k, n, gs, a8, rng)
    ones_x, unit = torch.ones_like(xs), torch.ones_like(t["scales"])
    y = triton_fmpq(xq, ones_x, t["qweight"], unit, gs, torch.float32, blocks)
    assert torch.equal(y, reference_fmpq(xq, ones_x, t["qweight"], unit, gs))  # |sums| < 2^24: exact


@pytest.mark.parametrize("m, k, n, gs, a8, blocks", CASES)
def test_scaled_output_matches_reference_and_numpy(m, k, n, gs, a8, blocks, rng):
    x, t, xq, xs, mask = _operands(m, k, n, gs, a8, rng)
    for g in range(-(-k // gs)):  # each token's largest code in a group is that group's qmax: 127 or 7
        assert torch.all(xq[:, g * gs:(g + 1) * gs].abs().amax(dim=1) == (127 if mask[g] else 7))
    y = triton_fmpq(xq, xs, t["qweight"], t["scales"], gs, torch.float32, blocks)
    ref = reference_fmpq(xq, xs, t["qweight"], t["scales"], gs)
    w_abs = (unpack_int4(t["qweight"]) - 8).abs().double()[:k] * t["scales"].double().repeat_interleave(gs, 0)[:k]
    mag = (xq.abs().double() * xs.double().repeat_interleave(gs, 1)[:, :k]) @ w_abs
    assert torch.all((y - ref).abs() <= 2.0**-20 * mag.float() + 1e-6)  # fp32 sums of per-group partials
    # independent: per-group loops in numpy over the codes and scales
    codes = (unpack_int4(t["qweight"]).numpy()[:k] - 8).astype(np.float64)
    expected = np.zeros((m, n))
    for g in range(-(-k // gs)):
        lo, hi = g * gs, min(k, (g + 1) * gs)
        part = xq.numpy()[:, lo:hi].astype(np.float64) @ codes[lo:hi]
        expected += part * xs.numpy()[:, g:g + 1] * t["scales"].numpy()[g].astype(np.float64)
    np.testing.assert_allclose(ref.numpy(), expected, rtol=1e-5, atol=1e-5)
    # and the codes approximate x: half a step of each group's own scale
    assert torch.all((xq.float() * xs.repeat_interleave(gs, 1)[:, :k] - x).abs()
                     <= xs.repeat_interleave(gs, 1)[:, :k] / 2 + 1e-6)
