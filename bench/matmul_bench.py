"""Encrypted x encrypted 64x64 @ 64x64 at 128-bit (N = 2^14): Jiang-Kim-Lauter-Song (both operands in one
ciphertext each, row-major, no client replication) beside the plan einfhe chose before it, the iteration-space plan
with the client replicating each operand 64 times (32 ciphertexts each), in the same run.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/matmul_bench.py [--n 64] [--repeats 3]

Server time is the median of `--repeats` runs of einfhe.run (one thread), wall and CPU (this process's: on a shared
machine the wall time swings with the other load); client encryption, uploaded bytes,
rotation keys and key bytes (measured: the serialized evaluation keys), key generation and the max error against
numpy are printed beside it. Parameters are derived at 128-bit for each plan's depth (einfhe.Parameters.derive).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

import numpy as np

import einfhe


def measure(name: str, plan: einfhe.Plan, a: np.ndarray, b: np.ndarray, repeats: int) -> dict:
    """Keys, encryption, server time (median), bytes and error of one plan on OpenFHE."""
    start = time.perf_counter()
    ctx = einfhe.Context.for_plan(plan)
    keygen = time.perf_counter() - start
    key_bytes = len(einfhe.evaluation_keys_to_bytes(ctx))
    start = time.perf_counter()
    inputs = [einfhe.encrypt(ctx, x, plan.input_layout(i)) for i, x in enumerate((a, b))]
    encrypt = time.perf_counter() - start
    upload = sum(len(einfhe.tensor_to_bytes(ctx, t)) for t in inputs)
    times, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = einfhe.run(ctx, plan, *inputs, workers=1)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    error = float(np.abs(einfhe.decrypt(ctx, result) - a @ b).max())
    return {"name": name, "server": statistics.median(times), "server_cpu": statistics.median(cpu), "encrypt": encrypt, "keygen": keygen,
            "keys": len(plan.rotations), "key_mib": key_bytes / 2**20, "upload_mib": upload / 2**20,
            "cts_in": plan.cts_in, "depth": plan.depth, "ring": ctx.params.ring_dim, "error": error,
            "estimate": plan.estimate(ctx.params).seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.n
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (n, n)), rng.uniform(-1, 1, (n, n))
    ops = [einfhe.cipher((n, n)), einfhe.cipher((n, n))]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"matmul_bench {n}x{n} @ {n}x{n}, both encrypted  commit {commit}  {platform.machine()} "
          f"{os.cpu_count()} cores  OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    rows = [measure("replicated (iteration-space)", einfhe.compile("ij,jk->ik", *ops, strategy="iteration-space"),
                    a, b, args.repeats),
            measure("jkls (one ct each)", einfhe.compile("ij,jk->ik", *ops, strategy="jkls"), a, b, args.repeats)]
    print(f"{'plan':<30} {'N':>6} {'depth':>5} {'cts in':>6} {'upload MiB':>10} {'keys':>5} {'key MiB':>8} "
          f"{'keygen s':>8} {'encrypt s':>9} {'server s':>8} {'CPU s':>6} {'est s':>6} {'max err':>9}")
    for r in rows:
        print(f"{r['name']:<30} {r['ring']:>6} {r['depth']:>5} {r['cts_in']:>6} {r['upload_mib']:>10.1f} {r['keys']:>5} "
              f"{r['key_mib']:>8.1f} {r['keygen']:>8.2f} {r['encrypt']:>9.2f} {r['server']:>8.2f} {r['server_cpu']:>6.2f} "
              f"{r['estimate']:>6.2f} "
              f"{r['error']:>9.2e}")
    base, jkls = rows
    print(f"jkls / replicated: server {jkls['server'] / base['server']:.2f}x (CPU "
          f"{jkls['server_cpu'] / base['server_cpu']:.2f}x), upload "
          f"{jkls['upload_mib'] / base['upload_mib']:.3f}x, client encryption {jkls['encrypt'] / base['encrypt']:.2f}x, "
          f"key bytes {jkls['key_mib'] / base['key_mib']:.1f}x")


if __name__ == "__main__":
    main()
