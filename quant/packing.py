"""Pack int4 values into int32 words in the layout the Triton kernels unpack without shuffles.

Layout ("K-tiled, nibble-strided, with a short tail"): a weight matrix is stored K-major as ``[K, N]`` (the
kernel computes ``x[M, K] @ W[K, N]``) and K is padded only to a multiple of the quantization group
(:func:`padded_k`; groups are powers of two >= 32, so K is a multiple of 32). The first ``256 T`` rows
(``T = K // 256`` whole tiles) are nibble-strided: tile ``t`` becomes 32 packed rows, and nibble ``i``
(bits ``4i .. 4i+3``) of packed row ``r`` of that tile holds ``W[256 t + 32 i + r, n]``::

    packed[32 t + r, n] = sum_i  W[256 t + 32 i + r, n] << (4 i)        r in 0..31, i in 0..7

Why: a kernel loads one ``[32, BLOCK_N]`` block of words per 256 rows of K, fully coalesced along N, and
``(words >> 4 i) & 15`` is directly the contiguous K sub-block ``32 i .. 32 i + 31`` -- the operand of one
``tl.dot`` of depth 32 (the int8 MMA depth on Hopper) -- with no gather, reshape or interleave. A sub-block of
32 rows never straddles a quantization group (group sizes are powers of two >= 32), so each sub-block needs
one row of scales.

The remaining ``K - 256 T`` rows (the tail: ``P`` < 8 sub-blocks of 32, present only when the group is
smaller than 256) are packed four words a sub-block, eight consecutive rows a word, so they take ``P / 8``
of a tile's words instead of a whole tile::

    packed[32 T + 4 j + a, n] = sum_i  W[256 T + 32 j + 8 a + i, n] << (4 i)    j < P, a in 0..3, i in 0..7

A kernel unpacks a tail sub-block as ``[4, 8, BLOCK_N]`` nibbles and reshapes it to the ``[32, BLOCK_N]``
operand. The number of packed rows, ``32 T + 4 P``, tells the two parts apart.
Values are unsigned nibbles 0..15; signed formats store ``q + 8``.
"""

from __future__ import annotations

import torch

from quant.errors import ShapeError

__all__ = ["TILE_K", "SUB_K", "padded_k", "pack_int4", "unpack_int4", "tile_split"]

TILE_K = 256
SUB_K = 32
_WORDS_PER_SUB = SUB_K // 8


def padded_k(k: int, group_size: int) -> int:
    """Return K rounded up to a whole number of quantization groups (and of 32-row sub-blocks)."""
    step = max(SUB_K, group_size)
    return -(-k // step) * step


def tile_split(packed_rows: int) -> tuple[int, int]:
    """Return (whole 256-row tiles, 32-row tail sub-blocks) of a ``[packed_rows, N]`` packed weight."""
    return packed_rows // SUB_K, (packed_rows % SUB_K) // _WORDS_PER_SUB


def _shifts(device: torch.device, shape: tuple[int, ...]) -> torch.Tensor:
    """The eight nibble shifts ``0, 4, .., 28`` as int64, shaped to broadcast."""
    return (4 * torch.arange(8, dtype=torch.int64, device=device)).view(shape)


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack a ``[K, N]`` tensor of integers in 0..15 (K a multiple of 32) into ``[K // 8, N]`` int32 words."""
    if values.dim() != 2 or values.shape[0] % SUB_K:
        raise ShapeError("pack_int4 needs a [K, N] tensor with K a multiple of 32", shape=tuple(values.shape))
    v = values.to(torch.int64)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) > 15):
        raise ShapeError("pack_int4 needs values in 0..15", min=int(v.min()), max=int(v.max()))
    k, n = v.shape
    full = k // TILE_K * TILE_K
    tiles = v[:full].reshape(full // TILE_K, 8, SUB_K, n)  # [t, i, r, n]
    head = (tiles << _shifts(v.device, (1, 8, 1, 1))).sum(dim=1).reshape(full // 8, n)
    tail = (v[full:].reshape(-1, 8, n) << _shifts(v.device, (1, 8, 1))).sum(dim=1)  # [(k - full) // 8, n]
    words = torch.cat([head, tail])  # fits in 32 unsigned bits
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Invert :func:`pack_int4`: ``[K // 8, N]`` int32 words back to ``[K, N]`` int32 values in 0..15."""
    if packed.dim() != 2 or packed.dtype != torch.int32 or packed.shape[0] % _WORDS_PER_SUB:
        raise ShapeError("unpack_int4 needs [K // 8, N] int32 words with K a multiple of 32",
                         shape=tuple(packed.shape), dtype=str(packed.dtype))
    kw, n = packed.shape
    full = kw // SUB_K * SUB_K
    shifts = _shifts(packed.device, (1, 8, 1, 1)).to(torch.int32)
    head = ((packed[:full].reshape(full // SUB_K, 1, SUB_K, n) >> shifts) & 15).reshape(full * 8, n)
    tail = ((packed[full:, None, :] >> shifts.view(1, 8, 1)) & 15).reshape((kw - full) * 8, n)
    return torch.cat([head, tail])
