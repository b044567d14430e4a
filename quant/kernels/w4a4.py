"""W4A4: per-token int4 activations times group-wise int4 weights on int8 MMA, plus an int8 outlier GEMM.

Hopper has no int4 MMA, so both int4 operands are widened to int8 in registers (activations are stored
one value per byte, weights packed as in :mod:`quant.packing` with ``q + 8``) and ``tl.dot`` runs
int8 x int8 -> int32. Each quantization group's int32 partial is scaled by that group's fp16 weight scale
into a float32 accumulator. The few outlier input channels (LLM.int8(), Dettmers et al. 2022; COMET 2024)
run as a second, short int8 x int8 product with their own scales. ``reference_w4a4`` is the oracle.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quant.kernels._launch import Blocks, kernel_output, pick_blocks, use_dequant_gemm
from quant.kernels._tiles import int4_group_products, output_tile, store_tile, x_plane
from quant.kernels.dequant import triton_dequant_w4a4
from quant.packing import tile_split, unpack_int4

__all__ = ["reference_w4a4", "triton_w4a4"]


def reference_w4a4(xq: torch.Tensor, xscale: torch.Tensor, xoq: torch.Tensor, xoscale: torch.Tensor,
                   qweight: torch.Tensor, scales: torch.Tensor, oweight: torch.Tensor, oscale: torch.Tensor,
                   group_size: int) -> torch.Tensor:
    """Compute ``xscale * (xq @ Wq) + xoscale * (xoq @ Wo) * oscale`` in float64, returned as float32."""
    w = (unpack_int4(qweight) - 8).double() * scales.double().repeat_interleave(group_size, 0)
    main = xq.double() @ w[: xq.shape[1]]
    outl = (xoq.double() @ oweight.double()) * oscale.double()[None, :]
    return (main * xscale.double()[:, None] + outl * xoscale.double()[:, None]).float()


@triton.jit
def _w4a4_kernel(x_ptr, xs_ptr, xo_ptr, xos_ptr, qw_ptr, s_ptr, ow_ptr, os_ptr, y_ptr,
                 M, N, K, NO, n_tiles, stride_xm, stride_xom,
                 GROUP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                 SPLIT_K: tl.constexpr, TAIL: tl.constexpr):
    pid_k = tl.program_id(2)
    offs_m, offs_n, mask_m, mask_n = output_tile(M, N, BM, BN)
    offs_r = tl.arange(0, 32)
    acc = int4_group_products(x_ptr, xs_ptr, qw_ptr, s_ptr, offs_m, offs_n, mask_m, mask_n, stride_xm, K, N, 1,
                              n_tiles, pid_k, GROUP, BM, BN, SPLIT_K, False, TAIL)
    xs = tl.load(xs_ptr + offs_m, mask=mask_m, other=0.0)
    y = acc * xs[:, None]
    opart = tl.zeros((BM, BN), dtype=tl.int32)
    for k0 in range(pid_k * 32, NO, 32 * SPLIT_K):
        offs_k = k0 + offs_r
        xo = x_plane(xo_ptr, offs_m, mask_m, stride_xom, k0, NO, False)
        wo = tl.load(ow_ptr + offs_k[:, None] * N + offs_n[None, :], mask=(offs_k[:, None] < NO) & mask_n[None, :],
                     other=0)
        opart += tl.dot(xo, wo, out_dtype=tl.int32)
    xos = tl.load(xos_ptr + offs_m, mask=mask_m, other=0.0)
    osc = tl.load(os_ptr + offs_n, mask=mask_n, other=0.0)
    y += opart.to(tl.float32) * xos[:, None] * osc[None, :]
    store_tile(y_ptr, y, offs_m, offs_n, mask_m, mask_n, N, SPLIT_K)


def triton_w4a4(xq: torch.Tensor, xscale: torch.Tensor, xoq: torch.Tensor, xoscale: torch.Tensor,
                qweight: torch.Tensor, scales: torch.Tensor, oweight: torch.Tensor, oscale: torch.Tensor,
                group_size: int, out_dtype: torch.dtype = torch.float16, blocks: Blocks | None = None) -> torch.Tensor:
    """Compute W4A4's product (int4 values held in int8 ``xq``, int8 outliers ``xoq``); return ``[M, N]``.

    Small M runs the fused kernel; large M (without ``blocks``) dequantizes both operands to fp16 and
    calls cuBLAS, which on Hopper beats int8 MMA fed by register-widened int4 (BENCHMARKS.md, Triton W4Ax kernels).
    """
    xq, xoq = xq.contiguous(), xoq.contiguous()
    m, k = xq.shape
    n = qweight.shape[1]
    if blocks is None and use_dequant_gemm(m, k, n):
        y = (xq.float() * xscale.float()[:, None]).half() @ triton_dequant_w4a4(qweight, scales, group_size, k)
        yo = (xoq.float() * xoscale.float()[:, None]).half() @ (oweight.float() * oscale.float()[None, :]).half()
        return (y.float() + yo.float()).to(out_dtype)
    n_tiles, tail = tile_split(qweight.shape[0])
    b = blocks or pick_blocks(m, n, n_tiles, xq.device, integer=True)
    out = kernel_output(m, n, xq.device, out_dtype, b.split_k)
    grid = (triton.cdiv(m, b.bm), triton.cdiv(n, b.bn), b.split_k)
    _w4a4_kernel[grid](xq, xscale.float().contiguous(), xoq, xoscale.float().contiguous(), qweight, scales,
                       oweight, oscale.float().contiguous(), out, m, n, k, oweight.shape[0], n_tiles,
                       xq.stride(0), max(xoq.stride(0), 1), GROUP=group_size, BM=b.bm, BN=b.bn,
                       SPLIT_K=b.split_k, TAIL=tail, num_warps=b.num_warps, num_stages=b.num_stages)
    return out.to(out_dtype)
