"""FMPQ W4A4: int8-held activations with one scale per (token, group) times group-wise int4 weights.

COMET's fine-grained mixed-precision product (Liu et al. 2025, section 5): every activation group, 4-bit
(codes -8..7) or 8-bit (codes -127..127), is held in int8 and multiplied on int8 MMA by the int4 weight
widened to int8 in registers; each group's exact int32 partial is scaled by its token's activation scale
and its column's weight scale into a float32 accumulator. A 4-bit and an 8-bit group cost the same here;
the 4-bit groups' gain is memory (two codes a byte) on hardware with int4 MMA. ``reference_fmpq`` is the
oracle.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quant.kernels._launch import Blocks, kernel_output, pick_blocks
from quant.kernels._tiles import int4_group_products, output_tile, store_tile
from quant.packing import tile_split, unpack_int4

__all__ = ["reference_fmpq", "triton_fmpq"]


def reference_fmpq(xq: torch.Tensor, xscale: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                   group_size: int) -> torch.Tensor:
    """Compute ``sum_g xscale[:, g] * (xq_g @ Wq_g) * scales[g]`` in float64, returned as float32."""
    k = xq.shape[1]
    w = (unpack_int4(qweight) - 8).double() * scales.double().repeat_interleave(group_size, 0)
    x = xq.double() * xscale.double().repeat_interleave(group_size, 1)[:, :k]
    return (x @ w[:k]).float()


@triton.jit
def _fmpq_kernel(x_ptr, xs_ptr, qw_ptr, s_ptr, y_ptr, M, N, K, G, n_tiles, stride_xm,
                 GROUP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, SPLIT_K: tl.constexpr,
                 TAIL: tl.constexpr):
    offs_m, offs_n, mask_m, mask_n = output_tile(M, N, BM, BN)
    acc = int4_group_products(x_ptr, xs_ptr, qw_ptr, s_ptr, offs_m, offs_n, mask_m, mask_n, stride_xm, K, N, G,
                              n_tiles, tl.program_id(2), GROUP, BM, BN, SPLIT_K, True, TAIL)
    store_tile(y_ptr, acc, offs_m, offs_n, mask_m, mask_n, N, SPLIT_K)


def triton_fmpq(xq: torch.Tensor, xscale: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                group_size: int, out_dtype: torch.dtype = torch.float16, blocks: Blocks | None = None) -> torch.Tensor:
    """Compute the FMPQ product for int8-held ``xq [M, K]`` and per-(token, group) ``xscale [M, G]``; return ``[M, N]``."""
    xq, xscale = xq.contiguous(), xscale.float().contiguous()
    m, k = xq.shape
    n, (n_tiles, tail) = qweight.shape[1], tile_split(qweight.shape[0])
    b = blocks or pick_blocks(m, n, n_tiles, xq.device, integer=True)
    out = kernel_output(m, n, xq.device, out_dtype, b.split_k)
    grid = (triton.cdiv(m, b.bm), triton.cdiv(n, b.bn), b.split_k)
    _fmpq_kernel[grid](xq, xscale, qweight, scales, out, m, n, k, xscale.shape[1], n_tiles, xq.stride(0),
                       GROUP=group_size, BM=b.bm, BN=b.bn, SPLIT_K=b.split_k, TAIL=tail, num_warps=b.num_warps,
                       num_stages=b.num_stages)
    return out.to(out_dtype)
