"""Tile indexing shared by the fused W4Ax kernels: this program's output tile, and the block of x that multiplies
one nibble plane (32 K rows) of the packed weights."""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["output_tile", "x_plane"]


@triton.jit
def output_tile(M, N, BM: tl.constexpr, BN: tl.constexpr):
    """This program's output rows and columns (programs on grid axes 0 and 1) and their in-bounds masks."""
    offs_m = tl.program_id(0) * BM + tl.arange(0, BM)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    return offs_m, offs_n, offs_m < M, offs_n < N


@triton.jit
def x_plane(x_ptr, offs_m, mask_m, stride_xm, k0, K, EVEN_K: tl.constexpr):
    """The ``[BM, 32]`` block ``x[offs_m, k0:k0+32]``, zero outside x (``EVEN_K``: K needs no mask)."""
    offs_k = k0 + tl.arange(0, 32)
    mask = mask_m[:, None] if EVEN_K else mask_m[:, None] & (offs_k[None, :] < K)
    return tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask, other=0)
