"""Tile pieces shared by the fused W4Ax kernels: this program's output tile, the block of x that multiplies one
nibble plane (32 K rows) of the packed weights, one 32-row sub-block of the packed tail, the group-scaled int4
product loop, and the tile's store."""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["output_tile", "x_plane", "tail_plane", "int4_group_products", "store_tile"]


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


@triton.jit
def tail_plane(qw_ptr, n_tiles, j, offs_n, mask_n, N, BN: tl.constexpr):
    """Codes 0..15 of tail sub-block ``j`` (K rows ``256 n_tiles + 32 j ..``) as int32 ``[32, BN]``.

    The tail packs eight consecutive rows a word (:mod:`quant.packing`): four words a sub-block, unpacked
    as ``[4, 8, BN]`` nibbles and reshaped in row order.
    """
    offs_a = tl.arange(0, 4)
    words = tl.load(qw_ptr + (n_tiles * 32 + j * 4 + offs_a)[:, None] * N + offs_n[None, :], mask=mask_n[None, :],
                    other=0)
    nibbles = (words[:, None, :] >> (4 * tl.arange(0, 8))[None, :, None]) & 15
    return tl.reshape(nibbles, (32, BN))


@triton.jit
def int4_group_products(x_ptr, xs_ptr, qw_ptr, s_ptr, offs_m, offs_n, mask_m, mask_n, stride_xm, K, N, G,
                        n_tiles, pid_k, GROUP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                        SPLIT_K: tl.constexpr, X_PER_GROUP: tl.constexpr, TAIL: tl.constexpr):
    """Sum over this K slice's groups of ``int32(x_g @ (q_g - 8)) * s[g]`` (times ``xs[m, g]`` if ``X_PER_GROUP``).

    ``x`` holds int8 codes; the weight is packed symmetric int4 (:mod:`quant.packing`) with one scale per
    (group, column): ``n_tiles`` whole 256-row tiles, then ``TAIL`` 32-row sub-blocks (taken by the last K
    slice). The exact int32 partial is scaled into the float32 sum once per group (or per 256-row tile of a
    longer group; a tail exists only for groups shorter than 256, and ends a group).
    """
    offs_r = tl.arange(0, 32)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    part = tl.zeros((BM, BN), dtype=tl.int32)
    span: tl.constexpr = GROUP if GROUP < 256 else 256
    for t in range(pid_k, n_tiles, SPLIT_K):
        words = tl.load(qw_ptr + (t * 32 + offs_r)[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
        for i in tl.static_range(8):
            k0 = t * 256 + i * 32
            w = (((words >> (4 * i)) & 15) - 8).to(tl.int8)
            part += tl.dot(x_plane(x_ptr, offs_m, mask_m, stride_xm, k0, K, False), w, out_dtype=tl.int32)
            if ((i + 1) * 32) % span == 0:
                acc = _scaled_group(acc, part, xs_ptr, s_ptr, offs_m, offs_n, mask_m, mask_n, N, G, k0 // GROUP,
                                    X_PER_GROUP)
                part = tl.zeros((BM, BN), dtype=tl.int32)
    if TAIL > 0:
        if pid_k == SPLIT_K - 1:
            for j in tl.static_range(TAIL):
                k0 = n_tiles * 256 + j * 32
                w = (tail_plane(qw_ptr, n_tiles, j, offs_n, mask_n, N, BN) - 8).to(tl.int8)
                part += tl.dot(x_plane(x_ptr, offs_m, mask_m, stride_xm, k0, K, False), w, out_dtype=tl.int32)
                if ((j + 1) * 32) % GROUP == 0:
                    acc = _scaled_group(acc, part, xs_ptr, s_ptr, offs_m, offs_n, mask_m, mask_n, N, G,
                                        k0 // GROUP, X_PER_GROUP)
                    part = tl.zeros((BM, BN), dtype=tl.int32)
    return acc


@triton.jit
def _scaled_group(acc, part, xs_ptr, s_ptr, offs_m, offs_n, mask_m, mask_n, N, G, g, X_PER_GROUP: tl.constexpr):
    """Add group ``g``'s exact int32 partial times its weight scales (and per-token scales) to ``acc``."""
    s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    if X_PER_GROUP:
        xs = tl.load(xs_ptr + offs_m * G + g, mask=mask_m, other=0.0)
        return acc + part.to(tl.float32) * xs[:, None] * s[None, :]
    return acc + part.to(tl.float32) * s[None, :]


@triton.jit
def store_tile(y_ptr, y, offs_m, offs_n, mask_m, mask_n, N, SPLIT_K: tl.constexpr):
    """Store a finished tile, or (``SPLIT_K`` > 1) add this K slice's share to a zeroed float32 output."""
    y_offs = offs_m[:, None] * N + offs_n[None, :]
    y_mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K == 1:
        tl.store(y_ptr + y_offs, y.to(y_ptr.dtype.element_ty), mask=y_mask)
    else:
        tl.atomic_add(y_ptr + y_offs, y, mask=y_mask)
