"""The whole plain 4096 x 4096 times cipher 4096 x 4096 product at 128-bit, ring 2^16, on OpenFHE: all 512 column
tiles of 8 columns, run as chunks of `--chunk` tiles through one compiled plan and one key set, in one process or,
with `--dask W[,W...]`, through `einfhe.runtime.dask_runner` on a LocalCluster of W single-threaded workers (W chunks in
flight, each chunk one part). Prints keygen, keys (count, serialized bytes), upload, server wall and CPU seconds,
and the max error of the whole 4096 x 4096 result against numpy; a line per chunk as it finishes.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/matmat_whole.py [--chunk 16] [--chunks 4] [--dask 0,1,2,4]

Why chunks: the plan takes each diagonal plaintext over every tile of a chunk before the next (encoded once per
chunk), so a chunk holds its tiles' 64 hoisted baby-step rotations at once (128 MiB a tile at 2^16); a
512-tile plan would hold 64 GiB of them. Each chunk encodes the 4096 diagonals again (about 34 s a chunk on
this project's machine), which is the price of bounded memory. `--chunks` runs only the first few chunks (a
partial run, labelled as such in the output).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import einfhe
from einfhe.crypto import tensor_from_bytes
from einfhe.plan import DEFAULT_KEY_BUDGET


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (Dask workers are children)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_gib() -> float:
    """This process's peak resident memory in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _chunk_runner(workers: int, ctx, plan, keys: bytes):
    """A function running one encrypted chunk (EncryptedTensor -> EncryptedTensor) in this process, or on a Dask
    cluster of `workers` single-threaded processes (each chunk one part), and the client (or None)."""
    if not workers:
        return (lambda A, tensor: einfhe.run(ctx, plan, A, tensor, workers=1)), None
    import distributed

    from einfhe.runtime.dask_runner import DaskRunner

    client = distributed.Client(distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                         dashboard_address=None, memory_limit=0))
    runner = DaskRunner(client, timeout=7200.0, max_parts=1)
    params = ctx.params.to_json()

    def run_chunk(A, tensor):
        blob = runner.run(plan, "whole", keys, {1: einfhe.tensor_to_bytes(ctx, tensor)}, {0: A}, params=params)
        return tensor_from_bytes(ctx, blob)

    return run_chunk, client


def _measure(workers: int, first: int, chunks: int, chunk: int, ctx, plan, keys: bytes, A, B) -> None:
    """Run `chunks` chunks of `chunk` tiles from chunk `first` on `workers` Dask workers (0: in this process) and
    print their times, the upload, the max error against numpy and the peak memory."""
    run_chunk, client = _chunk_runner(workers, ctx, plan, keys)
    server_wall = server_cpu = upload = worst = 0.0

    def one(c: int):
        Bc = np.ascontiguousarray(B[:, c * chunk:(c + 1) * chunk, :])
        tensor = einfhe.encrypt(ctx, Bc, plan.input_layout(1))
        size = len(einfhe.tensor_to_bytes(ctx, tensor))
        began, began_cpu = time.perf_counter(), time.process_time()
        result = run_chunk(A, tensor)
        seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - began_cpu
        error = float(np.abs(einfhe.decrypt(ctx, result) - np.einsum("ij,jtk->itk", A, Bc, optimize=True)).max())
        return c, size, seconds, cpu_seconds, error

    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    worker_peaks: list[float] = []
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for c, size, seconds, cpu_seconds, error in pool.map(one, range(first, first + chunks)):
                upload += size
                server_wall += seconds
                server_cpu += cpu_seconds
                worst = max(worst, error)
                print(f"  chunk {c + 1} of {first + 1}-{first + chunks}: {seconds:.1f} s, max error {error:.2e}, "
                      f"{time.perf_counter() - wall_start:.0f} s since the first chunk", flush=True)
        if client is not None:
            worker_peaks = sorted(client.run(_peak_gib).values())
    finally:
        if client is not None:
            client.cluster.close()
            client.close()
    wall, cpu = time.perf_counter() - wall_start, _cpu_seconds() - cpu_start
    total = B.shape[1] // chunk
    label = "the whole product" if chunks == total else f"PARTIAL: chunks {first + 1}-{first + chunks} of {total}"
    where = f"Dask, {workers} worker(s)" if workers else "one process"
    runs = f"{server_wall:.1f} s wall" + ("" if workers else f", {server_cpu:.1f} CPU s")
    peaks = f"; workers' peak RSS {worker_peaks[0]:.1f}-{worker_peaks[-1]:.1f} GiB" if worker_peaks else ""
    print(f"{label}, {where}: {wall:.1f} s wall (encrypt + run + decrypt), {cpu:.1f} CPU s (this process and its "
          f"workers, encryption and checking included); the chunks' runs {runs} summed; upload "
          f"{upload / 2**30:.2f} GiB; max error {worst:.2e} (|C| max "
          f"{np.abs(np.einsum('ij,jtk->itk', A, B[:, first * chunk:(first + chunks) * chunk], optimize=True)).max():.2f}); "
          f"peak RSS of "
          f"this process {_peak_gib():.1f} GiB{peaks}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--slots", type=int, default=32768)
    parser.add_argument("--chunk", type=int, default=16, help="column tiles per chunk (one run of the plan)")
    parser.add_argument("--chunks", type=int, default=0, help="run only this many chunks (0: the whole product)")
    parser.add_argument("--first", type=int, default=0, help="the first chunk to run (0-based)")
    parser.add_argument("--dask", default="0", help="comma-separated Dask worker counts, run in turn on the same "
                                                    "keys (0: one process, no Dask)")
    args = parser.parse_args()
    n, k = args.n, args.slots // args.n
    tiles = n // k
    if tiles % args.chunk:
        parser.error(f"--chunk must divide the {tiles} column tiles")
    chunks = min(args.chunks or tiles // args.chunk, tiles // args.chunk - args.first)
    if args.first < 0 or chunks < 1:
        parser.error(f"--first must name one of the {tiles // args.chunk} chunks")
    rng = np.random.default_rng(0)
    A = rng.uniform(-1, 1, (n, n)) / np.sqrt(n)
    B = rng.uniform(-1, 1, (n, tiles, k))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"matmat_whole A {n}x{n} plain @ B {n}x{n} encrypted: chunks {args.first + 1}-{args.first + chunks} of "
          f"{tiles // args.chunk}, each "
          f"{args.chunk} tiles ({k} columns a tile), {args.slots} slots, Dask workers {args.dask}  commit {commit}  "
          f"{platform.machine()} {os.cpu_count()} cores  OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}",
          flush=True)
    start = time.process_time()
    plan = einfhe.compile("ij,jtk->itk", A, einfhe.cipher((n, args.chunk, k)), slots=args.slots,
                          key_budget=DEFAULT_KEY_BUDGET, upload_budget=2**31)
    compile_seconds = time.process_time() - start
    start = time.perf_counter()
    ctx = einfhe.Context.for_plan(plan)
    keygen = time.perf_counter() - start
    keys = einfhe.evaluation_keys_to_bytes(ctx)
    print(f"plan {plan.strategy}, ring {ctx.params.ring_dim}, depth {plan.depth}, {plan.cts_in} cts a chunk; "
          f"compile {compile_seconds:.1f} CPU s, keygen {keygen:.1f} s, {len(plan.rotations)} rotation keys = "
          f"{len(keys) / 2**20:.0f} MiB serialized; estimate {plan.estimate(ctx.params).seconds:.1f} s a chunk",
          flush=True)
    for workers in (int(w) for w in args.dask.split(",")):
        _measure(workers, args.first, chunks, args.chunk, ctx, plan, keys, A, B)


if __name__ == "__main__":
    main()
