"""A plain 4096 x 4096 matrix times a cipher 4096 x 4096 matrix at 128-bit, ring 2^16 (32768 slots), on OpenFHE:
`--tiles` column tiles of the cipher matrix measured (8 columns each, one ciphertext per tile; a list measures each
count on the same keys), in one process and, with `--dask`, through `einfhe.runtime.dask_runner` on a LocalCluster
of 1, 2, 4... single-threaded workers (the runner's default parts, one per worker since the tiles share the
diagonals, beside two per worker as it split them before); compile time, rotation keys and key bytes
(serialized), upload, server time and the error against numpy, overall and per tile.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/matmat_bench.py [--tiles 1,4] [--dask 1,2,4]
        [--rotation-basis plan --key-budget 1400000000]

The cipher matrix B is encrypted as B.reshape(n, tiles, 8) ("ij,jtk->itk"): each ciphertext holds 8 columns
[j:4096 | k:8], and the plan (bsgs: 4096 diagonals, 64 hoisted baby steps and 64 giant steps per tile) takes each
diagonal plaintext over every tile before the next, so the server encodes it once per run (per Dask part). The
tiles are independent, so the whole product is n / 8 = 512 of them: with two or more tile counts the script fits
CPU seconds = fixed + per tile x tiles to the measured runs and prints the whole product's time from that line
(the fixed part is mostly the diagonal encodings, paid once). For scale, Bae et al.
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
from einfhe.plan import DEFAULT_KEY_BUDGET


def _plan(A, tiles: int, k: int, slots: int, basis: str, key_budget: int):
    """The plan of A times `tiles` column tiles of k columns (n x tiles x k) with rotation keys in `basis` within
    `key_budget` bytes, and its compile CPU seconds."""
    start = time.process_time()
    plan = einfhe.compile("ij,jtk->itk", A, einfhe.cipher((A.shape[1], tiles, k)), slots=slots,
                          rotation_basis=basis, key_budget=key_budget)
    return plan, time.process_time() - start


def _dask_seconds(workers: int, max_parts, plan, keys: bytes, blob: bytes, A, params) -> tuple[float, bytes, int]:
    """(wall seconds of one run, each worker loading the keys in it; the result blob; the parts) on a
    LocalCluster of `workers` single-threaded processes, the plan split into `max_parts` (None: the default)."""
    import distributed

    from einfhe.runtime.dask_runner import DaskRunner

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, memory_limit=0) as cluster, \
            distributed.Client(cluster) as client:
        runner = DaskRunner(client, timeout=3600.0, max_parts=max_parts)
        parts = len(runner.parts(plan))
        start = time.perf_counter()
        result = runner.run(plan, "bench", keys, {1: blob}, {0: A}, params=params)
    return time.perf_counter() - start, result, parts


def _errors(got, expected) -> tuple[float, list[float]]:
    """The max error over the product and over each column tile."""
    diff = np.abs(got - expected)
    return float(diff.max()), [float(e) for e in diff.max(axis=(0, 2))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--slots", type=int, default=32768)
    parser.add_argument("--tiles", default="2", help="comma-separated column tile counts (slots / n columns each)")
    parser.add_argument("--rotation-basis", default="auto", help="compile(..., rotation_basis=...): auto, plan, bsgs")
    parser.add_argument("--key-budget", type=int, default=DEFAULT_KEY_BUDGET, help="compile(..., key_budget=...)")
    parser.add_argument("--dask", default="", help="comma-separated Dask worker counts, e.g. 1,2,4")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    counts = sorted({int(t) for t in args.tiles.split(",")})
    n, k, most = args.n, args.slots // args.n, max(counts)
    A = rng.uniform(-1, 1, (n, n)) / np.sqrt(n)
    B = rng.uniform(-1, 1, (n, most, k))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"matmat_bench A {n}x{n} plain @ B {n}x{most * k} encrypted (tile counts {counts} of {k} columns), "
          f"{args.slots} slots  commit {commit}  {platform.machine()} {os.cpu_count()} cores  "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}", flush=True)
    plans = {t: _plan(A, t, k, args.slots, args.rotation_basis, args.key_budget)
             for t in counts}
    start = time.perf_counter()
    ctx = einfhe.Context.for_plan(plans[most][0])
    keygen = time.perf_counter() - start
    keys = einfhe.evaluation_keys_to_bytes(ctx)
    cpu, blobs = {}, {}
    for t in counts:
        plan, compile_seconds = plans[t]
        ctx.check_plan(plan)
        Bt = np.ascontiguousarray(B[:, :t, :])
        expected = np.einsum("ij,jtk->itk", A, Bt)
        start = time.perf_counter()
        tensor = einfhe.encrypt(ctx, Bt, plan.input_layout(1))
        encrypt = time.perf_counter() - start
        blobs[t] = einfhe.tensor_to_bytes(ctx, tensor)
        counts_of = {op: c for op, c in plan.op_counts().items() if c}
        print(f"{t} tile(s): strategy {plan.strategy}; ring {ctx.params.ring_dim}, depth {plan.depth}; ops {counts_of}")
        print(f"  compile {compile_seconds:.2f} CPU s, keygen {keygen:.1f} s, {len(plan.rotations)} rotation keys = "
              f"{len(keys) / 2**20:.0f} MiB, upload {len(blobs[t]) / 2**20:.1f} MiB ({plan.cts_in} cts), "
              f"encrypt {encrypt:.2f} s, estimate {plan.estimate(ctx.params).seconds:.1f} s", flush=True)
        start, start_cpu = time.perf_counter(), time.process_time()
        result = einfhe.run(ctx, plan, A, tensor, workers=1)
        wall, cpu[t] = time.perf_counter() - start, time.process_time() - start_cpu
        ctx.backend.plaintexts.clear()  # the next tile count encodes its diagonals again, as a fresh run would
        error, per_tile = _errors(einfhe.decrypt(ctx, result), expected)
        print(f"  one process: {wall:.1f} s wall, {cpu[t]:.1f} s CPU; max error {error:.2e} (|C| max "
              f"{np.abs(expected).max():.2f}), per tile {', '.join(f'{e:.1e}' for e in per_tile)}", flush=True)
    full = n // k
    if len(counts) >= 2:
        first, last = counts[0], counts[-1]
        per_tile = (cpu[last] - cpu[first]) / (last - first)
        fixed = cpu[first] - first * per_tile
        print(f"CPU s = {fixed:.1f} fixed + {per_tile:.2f} per tile (from {first} and {last} tiles); the whole "
              f"{n}x{n} product, {full} tiles: {fixed + full * per_tile:.0f} CPU s on one core, extrapolated")
    plan = plans[most][0]
    expected = np.einsum("ij,jtk->itk", A, B)
    for workers in [int(w) for w in args.dask.split(",") if w]:
        for max_parts in (None, 2 * workers):
            seconds, blob_out, parts = _dask_seconds(workers, max_parts, plan, keys, blobs[most], A,
                                                     ctx.params.to_json())
            error, _ = _errors(einfhe.decrypt(ctx, tensor_from_bytes(ctx, blob_out)), expected)
            print(f"dask {workers} worker(s), {parts} part(s) ({'default' if max_parts is None else 'two a worker'}"
                  f"): {seconds:.1f} s wall (each worker loads the keys), max error {error:.2e}", flush=True)


if __name__ == "__main__":
    main()
