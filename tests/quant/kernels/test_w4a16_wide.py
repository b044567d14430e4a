"""The wide CUDA W4A16 variant's activation layout (``permute_activations``), checked on CPU by carrying out the
MMAs it feeds: each half must meet, in its mma.sync step, the weight row the kernel dequantizes beside it."""

import pytest
import torch

from quant.kernels.w4a16_cuda import permute_activations
from quant.packing import padded_k


@pytest.mark.parametrize("m, k, m_tiles", [(9, 300, 2), (20, 512, 4), (64, 520, 8), (33, 256, 8)])
def test_each_activation_meets_its_weight_row(m, k, m_tiles, rng):
    kp, n = padded_k(k, 256), 6  # the wide kernel takes whole 256-row tiles only
    x = torch.randn(m, k, generator=rng).half()
    w = torch.randn(k, n, generator=rng, dtype=torch.float64)
    words = permute_activations(x, m_tiles, kp).double().view(kp // 256, m_tiles, 8, 8, 4, 4, 2)  # t mt u g tq q e
    # The A operand of step u, register q (= 2 p + r), half e, at lane tq: nibble q + 4 e of packed row 8 tq + u
    # of tile t (the pair LOP3 takes from one word), which quant.packing fills from weight row 32 (q + 4 e) + 8 tq + u
    t, u, tq, q, e = (torch.arange(s).view([-1 if i == d else 1 for i in range(5)])
                      for d, s in enumerate((kp // 256, 8, 4, 4, 2)))
    rows = 256 * t + 32 * (q + 4 * e) + 8 * tq + u
    a = torch.nn.functional.pad(w, (0, 0, 0, kp - k))[rows]  # [t, u, tq, q, e, n]
    # mma.sync m16n8k16 sums over (tq, q, e) for output row g of row tile mt; the steps over (t, u)
    y = torch.einsum("tmugsqe,tusqen->mgn", words, a).reshape(8 * m_tiles, n)
    torch.testing.assert_close(y[:m], x.double() @ w, rtol=1e-12, atol=1e-12)
    assert torch.all(y[m:] == 0)  # padding rows
