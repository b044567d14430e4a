"""W4A16: fp16 activations times group-wise int4 weights, dequantized inside the GEMM/GEMV.

``reference_w4a16`` (pure torch, float32) is the oracle; ``triton_w4a16`` is the kernel. Weights are in
the layout of :mod:`quant.packing`: each 256-deep K tile is one ``[32, BLOCK_N]`` block of int32 words,
and nibble ``i`` of it is the K sub-block ``32 i .. 32 i + 31``, dequantized as ``(q - zero) * scale``
in fp16 and fed to one ``tl.dot``. Scale and zero rows are loaded once per quantization group, and with
K a multiple of 256 and N of BLOCK_N the loads carry no element masks (so they vectorize). Small M splits
K across programs and adds partials atomically.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quant.kernels._launch import Blocks, pick_blocks, use_dequant_gemm
from quant.kernels.dequant import triton_dequant_w4a16
from quant.packing import unpack_int4

__all__ = ["dequantize_w4a16", "reference_w4a16", "triton_w4a16"]


def dequantize_w4a16(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """Return the float32 ``[K_padded, N]`` weight ``(q - zero) * scale``."""
    q = unpack_int4(qweight).float()
    return (q - zeros.float().repeat_interleave(group_size, 0)) * scales.float().repeat_interleave(group_size, 0)


def reference_w4a16(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                    group_size: int) -> torch.Tensor:
    """Compute ``x @ dequant(W)`` in float32 for ``x`` of shape ``[M, K]``."""
    w = dequantize_w4a16(qweight, scales, zeros, group_size)
    return x.float() @ w[: x.shape[1]]


@triton.jit
def _group_row(ptr, t, i: tl.constexpr, N, offs_n, mask_n, GROUP: tl.constexpr, EVEN_N: tl.constexpr):
    """Load the ``[1, BN]`` scale (or zero) row of nibble plane ``i`` of 256-row tile ``t``."""
    p = ptr + ((t * 256 + i * 32) // GROUP) * N + offs_n
    return (tl.load(p) if EVEN_N else tl.load(p, mask=mask_n, other=0.0))[None, :]


@triton.jit
def _plane_dot(acc, x_ptr, offs_m, mask_m, stride_xm, k0, K, w, EVEN_K: tl.constexpr):
    """Add ``x[:, k0:k0+32] @ w`` (one nibble plane) to the accumulator."""
    offs_k = k0 + tl.arange(0, 32)
    mask = mask_m[:, None] if EVEN_K else mask_m[:, None] & (offs_k[None, :] < K)
    xb = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask, other=0.0)
    return acc + tl.dot(xb, w)


@triton.jit
def _w4a16_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, y_ptr, M, N, K, n_tiles, stride_xm,
                  GROUP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, SPLIT_K: tl.constexpr,
                  EVEN_K: tl.constexpr, EVEN_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_r = tl.arange(0, 32)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    # each word is loaded once; its nibble plane i is the K sub-block 32 i .. 32 i + 31 of the tile
    for t in range(pid_k, n_tiles, SPLIT_K):
        wp = qw_ptr + (t * 32 + offs_r)[:, None] * N + offs_n[None, :]
        words = tl.load(wp) if EVEN_N else tl.load(wp, mask=mask_n[None, :], other=0)
        for i in tl.static_range(8):
            if (i * 32) % GROUP == 0:  # scale and zero rows change only at a group boundary
                s = _group_row(s_ptr, t, i, N, offs_n, mask_n, GROUP, EVEN_N)
                z = _group_row(z_ptr, t, i, N, offs_n, mask_n, GROUP, EVEN_N) + 1024.0
            # int -> fp16 without a conversion instruction: 0x6400 | q is the fp16 number 1024 + q
            # (exact), so (1024 + q) - (1024 + z) = q - z exactly and the result is ((q - z) * s) bit for bit
            q = ((((words >> (4 * i)) & 15) | 0x6400).to(tl.int16)).to(tl.float16, bitcast=True)
            acc = _plane_dot(acc, x_ptr, offs_m, mask_m, stride_xm, t * 256 + i * 32, K, (q - z) * s, EVEN_K)
    y_offs = offs_m[:, None] * N + offs_n[None, :]
    y_mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K == 1:
        tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=y_mask)
    else:
        tl.atomic_add(y_ptr + y_offs, acc, mask=y_mask)


def triton_w4a16(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 group_size: int, blocks: Blocks | None = None) -> torch.Tensor:
    """Compute fp16 ``x @ W`` for ``x`` ``[M, K]``: the fused kernel, or (large M, no ``blocks``) dequantize + cuBLAS."""
    x = x.to(torch.float16).contiguous()
    m, k = x.shape
    n = qweight.shape[1]
    if blocks is None and use_dequant_gemm(m, k, n):
        return x @ triton_dequant_w4a16(qweight, scales, zeros, group_size, k)
    n_tiles = qweight.shape[0] // 32
    b = blocks or pick_blocks(m, n, n_tiles, x.device)
    out = (torch.empty if b.split_k == 1 else torch.zeros)(m, n, device=x.device,
                                                          dtype=torch.float16 if b.split_k == 1 else torch.float32)
    grid = (triton.cdiv(m, b.bm), triton.cdiv(n, b.bn), b.split_k)
    _w4a16_kernel[grid](x, qweight, scales, zeros, out, m, n, k, n_tiles, x.stride(0),
                        GROUP=group_size, BM=b.bm, BN=b.bn, SPLIT_K=b.split_k, EVEN_K=k % 256 == 0,
                        EVEN_N=n % b.bn == 0,
                        num_warps=b.num_warps, num_stages=b.num_stages)
    return out.to(torch.float16)
