"""The CUDA W4A16 kernel for batches of up to 8 rows (``cuda/w4a16_mma.cu``), built on first use by torch's
extension loader, and its wide variant for 9..64 rows behind ``EINFHE_W4A16_WIDE=1``.

Triton cannot pair two nibbles into one fp16 MMA register without a shuffle (BENCHMARKS.md, issue 22), so
this second backend dequantizes with one LOP3 per nibble pair straight into ``mma.sync`` fragments. It reads
the weights in :mod:`quant.packing`'s layout (no second copy) and fuses the bias. The build needs nvcc and
a CUDA device of compute capability 8.0 or newer; where either is missing, or the build fails (with one
warning), :func:`cuda_w4a16` returns None and callers keep the Triton kernel. The first build takes about a
minute and a half (87 s on the H200 of BENCHMARKS.md) and is cached under ``~/.cache/torch_extensions``;
``EINFHE_CUDA_KERNELS=0`` skips it. The wide variant dequantizes each weight once for up to 8 row tiles of 8
and reads the activations permuted beforehand (:func:`permute_activations`: one gather) into the order of its
MMA operands; it has been compiled (sm_90: 98-178 registers, no spills) but not yet timed, so by default 9..64
rows keep the Triton kernel.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
import torch.nn.functional as F

from quant.kernels._launch import _sm_count
from quant.kernels.w4a16 import triton_w4a16
from quant.packing import tile_split

__all__ = ["CUDA_W4A16_MAX_M", "WIDE_MAX_M", "cuda_w4a16", "cuda_w4a16_fits", "permute_activations", "w4a16_matmul"]

# Batches up to this many rows (one 8-row MMA operand) run the CUDA kernel. At 9..64 rows on an H200 a 16-row
# variant (twice the MMAs and activation registers, half the occupancy) lost to the Triton kernel: 29.2 against
# 22.9 us at 8192^2, M = 16 (BENCHMARKS.md, issue 22), so those batches keep Triton unless the wide variant is
# asked for: up to WIDE_MAX_M rows, groups of >= 128.
CUDA_W4A16_MAX_M = 8
WIDE_MAX_M = 64

_SOURCE = os.path.join(os.path.dirname(__file__), "cuda", "w4a16_mma.cu")


def _wide_enabled() -> bool:
    """True when ``EINFHE_W4A16_WIDE=1`` asks for the wide variant at 9..64 rows."""
    return os.environ.get("EINFHE_W4A16_WIDE", "0") == "1"


@functools.lru_cache(maxsize=16)
def _activation_index(m_tiles: int, kp: int, device: torch.device) -> torch.Tensor:
    """Flat indices into ``x`` padded to ``[8 m_tiles, kp]``: for K tile t, row tile mt, step u, lane (g, tq),
    register q = 2 p + r and half e, the activation ``x[8 mt + g, 256 t + 32 (q + 4 e) + 8 tq + u]``, which the
    MMA pairs with weight row ``256 t + 32 (q + 4 e) + 8 tq + u`` (nibble q + 4 e of packed row 8 tq + u)."""
    t, mt, u, lane, q, e = (torch.arange(n).view([-1 if i == d else 1 for i in range(6)])
                            for d, n in enumerate((kp // 256, m_tiles, 8, 32, 4, 2)))
    row = 8 * mt + lane // 4
    col = 256 * t + 32 * (q + 4 * e) + 8 * (lane % 4) + u
    return (row * kp + col).reshape(-1).to(device)


def permute_activations(x: torch.Tensor, m_tiles: int, kp: int) -> torch.Tensor:
    """Return fp16 ``x`` (``[M, K]``, M <= 8 m_tiles) as the wide kernel reads it: rows padded with zeros to
    ``8 m_tiles`` and K to ``kp``, each lane's four B registers of one MMA step in 16 consecutive bytes."""
    padded = F.pad(x.to(torch.float16), (0, kp - x.shape[1], 0, 8 * m_tiles - x.shape[0]))
    return padded.reshape(-1)[_activation_index(m_tiles, kp, padded.device)]


def _wide_launch(n: int, n_tiles: int, device: torch.device) -> tuple[int, int]:
    """Warps per block (32 columns each) and the K split of the wide variant: about two blocks per
    multiprocessor, each K slice at least one tile."""
    warps = 4
    blocks = -(-n // (32 * warps))
    return warps, max(1, min(n_tiles, -(-2 * _sm_count(device) // blocks)))


@functools.lru_cache(maxsize=None)
def _extension():
    """Build (or load from torch's extension cache) the CUDA module; None, with one warning, if that fails, and
    None without building when the environment sets ``EINFHE_CUDA_KERNELS=0``."""
    if os.environ.get("EINFHE_CUDA_KERNELS", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        return load(name="einfhe_w4a16_mma", sources=[_SOURCE], extra_cuda_cflags=["-O3"], verbose=False)
    except Exception as exc:  # no nvcc, no ninja, a compiler error: the Triton kernel still serves
        warnings.warn(f"the CUDA W4A16 kernel could not be built ({type(exc).__name__}: {exc}); "
                      "using the Triton kernel", RuntimeWarning, stacklevel=3)
        return None


def cuda_w4a16_fits(x: torch.Tensor, qweight: torch.Tensor, group_size: int) -> bool:
    """Return True when the CUDA kernel takes this product: a CUDA device of compute capability >= 8.0,
    at most :data:`CUDA_W4A16_MAX_M` rows (:data:`WIDE_MAX_M` for groups of >= 128 under
    ``EINFHE_W4A16_WIDE=1``), N a multiple of 4 (its 16-byte weight loads) and whole 256-row tiles (it reads no
    packed tail: a K padded to a group under 256 that is not a multiple of 256 runs Triton)."""
    max_m = WIDE_MAX_M if _wide_enabled() and group_size >= 128 else CUDA_W4A16_MAX_M
    if not (x.is_cuda and x.dim() == 2 and 0 < x.shape[0] <= max_m):
        return False
    n, tail = qweight.shape[1], tile_split(qweight.shape[0])[1]
    return (n >= 4 and n % 4 == 0 and group_size >= 32 and tail == 0
            and torch.cuda.get_device_capability(x.device)[0] >= 8)


def _warps(m: int, n: int, n_tiles: int) -> int:
    """Warps per block (each takes every warps-th 256-row tile): about 16 warps per multiprocessor in all."""
    blocks = -(-n // 32) * -(-m // 8)
    warps = 1
    while 2 * warps <= min(8, n_tiles) and blocks * warps < 2048:  # never more warps than tiles
        warps *= 2
    return warps


def cuda_w4a16(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
               bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """Return fp16 ``x @ W (+ bias)`` from the CUDA kernel, or None where it does not fit or cannot be built."""
    if not cuda_w4a16_fits(x, qweight, group_size):
        return None
    ext = _extension()
    if ext is None:
        return None
    x = x.to(torch.float16).contiguous()
    b = torch.empty(0, device=x.device) if bias is None else bias.to(torch.float32).contiguous()
    qweight, scales, zeros = (qweight.contiguous(), scales.to(torch.float16).contiguous(),
                              zeros.to(torch.float16).contiguous())
    m, n, kp = x.shape[0], qweight.shape[1], qweight.shape[0] * 8
    if m > CUDA_W4A16_MAX_M:  # the wide variant on 2, 4 or 8 row tiles (the permutation pads rows and K)
        m_tiles = 2 if m <= 16 else 4 if m <= 32 else 8
        warps, splits = _wide_launch(n, kp // 256, x.device)
        return ext.w4a16_wide(permute_activations(x, m_tiles, kp), qweight, scales, zeros, b, group_size, m,
                              m_tiles, warps, splits)
    if x.shape[1] != kp:  # zero columns up to the weight's padded K: the kernel reads whole 256-row tiles
        x = F.pad(x, (0, kp - x.shape[1]))
    return ext.w4a16_mma(x, qweight, scales, zeros, b, group_size, _warps(m, n, kp // 256))


def w4a16_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x @ W (+ bias)`` on the GPU path ``QuantLinear`` takes: the CUDA kernel (fp16, bias fused) where
    it fits and builds, else the Triton kernel (or dequantize + cuBLAS for large M) and a float32 bias add."""
    y = cuda_w4a16(x, qweight, scales, zeros, group_size, bias)
    if y is not None:
        return y
    y = triton_w4a16(x, qweight, scales, zeros, group_size)
    return y if bias is None else y + bias  # one float32 add (type promotion), no separate cast
