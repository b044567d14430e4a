"""A cipher vector times a plain 4096 x 4096 matrix at 128-bit, ring 2^16 (32768 slots), on OpenFHE: compile time,
rotation keys and key bytes (serialized), upload, server time and the error against numpy, beside the plaintext
numpy product measured in the same run.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/big_bench.py [--n 4096]

The plan is whatever `einfhe.compile` chooses under the default budgets (BSGS with extended diagonals: n / m
plaintext products for m = slots / n copies of each row, hoisted baby steps). For scale: Bae et al. (CRYPTO'24)
report a 4096 x 4096 plaintext x ciphertext *matrix* product in 17.1 s on one thread of a Xeon Gold 6242; this
bench does a matrix-vector product (bench/matmat_bench.py does the matrix product, by column tiles).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np

import einfhe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--slots", type=int, default=32768)
    args = parser.parse_args()
    n, slots = args.n, args.slots
    rng = np.random.default_rng(0)
    W, x = rng.uniform(-1, 1, (n, n)) / np.sqrt(n), rng.uniform(-1, 1, n)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"big_bench W {n}x{n} plain @ x encrypted, {slots} slots  commit {commit}  {platform.machine()} "
          f"{os.cpu_count()} cores  OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    start = time.perf_counter()
    for _ in range(10):
        expected = W @ x
    numpy_seconds = (time.perf_counter() - start) / 10
    start = time.process_time()
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher((n,)), slots=slots)
    compile_seconds = time.process_time() - start
    start = time.perf_counter()
    ctx = einfhe.Context.for_plan(plan)
    keygen = time.perf_counter() - start
    key_bytes = len(einfhe.evaluation_keys_to_bytes(ctx))
    start = time.perf_counter()
    xe = einfhe.encrypt(ctx, x, plan.input_layout(1))
    encrypt = time.perf_counter() - start
    upload = len(einfhe.tensor_to_bytes(ctx, xe))
    start, start_cpu = time.perf_counter(), time.process_time()
    result = einfhe.run(ctx, plan, W, xe, workers=1)
    server, server_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    error = float(np.abs(einfhe.decrypt(ctx, result) - expected).max())
    counts = {op: k for op, k in plan.op_counts().items() if k}
    print(f"strategy {plan.strategy}; ring {ctx.params.ring_dim}, depth {plan.depth}; ops {counts}")
    print(f"compile {compile_seconds:.2f} CPU s, keygen {keygen:.1f} s, {len(plan.rotations)} rotation keys = "
          f"{key_bytes / 2**20:.0f} MiB, upload {upload / 2**20:.1f} MiB ({plan.cts_in} ct), encrypt {encrypt:.2f} s")
    print(f"server {server:.2f} s wall, {server_cpu:.2f} s CPU (estimate {plan.estimate(ctx.params).seconds:.2f} s), max error {error:.2e} "
          f"(|y| max {np.abs(expected).max():.2f}); numpy {1e3 * numpy_seconds:.2f} ms -> {server / numpy_seconds:.0f}x")


if __name__ == "__main__":
    main()
