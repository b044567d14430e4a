"""A plain 4096 x 4096 matrix times a cipher 4096 x 4096 matrix at 128-bit, ring 2^16 (32768 slots), on OpenFHE:
`--tiles` column tiles of the cipher matrix measured (8 columns each, one ciphertext per tile), in one process and,
with `--dask`, through `einfhe.runtime.dask_runner` on a LocalCluster of 1, 2, 4... single-threaded workers;
compile time, rotation keys and key bytes (serialized), upload, server time and the error against numpy.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/matmat_bench.py [--tiles 2] [--dask 1,2,4]

The cipher matrix B is encrypted as B.reshape(n, tiles, 8) ("ij,jtk->itk"): each ciphertext holds 8 columns
[j:4096 | k:8], and the plan (bsgs: 4096 diagonals, 64 hoisted baby steps and 64 giant steps per tile) takes each
diagonal plaintext over every tile before the next, so the server encodes it once per run (per Dask part). The
tiles are independent, so the whole product is n / 8 = 512 of them: the script prints the full product's time
extrapolated from the measured per-tile time (the diagonal encodings counted once). For scale, Bae et al.
(CRYPTO'24) multiply a 4096 x 4096 plaintext matrix by a ciphertext matrix in 17.1 s on one thread of a Xeon
Gold 6242: their algorithm works on the ciphertexts' coefficients as one large plaintext matrix product, where
the diagonal method pays a slot-wise plaintext product per 32768 scalar products.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np

import einfhe
from einfhe.crypto import tensor_from_bytes


def _product(args, rng):
    """The plain matrix, the cipher column tiles (n x tiles x k) and the plan (32768 slots: k = slots / n)."""
    n, k = args.n, args.slots // args.n
    A = rng.uniform(-1, 1, (n, n)) / np.sqrt(n)
    B = rng.uniform(-1, 1, (n, args.tiles, k))
    start = time.process_time()
    plan = einfhe.compile("ij,jtk->itk", A, einfhe.cipher(B.shape), slots=args.slots)
    return A, B, plan, time.process_time() - start


def _dask_seconds(workers: int, plan, keys: bytes, blob: bytes, A, params) -> tuple[float, bytes]:
    """(wall seconds of one run, each worker loading the keys in it; the result blob) on a LocalCluster of
    `workers` single-threaded processes."""
    import distributed

    from einfhe.runtime.dask_runner import DaskRunner

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, memory_limit=0) as cluster, \
            distributed.Client(cluster) as client:
        runner = DaskRunner(client, timeout=3600.0)
        start = time.perf_counter()
        result = runner.run(plan, "bench", keys, {1: blob}, {0: A}, params=params)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--slots", type=int, default=32768)
    parser.add_argument("--tiles", type=int, default=2, help="column tiles of slots / n columns to run")
    parser.add_argument("--dask", default="", help="comma-separated Dask worker counts, e.g. 1,2,4")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    A, B, plan, compile_seconds = _product(args, rng)
    n, k, tiles = args.n, args.slots // args.n, args.tiles
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"matmat_bench A {n}x{n} plain @ B {n}x{tiles * k} encrypted ({tiles} tiles of {k} columns), "
          f"{args.slots} slots  commit {commit}  {platform.machine()} {os.cpu_count()} cores  "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    start = time.perf_counter()
    expected = np.einsum("ij,jtk->itk", A, B)
    numpy_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ctx = einfhe.Context.for_plan(plan)
    keygen = time.perf_counter() - start
    keys = einfhe.evaluation_keys_to_bytes(ctx)
    start = time.perf_counter()
    tensor = einfhe.encrypt(ctx, B, plan.input_layout(1))
    encrypt = time.perf_counter() - start
    blob = einfhe.tensor_to_bytes(ctx, tensor)
    counts = {op: c for op, c in plan.op_counts().items() if c}
    print(f"strategy {plan.strategy}; ring {ctx.params.ring_dim}, depth {plan.depth}; ops {counts}")
    print(f"compile {compile_seconds:.2f} CPU s, keygen {keygen:.1f} s, {len(plan.rotations)} rotation keys = "
          f"{len(keys) / 2**20:.0f} MiB, upload {len(blob) / 2**20:.1f} MiB ({plan.cts_in} cts), "
          f"encrypt {encrypt:.2f} s, estimate {plan.estimate(ctx.params).seconds:.1f} s")
    start, start_cpu = time.perf_counter(), time.process_time()
    result = einfhe.run(ctx, plan, A, tensor, workers=1)
    local, local_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    error = float(np.abs(einfhe.decrypt(ctx, result) - expected).max())
    full = n // k
    print(f"one process: {local:.1f} s wall, {local_cpu:.1f} s CPU for {tiles} tiles ({local / tiles:.1f} s a tile), "
          f"max error {error:.2e} (|C| max {np.abs(expected).max():.2f}); numpy {1e3 * numpy_seconds:.1f} ms")
    print(f"the whole {n}x{n} product, {full} tiles, extrapolated: {local_cpu / tiles * full:.0f} CPU s on one core "
          f"({local / tiles * full:.0f} s wall at this run's load; upload {len(blob) / tiles * full / 2**30:.2f} GiB)")
    rows = []
    for workers in [int(w) for w in args.dask.split(",") if w]:
        seconds, blob_out = _dask_seconds(workers, plan, keys, blob, A, ctx.params.to_json())
        dask_error = float(np.abs(einfhe.decrypt(ctx, tensor_from_bytes(ctx, blob_out)) - expected).max())
        rows.append((workers, seconds))
        print(f"dask {workers} worker(s): {seconds:.1f} s (each worker loads the keys), max error {dask_error:.2e}, "
              f"one process / this {local / seconds:.2f}x", flush=True)
    if rows:
        print(f"speed-up over {rows[0][0]} worker(s): " + ", ".join(f"{w}: {rows[0][1] / s:.2f}x" for w, s in rows))


if __name__ == "__main__":
    main()
