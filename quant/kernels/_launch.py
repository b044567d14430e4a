"""Launch choices shared by the W4Ax kernels: block sizes, split-K, and the int4 tile loader.

Two ways to walk K (``Blocks.bk``):

- ``bk == 0`` ("planes"): one ``[32, BLOCK_N]`` block of words per 256 rows, each nibble plane fed to its
  own depth-32 ``tl.dot``; every word is loaded once. Best when streaming weights (small M).
- ``bk in (32, 64, 128, 256)`` ("gather"): each program loads the ``[bk, BLOCK_N]`` tile of codes it
  needs row by row (each word is read by 8 rows, from L1), then does one depth-``bk`` ``tl.dot``, which
  the compiler pipelines better. Best when compute-bound (large M).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

__all__ = ["Blocks", "pick_blocks", "load_int4_rows"]


@dataclass(frozen=True)
class Blocks:
    """One launch configuration: tiles, K step (0 = nibble planes), split-K, warps and pipeline stages."""

    bm: int
    bn: int
    split_k: int
    num_warps: int
    num_stages: int
    bk: int = 0


def _sm_count(device: torch.device) -> int:
    """Return the device's multiprocessor count (a nominal 132, an H100's, off CUDA)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132


def pick_blocks(m: int, n: int, n_tiles: int, device: torch.device, *, integer: bool = False) -> Blocks:
    """Pick tiles for an ``[m, K] x [K, n]`` product with ``n_tiles`` 256-deep K tiles.

    Small M is a weight-streaming problem: narrow N tiles and split-K until every multiprocessor has
    about two programs in flight. Large M is compute-bound: big tiles and no split. The choices are the
    winners of ``bench/kernels_bench.py --quick --tune`` on an H100 (see notes/quant.md); ``integer``
    selects the int8-MMA kernels' large-M tile, which differs from the fp16 kernel's.
    """
    bk = 0
    if m <= 16:
        bm, bn, warps, stages = 16, 64, 4, 4
    elif m <= 64:
        bm, bn, warps, stages = 64, 64, 4, 4
    elif m <= 256:
        bm, bn, warps, stages = 64, 128, 4, 3
    elif integer:
        bm, bn, warps, stages = 128, 64, 4, 2
    else:
        bm, bn, warps, stages = 128, 256, 8, 2
    programs = -(-m // bm) * -(-n // bn)
    target = 2 * _sm_count(device)
    split = max(1, min(n_tiles, -(-target // programs))) if programs < target else 1
    return Blocks(bm, bn, split, warps, stages, bk)


@triton.jit
def load_int4_rows(qw_ptr, offs_k, offs_n, N, mask_n):
    """Load the int4 codes of rows ``offs_k`` and columns ``offs_n`` (int32 0..15) from the packed layout."""
    row = (offs_k // 256) * 32 + (offs_k % 32)
    shift = ((offs_k % 256) // 32) * 4
    words = tl.load(qw_ptr + row[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0)
    return (words >> shift[:, None]) & 15
