"""Launch choices shared by the W4Ax kernels: the path (fused or dequantize-then-GEMM) and block sizes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Blocks", "pick_blocks", "DEQUANT_GEMM_MIN_M", "use_dequant_gemm", "kernel_output"]

# Above this many rows the fused kernels lose to "dequantize the weight once, then a GEMM" on an H100
# (bench/kernels_bench.py, BENCHMARKS.md): the product is compute-bound and pipelined MMA GEMMs (cuBLAS
# fp16; the Triton int8 GEMM for W4A8) beat the fused kernels' register-dequantized operands.
DEQUANT_GEMM_MIN_M = 65


@dataclass(frozen=True)
class Blocks:
    """One launch configuration of a fused kernel: tiles, split-K factor, warps and pipeline stages."""

    bm: int
    bn: int
    split_k: int
    num_warps: int
    num_stages: int


def use_dequant_gemm(m: int, k: int, n: int) -> bool:
    """Return True when an ``[m, k] x [k, n]`` product should dequantize the weight and call a GEMM."""
    return m >= DEQUANT_GEMM_MIN_M and k % 8 == 0 and n % 8 == 0


def _sm_count(device: torch.device) -> int:
    """Return the device's multiprocessor count (a nominal 132, an H100's, off CUDA)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132


def pick_blocks(m: int, n: int, n_tiles: int, device: torch.device, *, integer: bool = False) -> Blocks:
    """Pick tiles for an ``[m, K] x [K, n]`` product with ``n_tiles`` 256-deep K tiles.

    Small M (<= 64) is a weight-streaming problem: narrow N tiles, and split-K so that enough programs
    stream weights at once. Larger M is compute-bound: big tiles and no split (a split there measured 1.8x
    slower at M = 1024 on an H100). The choices are the winners of H100 sweeps (``bench/kernels_bench.py
    --quick --tune``; for the fp16 kernel at M <= 16, BENCHMARKS.md): the fp16 kernel's single-launch split-K
    wants at least four programs per multiprocessor, at least two slices and at least four tiles per slice;
    ``integer`` selects the int8-MMA kernels' tiles, which differ from the fp16 kernel's.
    """
    if m <= 16 and integer:
        bm, bn, warps, stages = 16, 64, 4, 4
    elif m <= 16:
        bm, bn, warps, stages = 16, 32, 2, 3
    elif m <= 64:
        bm, bn, warps, stages = 64, 64, 4, 4
    elif m <= 256:
        bm, bn, warps, stages = 64, 128, 4, 3
    elif integer:
        bm, bn, warps, stages = 128, 64, 4, 2
    else:
        bm, bn, warps, stages = 128, 256, 8, 2
    programs, sms = -(-m // bm) * -(-n // bn), _sm_count(device)
    if m <= 16 and not integer:  # narrow 2-warp programs; a power-of-two split up to 4 programs per SM
        split = 2
        while programs * split < 4 * sms:
            split *= 2
        return Blocks(bm, bn, max(1, min(split, n_tiles // 4)), warps, stages)
    split = -(-2 * sms // programs) if m <= 64 and programs < 2 * sms else 1
    split = max(1, min(n_tiles, split))
    return Blocks(bm, bn, split, warps, stages)


def kernel_output(m: int, n: int, device: torch.device, out_dtype: torch.dtype, split_k: int) -> torch.Tensor:
    """Return the ``[m, n]`` output a fused integer kernel writes: ``out_dtype``, or zeroed float32 for atomic split-K."""
    if split_k == 1:
        return torch.empty(m, n, device=device, dtype=out_dtype)
    return torch.zeros(m, n, device=device, dtype=torch.float32)
