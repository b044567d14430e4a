"""W4A8: per-token int8 activations times QServe progressive int4 weights on int8 tensor cores.

Each int4 code is lifted to int8 with integer arithmetic, ``(q - zero) * scale`` with uint8 group scale
and zero (QServe, Lin et al. 2024, section 4.1), then ``tl.dot`` runs int8 x int8 -> int32. The epilogue
applies the per-token activation scale and the per-channel weight scale. ``reference_w4a8`` is the oracle;
its int32 accumulator is exact, so the kernel must match it bit for bit before scaling.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quant.kernels._launch import Blocks, kernel_output, pick_blocks, use_dequant_gemm
from quant.kernels._tiles import output_tile, store_tile, tail_plane, x_plane
from quant.kernels.dequant import triton_dequant_w4a8
from quant.kernels.int8_gemm import int8_gemm_scaled
from quant.packing import tile_split, unpack_int4

__all__ = ["dequantize_w4a8_int8", "reference_w4a8", "triton_w4a8"]


def dequantize_w4a8_int8(qweight: torch.Tensor, gscale: torch.Tensor, gzero: torch.Tensor, group_size: int) -> torch.Tensor:
    """Return the int8 intermediate weight ``(q - zero) * scale`` as an int32 ``[K_padded, N]`` tensor."""
    q = unpack_int4(qweight)
    z = gzero.to(torch.int32).repeat_interleave(group_size, 0)
    s = gscale.to(torch.int32).repeat_interleave(group_size, 0)
    return (q - z) * s


def reference_w4a8(xq: torch.Tensor, xscale: torch.Tensor, qweight: torch.Tensor, gscale: torch.Tensor,
                   gzero: torch.Tensor, wscale: torch.Tensor, group_size: int) -> torch.Tensor:
    """Compute ``xscale * (xq @ W8) * wscale`` in float32; the integer product is exact (float64 holds it)."""
    w8 = dequantize_w4a8_int8(qweight, gscale, gzero, group_size)[: xq.shape[1]]
    acc = (xq.double() @ w8.double()).float()
    return acc * xscale.float()[:, None] * wscale.float()[None, :]


@triton.jit
def _int8_plane_dot(acc, x_ptr, gs_ptr, gz_ptr, q, offs_m, offs_n, mask_m, mask_n, stride_xm, k0, K, N,
                    GROUP: tl.constexpr):
    """Add ``x[:, k0:k0+32] @ ((q - zero) * scale)`` (codes ``q`` of 32 K rows lifted to int8) to the int32 sum."""
    s = tl.load(gs_ptr + (k0 // GROUP) * N + offs_n, mask=mask_n, other=0).to(tl.int32)
    z = tl.load(gz_ptr + (k0 // GROUP) * N + offs_n, mask=mask_n, other=0).to(tl.int32)
    w = ((q - z[None, :]) * s[None, :]).to(tl.int8)
    return acc + tl.dot(x_plane(x_ptr, offs_m, mask_m, stride_xm, k0, K, False), w, out_dtype=tl.int32)


@triton.jit
def _w4a8_kernel(x_ptr, xs_ptr, qw_ptr, gs_ptr, gz_ptr, ws_ptr, y_ptr, M, N, K, n_tiles, stride_xm,
                 GROUP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                 SPLIT_K: tl.constexpr, TAIL: tl.constexpr):
    pid_k = tl.program_id(2)
    offs_m, offs_n, mask_m, mask_n = output_tile(M, N, BM, BN)
    offs_r = tl.arange(0, 32)
    acc = tl.zeros((BM, BN), dtype=tl.int32)
    # each word is loaded once; its nibble plane i is the K sub-block 32 i .. 32 i + 31 of the tile
    for t in range(pid_k, n_tiles, SPLIT_K):
        words = tl.load(qw_ptr + (t * 32 + offs_r)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
        for i in tl.static_range(8):
            acc = _int8_plane_dot(acc, x_ptr, gs_ptr, gz_ptr, (words >> (4 * i)) & 15, offs_m, offs_n, mask_m,
                                  mask_n, stride_xm, t * 256 + i * 32, K, N, GROUP)
    if TAIL > 0:  # the short tail of sub-blocks (groups under 256 rows), taken by the last K slice
        if pid_k == SPLIT_K - 1:
            for j in tl.static_range(TAIL):
                q = tail_plane(qw_ptr, n_tiles, j, offs_n, mask_n, N, BN)
                acc = _int8_plane_dot(acc, x_ptr, gs_ptr, gz_ptr, q, offs_m, offs_n, mask_m, mask_n, stride_xm,
                                      n_tiles * 256 + j * 32, K, N, GROUP)
    xs = tl.load(xs_ptr + offs_m, mask=mask_m, other=0.0)
    ws = tl.load(ws_ptr + offs_n, mask=mask_n, other=0.0)
    y = acc.to(tl.float32) * xs[:, None] * ws[None, :]
    store_tile(y_ptr, y, offs_m, offs_n, mask_m, mask_n, N, SPLIT_K)


def triton_w4a8(xq: torch.Tensor, xscale: torch.Tensor, qweight: torch.Tensor, gscale: torch.Tensor,
                gzero: torch.Tensor, wscale: torch.Tensor, group_size: int, out_dtype: torch.dtype = torch.float16,
                blocks: Blocks | None = None) -> torch.Tensor:
    """Compute ``xscale * (xq @ W8) * wscale`` for int8 ``xq`` ``[M, K]``: fused, or (large M) dequantize + int8 GEMM."""
    xq = xq.contiguous()
    m, k = xq.shape
    n = qweight.shape[1]
    if blocks is None and use_dequant_gemm(m, k, n):
        return int8_gemm_scaled(xq, triton_dequant_w4a8(qweight, gscale, gzero, group_size, k), xscale, wscale,
                                out_dtype)
    n_tiles, tail = tile_split(qweight.shape[0])
    b = blocks or pick_blocks(m, n, n_tiles, xq.device, integer=True)
    out = kernel_output(m, n, xq.device, out_dtype, b.split_k)
    grid = (triton.cdiv(m, b.bm), triton.cdiv(n, b.bn), b.split_k)
    _w4a8_kernel[grid](xq, xscale.float().contiguous(), qweight, gscale, gzero, wscale.float().contiguous(), out,
                       m, n, k, n_tiles, xq.stride(0), GROUP=group_size, BM=b.bm, BN=b.bn,
                       SPLIT_K=b.split_k, TAIL=tail,
                       num_warps=b.num_warps, num_stages=b.num_stages)
    return out.to(out_dtype)
