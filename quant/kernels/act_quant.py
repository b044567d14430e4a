"""Per-token symmetric activation quantization in one launch: the input step of the integer-activation layers.

:func:`quant.quantizers.quantize_per_token` is the oracle; as separate torch operations it costs about seven
launches per call (abs, max, divide, clamp, round, clamp, cast), more than the int4 GEMV it feeds at small
batches (bench/layer_bench.py). Here one program per row reads the row twice (its maximum, then the codes)
with the same float32 operations: an IEEE division (``div_rn``) and round-half-to-even (adding and subtracting
1.5 * 2^23), so the codes and scales equal the oracle's.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quant.quantizers import quantize_per_token

__all__ = ["quantize_tokens", "triton_quantize_per_token"]

_ROUND = tl.constexpr(12582912.0)  # 1.5 * 2^23: x + _ROUND - _ROUND rounds |x| < 2^22 to the nearest even integer


@triton.jit
def _per_token_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, QMAX: tl.constexpr, BK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BK)
    amax = tl.zeros((BK,), dtype=tl.float32)
    for k0 in range(0, K, BK):
        v = tl.load(x_ptr + row * stride_xm + k0 + offs, mask=k0 + offs < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(v))
    scale = tl.maximum(tl.math.div_rn(tl.max(amax, axis=0), QMAX), 1e-8)
    tl.store(s_ptr + row, scale)
    for k0 in range(0, K, BK):
        mask = k0 + offs < K
        v = tl.load(x_ptr + row * stride_xm + k0 + offs, mask=mask, other=0.0).to(tl.float32)
        r = (tl.math.div_rn(v, scale) + _ROUND) - _ROUND
        q = tl.minimum(tl.maximum(r, -QMAX - 1.0), QMAX)
        tl.store(q_ptr + row * K + k0 + offs, q.to(tl.int8), mask=mask)


def triton_quantize_per_token(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel on ``[M, K]`` activations (K > 0): int8 codes ``[M, K]`` and float32 scales ``[M]``."""
    if x.stride(1) != 1:
        x = x.contiguous()
    m, k = x.shape
    q = torch.empty(m, k, device=x.device, dtype=torch.int8)
    scale = torch.empty(m, device=x.device, dtype=torch.float32)
    _per_token_kernel[(m,)](x, q, scale, k, x.stride(0), QMAX=float(2 ** (bits - 1) - 1),
                            BK=min(4096, triton.next_power_of_2(k)), num_warps=4)
    return q, scale


def quantize_tokens(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``[M, K]`` activations per row to ``bits`` (4, 6 or 8) as :func:`quantize_per_token` does: the kernel
    on CUDA (one launch), the torch oracle elsewhere or for an empty input."""
    if not x.is_cuda or x.dim() != 2 or 0 in x.shape:
        return quantize_per_token(x, bits)
    return triton_quantize_per_token(x, bits)
