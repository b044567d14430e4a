"""Dequantize packed int4 weights on the GPU, for the large-M path "dequantize once, then a GEMM".

Large batches are compute-bound, and there pipelined MMA GEMMs beat the fused kernels; the weight is
expanded once per call (never cached, so the int4 memory saving stands) and handed to cuBLAS ``x @ W``
(W4A16, W4A4) or to the Triton int8 GEMM of :mod:`quant.kernels.int8_gemm` (W4A8, int8 B stored
``[N, K]``). The torch references are the ``dequantize_*`` functions beside each kernel. One program takes
a 256-row tile; the last takes the short tail of 32-row sub-blocks where K is padded to groups under 256.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quant.kernels._tiles import tail_plane
from quant.packing import tile_split

__all__ = ["triton_dequant_w4a16", "triton_dequant_w4a8", "triton_dequant_w4a4"]

_FP16_ASYM, _FP16_SYM = 0, 1


@triton.jit
def _store_fp16_plane(q, a_ptr, b_ptr, out_ptr, k0, offs_n, mask_n, N, K, MODE: tl.constexpr, GROUP: tl.constexpr):
    """Write the fp16 weight rows ``k0 .. k0 + 31`` (below K) of codes ``q`` ``[32, BN]``."""
    offs_k = k0 + tl.arange(0, 32)
    s = tl.load(a_ptr + (k0 // GROUP) * N + offs_n, mask=mask_n, other=0.0)
    if MODE == 0:
        z = tl.load(b_ptr + (k0 // GROUP) * N + offs_n, mask=mask_n, other=0.0)
        w = (q.to(tl.float16) - z[None, :]) * s[None, :]
    else:
        w = (q - 8).to(tl.float16) * s[None, :]
    tl.store(out_ptr + offs_k[:, None] * N + offs_n[None, :], w, mask=(offs_k[:, None] < K) & mask_n[None, :])


@triton.jit
def _dequant_kernel(qw_ptr, a_ptr, b_ptr, out_ptr, N, K, n_tiles, MODE: tl.constexpr, GROUP: tl.constexpr,
                    BN: tl.constexpr, TAIL: tl.constexpr):
    t = tl.program_id(0)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    offs_r = tl.arange(0, 32)
    mask_n = offs_n < N
    if t < n_tiles:
        words = tl.load(qw_ptr + (t * 32 + offs_r)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
        for i in tl.static_range(8):
            _store_fp16_plane((words >> (4 * i)) & 15, a_ptr, b_ptr, out_ptr, t * 256 + i * 32, offs_n, mask_n, N,
                              K, MODE, GROUP)
    else:
        for j in tl.static_range(TAIL):
            _store_fp16_plane(tail_plane(qw_ptr, n_tiles, j, offs_n, mask_n, N, BN), a_ptr, b_ptr, out_ptr,
                              n_tiles * 256 + j * 32, offs_n, mask_n, N, K, MODE, GROUP)


@triton.jit
def _dequant_int8_kernel(qw_ptr, gs_ptr, gz_ptr, out_ptr, N, K, n_tiles, GROUP: tl.constexpr, BN: tl.constexpr,
                         TAIL: tl.constexpr):
    t = tl.program_id(0)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    if t < n_tiles:  # (the branches assign nothing: Triton would have to merge their values)
        _int8_tile(qw_ptr, gs_ptr, gz_ptr, out_ptr, t, offs_n, mask_n, N, K, GROUP, BN)
    else:
        for j in tl.static_range(TAIL):
            _int8_tail_plane(qw_ptr, gs_ptr, gz_ptr, out_ptr, n_tiles, j, offs_n, mask_n, N, K, GROUP, BN)


@triton.jit
def _int8_tile(qw_ptr, gs_ptr, gz_ptr, out_ptr, t, offs_n, mask_n, N, K, GROUP: tl.constexpr, BN: tl.constexpr):
    """Write 256-row tile ``t`` of BN columns K-contiguous: each output row gets 256 consecutive bytes."""
    offs_r = tl.arange(0, 32)
    offs_i = tl.arange(0, 8)
    words = tl.load(qw_ptr + (t * 32 + offs_r)[None, :] * N + offs_n[:, None], mask=mask_n[:, None], other=0)
    rows = ((t * 256 + offs_i * 32) // GROUP)[None, :] * N + offs_n[:, None]
    s = tl.load(gs_ptr + rows, mask=mask_n[:, None], other=0).to(tl.int32)
    z = tl.load(gz_ptr + rows, mask=mask_n[:, None], other=0).to(tl.int32)
    q = (words[:, None, :] >> (4 * offs_i)[None, :, None]) & 15  # [BN, plane i, row r] = W[256 t + 32 i + r]
    w = tl.reshape(((q - z[:, :, None]) * s[:, :, None]).to(tl.int8), (BN, 256))
    offs_k = t * 256 + tl.arange(0, 256)
    tl.store(out_ptr + offs_n[:, None] * K + offs_k[None, :], w, mask=mask_n[:, None] & (offs_k[None, :] < K))


@triton.jit
def _int8_tail_plane(qw_ptr, gs_ptr, gz_ptr, out_ptr, n_tiles, j, offs_n, mask_n, N, K, GROUP: tl.constexpr,
                     BN: tl.constexpr):
    """Write tail sub-block ``j`` (32 K rows) of BN columns, through transposed pointers."""
    k0 = n_tiles * 256 + j * 32
    s = tl.load(gs_ptr + (k0 // GROUP) * N + offs_n, mask=mask_n, other=0).to(tl.int32)
    z = tl.load(gz_ptr + (k0 // GROUP) * N + offs_n, mask=mask_n, other=0).to(tl.int32)
    w = ((tail_plane(qw_ptr, n_tiles, j, offs_n, mask_n, N, BN) - z[None, :]) * s[None, :]).to(tl.int8)
    offs_k = k0 + tl.arange(0, 32)
    tl.store(out_ptr + offs_n[None, :] * K + offs_k[:, None], w, mask=mask_n[None, :] & (offs_k[:, None] < K))


def _grid(qweight: torch.Tensor) -> tuple[tuple[int, int], int, int]:
    """The launch grid (a program per 256-row tile, plus one for a tail, by 64 columns), tiles and tail."""
    n_tiles, tail = tile_split(qweight.shape[0])
    return (n_tiles + (tail > 0), triton.cdiv(qweight.shape[1], 64)), n_tiles, tail


def _launch(qweight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, k: int, mode: int,
            group_size: int) -> torch.Tensor:
    """Run the dequantization kernel over every 256-row tile (and the tail) and 64-column block."""
    grid, n_tiles, tail = _grid(qweight)
    _dequant_kernel[grid](qweight, a, b, out, qweight.shape[1], k, n_tiles, MODE=mode, GROUP=group_size, BN=64,
                          TAIL=tail, num_warps=4)
    return out


def triton_dequant_w4a16(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                         k: int) -> torch.Tensor:
    """Return the fp16 ``[k, N]`` weight ``(q - zero) * scale``."""
    out = torch.empty(k, qweight.shape[1], device=qweight.device, dtype=torch.float16)
    return _launch(qweight, scales, zeros, out, k, _FP16_ASYM, group_size)


def triton_dequant_w4a8(qweight: torch.Tensor, gscale: torch.Tensor, gzero: torch.Tensor, group_size: int,
                        k: int) -> torch.Tensor:
    """Return the int8 intermediate weight transposed, ``[N, k]`` (so ``.t()`` is a column-major B)."""
    n = qweight.shape[1]
    out = torch.empty(n, k, device=qweight.device, dtype=torch.int8)
    grid, n_tiles, tail = _grid(qweight)
    _dequant_int8_kernel[grid](qweight, gscale, gzero, out, n, k, n_tiles, GROUP=group_size, BN=64, TAIL=tail,
                               num_warps=4)
    return out


def triton_dequant_w4a4(qweight: torch.Tensor, scales: torch.Tensor, group_size: int, k: int) -> torch.Tensor:
    """Return the fp16 ``[k, N]`` weight ``(q - 8) * scale`` of W4A4's int4 part."""
    out = torch.empty(k, qweight.shape[1], device=qweight.device, dtype=torch.float16)
    return _launch(qweight, scales, scales, out, k, _FP16_SYM, group_size)
