"""Time the W4Ax Triton kernels against torch fp16 matmul, torch._int_mm and the int4 memory floor.

For each weight shape (K, N) and batch M, prints per format: the kernel's median time, its speedup over
``x @ W`` in fp16 (cuBLAS) and over ``torch._int_mm`` (int8 cuBLAS, B column-major, activations already
int8), and the fraction of the memory floor reached. The floor is the time to move the fewest bytes
once through HBM -- packed int4 weights + their scales/zeros + the activations in + the output out --
at ``--bandwidth`` bytes/s (default 3.35e12, the H100 SXM datasheet figure) and, on a GPU, also at the
copy bandwidth measured at start (``floor_m``: a 1 GiB device-to-device copy, bytes read + written). Weights are rotated over enough copies to overflow L2, and every
timing is a CUDA-graph replay (triton.testing.do_bench_cudagraph, median), so launch overhead and the
L2 cache do not flatter small shapes. ``kernel_us`` is the path QuantLinear takes: for M <= 64 the fused
Triton kernel (W4A16 at M <= 8: the CUDA kernel of ``quant.kernels.w4a16_cuda``; at 9..64 its wide variant
where EINFHE_W4A16_WIDE=1), and above that
"dequantize the int4 weight (Triton), then a GEMM" -- cuBLAS fp16 for W4A16/W4A4, the Triton int8 GEMM with
fused scales for W4A8; ``fused_us`` is the fused Triton kernel on every row. On a GPU the CUDA W4A16 kernel is
first checked against the torch reference on ragged shapes. Times include the per-call dequantization and,
for W4A8/W4A4, the split-K zero-fill and cast (W4A16 splits K inside its one launch); W4A8/W4A4 times
exclude per-token activation quantization, as the _int_mm baseline does.

    python bench/kernels_bench.py                 # full grid on the GPU
    python bench/kernels_bench.py --quick         # 2 shapes x 3 batch sizes
    python bench/kernels_bench.py --quick --interpret   # tiny shapes on CPU under TRITON_INTERPRET=1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time

SHAPES = [(4096, 4096), (4096, 11008), (8192, 8192), (8192, 28672)]
BATCHES = [1, 16, 64, 256, 1024, 4096]
L2_ROTATE_BYTES = 256 * 2**20
MEASURED_BW: list[float] = []  # filled by main() on a GPU


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small subset: 2 shapes, M in {1, 16, 1024}")
    p.add_argument("--interpret", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny shapes (a smoke test)")
    p.add_argument("--bandwidth", type=float, default=3.35e12, help="HBM bytes/s for the floor (H100 SXM: 3.35e12)")
    p.add_argument("--formats", default="w4a16,w4a8,w4a4")
    p.add_argument("--batches", help="comma-separated batch sizes M (default: the full grid, or --quick's)")
    p.add_argument("--shapes", help="comma-separated weight shapes KxN, e.g. 8192x8192 (default: the full grid, "
                   "or --quick's)")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--outliers", type=int, default=32, help="W4A4 outlier channels kept in int8")
    p.add_argument("--tune", action="store_true", help="also try the block configs of candidate_blocks(); report the best")
    p.add_argument("--no-check", action="store_true", help="skip the per-shape check against the torch reference")
    p.add_argument("--json", help="write all rows to this file")
    return p.parse_args()


ARGS = parse_args()
if ARGS.interpret:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton

import torch  # noqa: E402
import triton  # noqa: E402

from quant.kernels import (Blocks, cuda_w4a16, pick_blocks, reference_w4a4, reference_w4a8,  # noqa: E402
                           reference_w4a16, triton_w4a4, triton_w4a8, triton_w4a16, use_dequant_gemm,
                           w4a16_matmul)
from quant.kernels.w4a16_cuda import CUDA_W4A16_MAX_M, cuda_w4a16_fits  # noqa: E402
from quant.quantizers import (quantize_per_token, quantize_w4a4_weight, quantize_w4a8_weight,  # noqa: E402
                              quantize_w4a16_weight)


def timeit(fns: list) -> float:
    """Median microseconds per call, cycling through ``fns`` (one per weight copy)."""
    it = itertools.cycle(fns)
    if ARGS.interpret:
        fns[0]()
        t0 = time.perf_counter()
        next(it)()
        return (time.perf_counter() - t0) * 1e6
    return triton.testing.do_bench_cudagraph(lambda: next(it)(), rep=100, return_mode="median") * 1e3


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (1 GiB copied; bytes read + written over the median time)."""
    n = 2**30
    a = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    seconds = triton.testing.do_bench(lambda: b.copy_(a), rep=200, return_mode="median") * 1e-3
    return 2 * n / seconds


def nbytes(*tensors: torch.Tensor) -> int:
    """Total bytes of some tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


def make_weights(fmt: str, w: torch.Tensor, gs: int) -> dict:
    """Quantize one weight for one format."""
    if fmt == "w4a16":
        return quantize_w4a16_weight(w, gs)
    if fmt == "w4a8":
        return quantize_w4a8_weight(w, gs)
    idx = torch.randperm(w.shape[1], device=w.device)[: ARGS.outliers].sort().values
    return {**quantize_w4a4_weight(w, gs, idx), "idx": idx}


def candidate_blocks(m: int, n_tiles: int) -> list[Blocks]:
    """Fused-kernel block configs worth trying for batch ``m`` (used by --tune)."""
    if m <= 16:
        return [Blocks(16, bn, s, w, st) for bn in (32, 64, 128) for s in (1, 2, 4, 8) for w, st in ((4, 4), (2, 4), (8, 3))
                if s <= n_tiles]
    if m <= 256:
        return [Blocks(bm, bn, s, 4, 3) for bm, bn in ((32, 64), (64, 64), (64, 128)) for s in (1, 2, 4)]
    return [Blocks(128, 256, 1, 8, 2), Blocks(128, 64, 1, 4, 2), Blocks(128, 128, 1, 8, 2), Blocks(64, 256, 1, 8, 2)]


def kernel_call(fmt: str, t: dict, x: torch.Tensor, gs: int, reference: bool = False, blocks: Blocks | None = None):
    """Return a zero-argument closure running one format's kernel (or reference) on prepared inputs."""
    if fmt == "w4a16":
        if reference:
            return lambda: reference_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs)
        if blocks is None and not ARGS.interpret:  # the path QuantLinear takes (the CUDA kernel at M <= 8)
            return lambda: w4a16_matmul(x, t["qweight"], t["scales"], t["zeros"], gs)
        return lambda: triton_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs, blocks)
    if fmt == "w4a8":
        xq, xs = quantize_per_token(x, 8)
        if reference:
            return lambda: reference_w4a8(xq, xs, t["qweight"], t["gscale"], t["gzero"], t["wscale"], gs)
        return lambda: triton_w4a8(xq, xs, t["qweight"], t["gscale"], t["gzero"], t["wscale"], gs, blocks=blocks)
    xq, xs = quantize_per_token(x.index_fill(1, t["idx"], 0.0), 4)
    xoq, xos = quantize_per_token(x[:, t["idx"]], 8)
    args = (xq, xs, xoq, xos, t["qweight"], t["scales"], t["oweight"], t["oscale"], gs)
    if reference:
        return lambda: reference_w4a4(*args)
    return lambda: triton_w4a4(*args, blocks=blocks)


def floor_bytes(fmt: str, t: dict, m: int, k: int, n: int) -> int:
    """Fewest bytes a kernel must move: packed weights, their scales, activations in, fp16 output out."""
    weights = nbytes(*(v for key, v in t.items() if key != "idx"))
    act = m * k * (2 if fmt == "w4a16" else 1)
    return weights + act + 2 * m * n


def bench_shape(k: int, n: int, batches: list[int], formats: list[str], device: str) -> list[dict]:
    """Time every format and baseline for one (K, N)."""
    gs = ARGS.group_size
    w = torch.randn(n, k, device=device, dtype=torch.float32) * 0.02
    w16 = w.t().contiguous().half()
    w8 = torch.randint(-127, 127, (n, k), device=device, dtype=torch.int8)
    packed = {fmt: make_weights(fmt, w, gs) for fmt in formats}
    del w
    copies = 1 if ARGS.interpret else max(1, -(-L2_ROTATE_BYTES // nbytes(packed[formats[0]]["qweight"])))
    copies16 = 1 if ARGS.interpret else max(1, -(-L2_ROTATE_BYTES // nbytes(w16)))
    w16s = [w16] + [w16.clone() for _ in range(copies16 - 1)]
    w8s = [w8] + [w8.clone() for _ in range(copies16 - 1)]
    rows = []
    for m in batches:
        x = torch.randn(m, k, device=device, dtype=torch.float16)
        t_fp16 = None if ARGS.interpret else timeit([lambda b=b: x @ b for b in w16s])
        m8 = max(m, 32)  # torch._int_mm needs M > 16: smaller batches are padded, as a caller would have to
        x8 = torch.randint(-127, 127, (m8, k), device=device, dtype=torch.int8)
        t_int8 = None if ARGS.interpret else timeit([lambda b=b: torch._int_mm(x8, b.t()) for b in w8s])
        for fmt in formats:
            t = packed[fmt]
            ts = [t] + [{key: v.clone() for key, v in t.items()} for _ in range(copies - 1)]
            n_tiles = t["qweight"].shape[0] // 32
            blocks = pick_blocks(m, n, n_tiles, x.device, integer=fmt != "w4a16")
            t_fused = timeit([kernel_call(fmt, c, x, gs, blocks=blocks) for c in ts])
            if ARGS.tune:
                for cand in candidate_blocks(m, n_tiles):
                    try:
                        t_c = timeit([kernel_call(fmt, c, x, gs, blocks=cand) for c in ts])
                    except triton.runtime.errors.OutOfResources:
                        continue
                    if t_c < t_fused:
                        blocks, t_fused = cand, t_c
            dequant = use_dequant_gemm(m, k, n)
            on_cuda = fmt == "w4a16" and not ARGS.interpret and cuda_w4a16(x, t["qweight"], t["scales"], t["zeros"],
                                                                             gs) is not None
            t_k = timeit([kernel_call(fmt, c, x, gs) for c in ts]) if dequant or on_cuda else t_fused
            err = None
            if not ARGS.no_check and m <= 256:
                y = kernel_call(fmt, t, x, gs)().float()
                ref = kernel_call(fmt, t, x, gs, reference=True)().float()
                err = float((y - ref).norm() / ref.norm())
            floor = floor_bytes(fmt, t, m, k, n) / ARGS.bandwidth * 1e6
            floor_m = floor_bytes(fmt, t, m, k, n) / MEASURED_BW[0] * 1e6 if MEASURED_BW else None
            path = (("cuda-mma" if m <= CUDA_W4A16_MAX_M else "cuda-wide") if on_cuda else "fused" if not dequant
                    else "dequant+i8gemm" if fmt == "w4a8" else "dequant+cuBLAS")
            row = {"format": fmt, "K": k, "N": n, "M": m, "kernel_us": t_k, "fp16_us": t_fp16, "int8_us": t_int8,
                   "int8_padded_M": m8 != m, "floor_us": floor, "floor_frac": floor / t_k,
                   "floor_frac_measured": floor_m / t_k if floor_m else None,
                   "vs_fp16": t_fp16 / t_k if t_fp16 else None, "vs_int8": t_int8 / t_k if t_int8 else None,
                   "rel_err": err, "path": path, "fused_us": t_fused,
                   "blocks": [blocks.bm, blocks.bn, blocks.split_k, blocks.num_warps, blocks.num_stages]}
            rows.append(row)
            print(fmt_row(row), flush=True)
    return rows


def check_cuda_w4a16() -> list[dict]:
    """Check ``w4a16_matmul`` (QuantLinear's W4A16 call) against the torch reference on ragged shapes (M, K, N
    off the tiles; every group size; bias): the CUDA kernel where K pads to whole 256-row tiles, its wide variant
    at 9..64 rows where EINFHE_W4A16_WIDE=1 turns it on, Triton elsewhere (``path`` says which). Each output must
    be within the fp16 rounding bound of tests/quant/kernels/test_w4a16.py."""
    rows = []
    for m, k, n, gs in [(1, 384, 100, 32), (3, 1024, 260, 64), (8, 768, 96, 128), (5, 2048, 512, 256),
                        (8, 4096, 4096, 128), (2, 640, 36, 256), (7, 1280, 200, 64), (4, 4096, 1024, 32),
                        (9, 384, 100, 256), (16, 4096, 4096, 128), (23, 1280, 260, 256), (33, 640, 36, 128),
                        (64, 4096, 4096, 128), (50, 8192, 1024, 128)]:
        w = torch.randn(n, k, device="cuda") * 0.02
        t = quantize_w4a16_weight(w, gs)
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        bias = torch.randn(n, device="cuda")
        path = "cuda" if cuda_w4a16_fits(x, t["qweight"], gs) else "triton"
        y = w4a16_matmul(x, t["qweight"], t["scales"], t["zeros"], gs, bias)
        ref = reference_w4a16(x, t["qweight"], t["scales"], t["zeros"], gs) + bias
        dense = reference_w4a16(torch.eye(k, device="cuda"), t["qweight"], t["scales"], t["zeros"], gs)
        bound = x.float().abs() @ dense.abs() + bias.abs()
        ok = y.shape == (m, n) and bool(torch.all((y.float() - ref).abs() <= 2.0**-10 * bound + 2.0**-10 * ref.abs()
                                                  + 1e-3))
        rows.append({"M": m, "K": k, "N": n, "group": gs, "path": path, "ok": ok,
                     "rel_err": float((y.float() - ref).norm() / ref.norm())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def fmt_row(r: dict) -> str:
    """One table line."""
    def f(v, spec):
        return format(v, spec) if v is not None else "-"
    return (f"{r['format']:<6} {r['K']:>5} {r['N']:>6} {r['M']:>5} {f(r['kernel_us'], '10.1f')} "
            f"{f(r['fp16_us'], '9.1f')} {f(r['int8_us'], '9.1f')}{'*' if r['int8_padded_M'] else ' '} "
            f"{f(r['vs_fp16'], '7.2f')} {f(r['vs_int8'], '7.2f')} {f(r['floor_us'], '8.1f')} "
            f"{f(r['floor_frac'], '6.2f')} {f(r['floor_frac_measured'], '7.2f')} {f(r['rel_err'], '8.1e')} {r['path']:<15} {f(r['fused_us'], '9.1f')} "
            f"{r['blocks']}")


def main() -> None:
    """Run the grid and print the table (and the environment it ran in)."""
    device = "cpu" if ARGS.interpret else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on the GPU, or pass --interpret for a CPU smoke test")
    if ARGS.interpret:
        shapes, batches = [(512, 96)], [1, 80]
    elif ARGS.quick:
        shapes, batches = [(4096, 4096), (8192, 8192)], [1, 16, 1024]
    else:
        shapes, batches = SHAPES, BATCHES
    if ARGS.batches:
        batches = [int(b) for b in ARGS.batches.split(",")]
    if ARGS.shapes:
        shapes = [tuple(int(v) for v in shape.split("x")) for shape in ARGS.shapes.split(",")]
    formats = ARGS.formats.split(",")
    if device == "cuda":
        MEASURED_BW.append(copy_bandwidth())
    env = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
           "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (TRITON_INTERPRET=1)",
           "bandwidth_Bps": ARGS.bandwidth,
           "measured_copy_Bps": MEASURED_BW[0] if MEASURED_BW else None, "group_size": ARGS.group_size, "w4a4_outliers": ARGS.outliers}
    print(json.dumps(env))
    print("fmt        K      N     M  kernel_us   fp16_us   int8_us  vsfp16  vsint8  floor_us  floor floor_m  rel_err  "
          "path             fused_us [bm,bn,split,warps,stages]")
    torch.manual_seed(0)
    checks = check_cuda_w4a16() if device == "cuda" and "w4a16" in formats else []
    rows = []
    for k, n in shapes:
        rows += bench_shape(k, n, batches, formats, device)
    print("* int8 baseline run at M=32 (torch._int_mm needs M > 16); floor = bytes / bandwidth (floor_m: measured copy)")
    if ARGS.json:
        with open(ARGS.json, "w") as fh:
            json.dump({"env": env, "cuda_w4a16_checks": checks, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
