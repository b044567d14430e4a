"""Split-K in one launch: each K slice stores an fp32 partial, and the last slice of a tile to finish sums them.

A split-K GEMV with atomic adds needs a zero-filled fp32 output before the kernel and a cast to fp16 after it:
three launches, which cost more than the split gains at the sizes that need it (BENCHMARKS.md). Here every
program stores its partial tile into a workspace, then takes a ticket from a per-tile counter; the program
that draws the last ticket adds the partials in slice order (so results are deterministic), writes the
output in its dtype, and resets the counter to zero for the next call. The workspace is cached per device
and stream: launches on one stream run in order, so they never share it concurrently.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["splitk_store", "splitk_workspace"]

_WORKSPACES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def splitk_workspace(device: torch.device, partials: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the cached ``(fp32 partials, int32 zeroed counters)`` of this device and stream, grown if needed."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device.type, device.index, stream)
    ws = _WORKSPACES.get(key)
    if ws is None or ws[0].numel() < partials or ws[1].numel() < tiles:
        old_p, old_t = (ws[0].numel(), ws[1].numel()) if ws is not None else (0, 0)
        ws = (torch.empty(max(partials, old_p), device=device, dtype=torch.float32),
              torch.zeros(max(tiles, old_t), device=device, dtype=torch.int32))
        _WORKSPACES[key] = ws
    return ws


@triton.jit
def splitk_store(acc, y_ptr, ws_ptr, cnt_ptr, offs_y, mask_y, tile_id, pid_k, SIZE, SPLIT: tl.constexpr):
    """Store ``acc`` to ``y_ptr + offs_y``, or (SPLIT > 1) as slice ``pid_k``'s partial of a ``SIZE``-element output."""
    if SPLIT == 1:
        tl.store(y_ptr + offs_y, acc.to(y_ptr.dtype.element_ty), mask=mask_y)
    else:
        tl.store(ws_ptr + pid_k * SIZE + offs_y, acc, mask=mask_y)
        tl.debug_barrier()  # every thread's partial is written before the ticket (release) is taken
        ticket = tl.atomic_add(cnt_ptr + tile_id, 1, sem="acq_rel", scope="gpu")
        if ticket == SPLIT - 1:
            tl.debug_barrier()
            total = tl.load(ws_ptr + offs_y, mask=mask_y, other=0.0, cache_modifier=".cg")
            for s in tl.static_range(1, SPLIT):
                total += tl.load(ws_ptr + s * SIZE + offs_y, mask=mask_y, other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + offs_y, total.to(y_ptr.dtype.element_ty), mask=mask_y)
            tl.atomic_xchg(cnt_ptr + tile_id, 0)
