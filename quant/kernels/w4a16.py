"""W4A16: fp16 activations times group-wise int4 weights, dequantized inside the GEMM/GEMV.

``reference_w4a16`` (pure torch, float32) is the oracle; ``triton_w4a16`` is the kernel. Weights are in
the layout of :mod:`quant.packing`: each 256-deep K tile is one ``[32, BLOCK_N]`` block of int32 words,
and nibble ``i`` of it is the K sub-block ``32 i .. 32 i + 31``; a K padded to groups under 256 ends in a short
tail of 32-row sub-blocks, which the last K slice takes through the fp16 dequantization below.

Two paths share the kernel. Tiles of up to 16 rows (the GEMV regime, where the time goes on
dequantization) do no fp16 arithmetic on the weights: one AND and one OR per word and nibble pair turn
nibbles ``j`` and ``j + 4`` (bits ``4j`` and ``4j + 16``) into two fp16 numbers ``1024 + q`` (``0x6400 | q``,
exact), the MMA multiplies the activations by those raw values, and a second MMA of the activations against
ones gives ``sum x``, so a group contributes ``scale * (sum x (1024 + q) - (1024 + zero) sum x)`` =
``scale * sum x (q - zero)``, applied in fp32 once per group (~15% fewer instructions than the fp16 path,
and one rounding less). Taller tiles dequantize ``(q - zero) * scale`` in fp16 and feed one MMA per
nibble plane. Small M splits K across programs in one launch (:mod:`quant.kernels._splitk`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quant.kernels._launch import Blocks, pick_blocks, use_dequant_gemm
from quant.kernels._tiles import output_tile, tail_plane, x_plane
from quant.kernels._splitk import splitk_store, splitk_workspace
from quant.kernels.dequant import triton_dequant_w4a16
from quant.packing import tile_split, unpack_int4

__all__ = ["dequantize_w4a16", "reference_w4a16", "triton_w4a16"]

# Tiles up to this many rows take the raw-magic MMA path (the GEMV regime, M <= 16: ~14% fewer instructions
# per weight, the time goes on dequantization). Taller tiles keep the fp16 dequantization: there the second
# (sum x) MMA and the per-group fp32 epilogue cost more than they save (1.2-1.8x slower at M = 32..64, H100).
_RAW_MAX_BM = 16


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
    """Load the ``[1, BN]`` scale (or zero) row of nibble plane ``i`` of 256-row tile ``t``, as float32."""
    p = ptr + ((t * 256 + i * 32) // GROUP) * N + offs_n
    return (tl.load(p) if EVEN_N else tl.load(p, mask=mask_n, other=0.0)).to(tl.float32)[None, :]


@triton.jit
def _plane_dot(acc, x_ptr, offs_m, mask_m, stride_xm, k0, K, w, EVEN_K: tl.constexpr):
    """Add ``x[:, k0:k0+32] @ w`` (one nibble plane) to the accumulator."""
    return acc + tl.dot(x_plane(x_ptr, offs_m, mask_m, stride_xm, k0, K, EVEN_K), w)


@triton.jit
def _dequant_fp16(q, s, z):
    """Codes ``q`` (0..15) as fp16 ``(q - zero) * scale``, given the fp16 scale row and the fp16 ``1024 + zero`` row."""
    # (1024 + q) - (1024 + z) = q - z exactly, times the fp16 scale: one rounding
    return (((q | 0x6400).to(tl.int16)).to(tl.float16, bitcast=True) - z) * s


@triton.jit
def _w4a16_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, n_tiles, tiles_per_split,
                  stride_xm, GROUP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, SPLIT: tl.constexpr,
                  RAW: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr, TAIL: tl.constexpr):
    pid_k = tl.program_id(2)
    offs_m, offs_n, mask_m, mask_n = output_tile(M, N, BM, BN)
    offs_r = tl.arange(0, 32)
    ones = tl.full((32, BN), 1.0, dtype=tl.float16)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    # RAW, per nibble-pair half (planes 0-3 "lo", 4-7 "hi"): sum x (1024 + q) and sum x of the current group
    acc_lo = tl.zeros((BM, BN), dtype=tl.float32)
    acc_hi = tl.zeros((BM, BN), dtype=tl.float32)
    sx_lo = tl.zeros((BM, BN), dtype=tl.float32)
    sx_hi = tl.zeros((BM, BN), dtype=tl.float32)
    t_begin = pid_k * tiles_per_split
    t_end = tl.minimum(t_begin + tiles_per_split, n_tiles)
    # RAW with groups of >= 128 rows: one scale/zero row per tile half, loaded one tile ahead (these loads
    # feed no tl.dot, so Triton's pipeliner leaves them alone, and waiting on them cost ~40% at 8192 x 8192)
    PREFETCH: tl.constexpr = RAW and GROUP >= 128
    if PREFETCH:  # (a slice past the last tile, which computes nothing, still reads inside the scales)
        t_first = tl.maximum(tl.minimum(t_begin, n_tiles - 1), 0)
        s_lo_n = _group_row(s_ptr, t_first, 0, N, offs_n, mask_n, GROUP, EVEN_N)
        z_lo_n = _group_row(z_ptr, t_first, 0, N, offs_n, mask_n, GROUP, EVEN_N)
        s_hi_n = _group_row(s_ptr, t_first, 4, N, offs_n, mask_n, GROUP, EVEN_N)
        z_hi_n = _group_row(z_ptr, t_first, 4, N, offs_n, mask_n, GROUP, EVEN_N)
    for t in range(t_begin, t_end):
        wp = qw_ptr + (t * 32 + offs_r)[:, None] * N + offs_n[None, :]
        words = tl.load(wp) if EVEN_N else tl.load(wp, mask=mask_n[None, :], other=0)
        if PREFETCH:
            s_lo, z_lo, s_hi, z_hi = s_lo_n, z_lo_n + 1024.0, s_hi_n, z_hi_n + 1024.0
            t_next = tl.minimum(t + 1, t_end - 1)
            s_lo_n = _group_row(s_ptr, t_next, 0, N, offs_n, mask_n, GROUP, EVEN_N)
            z_lo_n = _group_row(z_ptr, t_next, 0, N, offs_n, mask_n, GROUP, EVEN_N)
            s_hi_n = _group_row(s_ptr, t_next, 4, N, offs_n, mask_n, GROUP, EVEN_N)
            z_hi_n = _group_row(z_ptr, t_next, 4, N, offs_n, mask_n, GROUP, EVEN_N)
        if RAW:
            for j in tl.static_range(4):
                if not PREFETCH and (j * 32) % GROUP == 0:  # scale and zero rows change at group boundaries
                    s_lo = _group_row(s_ptr, t, j, N, offs_n, mask_n, GROUP, EVEN_N)
                    z_lo = _group_row(z_ptr, t, j, N, offs_n, mask_n, GROUP, EVEN_N) + 1024.0
                    s_hi = _group_row(s_ptr, t, j + 4, N, offs_n, mask_n, GROUP, EVEN_N)
                    z_hi = _group_row(z_ptr, t, j + 4, N, offs_n, mask_n, GROUP, EVEN_N) + 1024.0
                src = words if j == 0 else words >> (4 * j)
                # 0x6400 | q is the fp16 number 1024 + q exactly: no int -> float conversion instruction
                v = (src & 0x000F000F) | 0x64006400
                lo = v.to(tl.int16).to(tl.float16, bitcast=True)
                hi = (v >> 16).to(tl.int16).to(tl.float16, bitcast=True)
                k_lo = t * 256 + j * 32
                acc_lo = _plane_dot(acc_lo, x_ptr, offs_m, mask_m, stride_xm, k_lo, K, lo, EVEN_K)
                sx_lo = _plane_dot(sx_lo, x_ptr, offs_m, mask_m, stride_xm, k_lo, K, ones, EVEN_K)
                acc_hi = _plane_dot(acc_hi, x_ptr, offs_m, mask_m, stride_xm, k_lo + 128, K, hi, EVEN_K)
                sx_hi = _plane_dot(sx_hi, x_ptr, offs_m, mask_m, stride_xm, k_lo + 128, K, ones, EVEN_K)
                if ((j + 1) * 32) % GROUP == 0 or j == 3:  # end of a group (or of the tile): zero and scale
                    acc += (acc_lo - z_lo * sx_lo) * s_lo + (acc_hi - z_hi * sx_hi) * s_hi
                    acc_lo = tl.zeros((BM, BN), dtype=tl.float32)
                    acc_hi = tl.zeros((BM, BN), dtype=tl.float32)
                    sx_lo = tl.zeros((BM, BN), dtype=tl.float32)
                    sx_hi = tl.zeros((BM, BN), dtype=tl.float32)
        else:
            for i in tl.static_range(8):
                if (i * 32) % GROUP == 0:
                    s = _group_row(s_ptr, t, i, N, offs_n, mask_n, GROUP, EVEN_N).to(tl.float16)
                    z = (_group_row(z_ptr, t, i, N, offs_n, mask_n, GROUP, EVEN_N) + 1024.0).to(tl.float16)
                w = _dequant_fp16((words >> (4 * i)) & 15, s, z)
                acc = _plane_dot(acc, x_ptr, offs_m, mask_m, stride_xm, t * 256 + i * 32, K, w, EVEN_K)
    if TAIL > 0:  # sub-block j of the tail is plane j of tile n_tiles; the tail starts a group
        if pid_k == SPLIT - 1:
            for j in tl.static_range(TAIL):
                if (j * 32) % GROUP == 0:
                    s = _group_row(s_ptr, n_tiles, j, N, offs_n, mask_n, GROUP, EVEN_N).to(tl.float16)
                    z = (_group_row(z_ptr, n_tiles, j, N, offs_n, mask_n, GROUP, EVEN_N) + 1024.0).to(tl.float16)
                w = _dequant_fp16(tail_plane(qw_ptr, n_tiles, j, offs_n, mask_n, N, BN), s, z)
                acc = _plane_dot(acc, x_ptr, offs_m, mask_m, stride_xm, n_tiles * 256 + j * 32, K, w, EVEN_K)
    offs_y = offs_m[:, None] * N + offs_n[None, :]
    mask_y = mask_m[:, None] & mask_n[None, :]
    tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    splitk_store(acc, y_ptr, ws_ptr, cnt_ptr, offs_y, mask_y, tile, pid_k, M * N, SPLIT)


def triton_w4a16(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 group_size: int, blocks: Blocks | None = None) -> torch.Tensor:
    """Compute fp16 ``x @ W`` for ``x`` ``[M, K]``: the fused kernel, or (large M, no ``blocks``) dequantize + cuBLAS."""
    x = x.to(torch.float16).contiguous()
    m, k = x.shape
    n = qweight.shape[1]
    if blocks is None and use_dequant_gemm(m, k, n):
        return x @ triton_dequant_w4a16(qweight, scales, zeros, group_size, k)
    n_tiles, tail = tile_split(qweight.shape[0])
    b = blocks or pick_blocks(m, n, n_tiles, x.device)
    grid = (triton.cdiv(m, b.bm), triton.cdiv(n, b.bn), b.split_k)
    out = torch.empty(m, n, device=x.device, dtype=torch.float16)
    ws, cnt = splitk_workspace(x.device, b.split_k * m * n, grid[0] * grid[1]) if b.split_k > 1 else (out, out)
    _w4a16_kernel[grid](x, qweight, scales, zeros, out, ws, cnt, m, n, k, n_tiles, triton.cdiv(n_tiles, b.split_k),
                        x.stride(0), GROUP=group_size, BM=b.bm, BN=b.bn, SPLIT=b.split_k, RAW=b.bm <= _RAW_MAX_BM,
                        EVEN_K=k == qweight.shape[0] * 8, EVEN_N=n % b.bn == 0, TAIL=tail, num_warps=b.num_warps,
                        num_stages=b.num_stages)
    return out
