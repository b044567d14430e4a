"""Pack int4 values into int32 words in the layout the Triton kernels unpack without shuffles.

Layout ("K-tiled, nibble-strided"): a weight matrix is stored K-major as ``[K, N]`` (the kernel computes
``x[M, K] @ W[K, N]``) and K is padded to a multiple of :data:`TILE_K` = 256. Tile ``t`` of 256 rows
becomes 32 packed rows; nibble ``i`` (bits ``4i .. 4i+3``) of packed row ``r`` of that tile holds
``W[256 t + 32 i + r, n]``::

    packed[32 t + r, n] = sum_i  W[256 t + 32 i + r, n] << (4 i)        r in 0..31, i in 0..7

Why: a kernel loads one ``[32, BLOCK_N]`` block of words per 256 rows of K, fully coalesced along N, and
``(words >> 4 i) & 15`` is directly the contiguous K sub-block ``32 i .. 32 i + 31`` -- the operand of one
``tl.dot`` of depth 32 (the int8 MMA depth on Hopper) -- with no gather, reshape or interleave. A sub-block of 32 rows never straddles a
quantization group (group sizes are powers of two >= 32), so each sub-block needs one row of scales.
Values are unsigned nibbles 0..15; signed formats store ``q + 8``.
"""

from __future__ import annotations

import torch

from quant.errors import ShapeError

__all__ = ["TILE_K", "padded_k", "pack_int4", "unpack_int4"]

TILE_K = 256
_SUB = 32


def padded_k(k: int, group_size: int) -> int:
    """Return K rounded up to a whole number of 256-row tiles and of quantization groups."""
    step = max(TILE_K, group_size)
    return -(-k // step) * step


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack a ``[K, N]`` tensor of integers in 0..15 (K a multiple of 256) into ``[K // 8, N]`` int32 words."""
    if values.dim() != 2 or values.shape[0] % TILE_K:
        raise ShapeError("pack_int4 needs a [K, N] tensor with K a multiple of 256", shape=tuple(values.shape))
    v = values.to(torch.int64)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) > 15):
        raise ShapeError("pack_int4 needs values in 0..15", min=int(v.min()), max=int(v.max()))
    k, n = v.shape
    tiles = v.reshape(k // TILE_K, 8, _SUB, n)  # [t, i, r, n]
    shifts = (4 * torch.arange(8, dtype=torch.int64, device=v.device)).view(1, 8, 1, 1)
    words = (tiles << shifts).sum(dim=1)  # [t, r, n], fits in 32 unsigned bits
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.reshape(k // 8, n).to(torch.int32)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Invert :func:`pack_int4`: ``[K // 8, N]`` int32 words back to ``[K, N]`` int32 values in 0..15."""
    if packed.dim() != 2 or packed.dtype != torch.int32 or packed.shape[0] % _SUB:
        raise ShapeError("unpack_int4 needs [K // 8, N] int32 words with K a multiple of 256",
                         shape=tuple(packed.shape), dtype=str(packed.dtype))
    kw, n = packed.shape
    words = packed.reshape(kw // _SUB, 1, _SUB, n)
    shifts = (4 * torch.arange(8, dtype=torch.int32, device=packed.device)).view(1, 8, 1, 1)
    return ((words >> shifts) & 15).reshape(kw * 8, n)
