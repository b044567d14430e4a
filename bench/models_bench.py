"""Encrypted MLP (64-32-10, square activation) at 128-bit: single-sample latency vs batched throughput.

    .venv/bin/python bench/models_bench.py [--repeats 3] [--batch 8192]

Both packings run in the same process on the same weights; the ratio printed is batched samples/s over
single-sample samples/s. Accuracy and the TenSEAL baseline belong to issue 10 and are not measured here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import einfhe
from einfhe.model import Linear, Square, compile_model


def _time_model(model, X, repeats):
    ctx = einfhe.Context.for_plan(model.plan)
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        ye = einfhe.run(ctx, model.plan, *model.operands(xe))
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), einfhe.decrypt(ctx, ye), ctx


def main() -> None:
    """Run the benchmark and print one line per packing and the throughput ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8192)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    W1, b1 = rng.uniform(-0.2, 0.2, (32, 64)), rng.uniform(-0.2, 0.2, 32)
    W2, b2 = rng.uniform(-0.2, 0.2, (10, 32)), rng.uniform(-0.2, 0.2, 10)
    layers = [Linear(W1, b1), Square(), Linear(W2, b2)]
    X = rng.uniform(0, 1, (args.batch, 64))
    reference = ((X @ W1.T + b1) ** 2) @ W2.T + b2

    single = compile_model(layers, 64)
    t_single, y, ctx = _time_model(single, X[0], args.repeats)
    err_single = np.abs(single.unpack_output(y) - reference[0]).max()
    print(f"single  {ctx.params}  depth {single.plan.depth}  rotations {len(single.plan.rotations)}  "
          f"{t_single * 1e3:.1f} ms/sample  max err {err_single:.1e}")

    batched = compile_model(layers, 64, batch=args.batch)
    t_batch, y, ctx = _time_model(batched, X, args.repeats)
    err_batch = np.abs(batched.unpack_output(y) - reference).max()
    rate = args.batch / t_batch
    print(f"batched {ctx.params}  depth {batched.plan.depth}  rotations {len(batched.plan.rotations)}  "
          f"{t_batch:.2f} s/{args.batch} samples = {rate:.0f} samples/s  max err {err_batch:.1e}")
    print(f"ratio batched/single throughput: {rate * t_single:.1f}x")


if __name__ == "__main__":
    main()
