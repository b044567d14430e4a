"""What noise-flooded decryption (einfhe.params.flooding) costs: precision, time and sizes, against plain decryption.

    PYTHONPATH=. .venv/bin/python bench/flooding_bench.py [--repeats 7] [--rows 64] [--cols 128]

One encrypted ij,j->i (W rows x cols, x uniform in [-1, 1]) at 128-bit security, in-process, three ways:
`default` (Parameters.derive: 40-bit scaling, the plan's depth), `59-bit` (Parameters.for_noise_flooding without
flooding: what the larger moduli alone do) and `flooded` (the same parameters, decryption flooded after a
noise-measuring run under other keys, estimate + 1 bit as the client uses). For each: ring, log2(QP), max |error|
against numpy, bits of precision (log2 of max |y| over max |error|), decryption time (median of `--repeats`),
key generation, the first call's extra work (the measuring run: keys, encrypt, run, measure), ciphertext and
key-set sizes. Ratios are against `default`, measured in the same run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from einfhe import NoiseFlooding, measure_noise  # noqa: E402

SLOTS = 8192


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _measure(plan, W, x, params, flooding, repeats):
    """Keys, one run, the decryption's error and median time, and sizes for one way of decrypting."""
    extra = 0.0
    if flooding:
        def estimate():
            probe = einfhe.Context.for_plan(plan, params=params, flooding=NoiseFlooding())
            return measure_noise(probe, einfhe.run(probe, plan, W, einfhe.encrypt(probe, x, plan.input_layout(1))))
        noise, extra = _timed(estimate)
        flooding = NoiseFlooding(estimate=noise + 1)
    ctx, keygen = _timed(lambda: einfhe.Context.for_plan(plan, params=params, flooding=flooding or None))
    result = einfhe.run(ctx, plan, W, einfhe.encrypt(ctx, x, plan.input_layout(1)))
    times, errors = [], []
    for _ in range(repeats):
        y, seconds = _timed(lambda: einfhe.decrypt(ctx, result))
        times.append(seconds)
        errors.append(np.abs(y - W @ x).max())
    return {"params": params, "error": max(errors), "decrypt": statistics.median(times), "keygen": keygen,
            "extra": extra, "ct": len(einfhe.tensor_to_bytes(ctx, result)),
            "keys": len(einfhe.evaluation_keys_to_bytes(ctx)), "estimate": flooding.estimate if flooding else None}


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    W, x = rng.standard_normal((args.rows, args.cols)), rng.uniform(-1, 1, args.cols)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher(x.shape), slots=SLOTS)
    flooding_params = einfhe.Parameters.for_noise_flooding(plan.depth, SLOTS)
    rows = {
        "default": _measure(plan, W, x, einfhe.Parameters.derive(plan.depth, SLOTS), False, args.repeats),
        "59-bit": _measure(plan, W, x, flooding_params, False, args.repeats),
        "flooded": _measure(plan, W, x, flooding_params, True, args.repeats),
    }
    top = np.abs(W @ x).max()
    base = rows["default"]
    print(f"machine: {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; ij,j->i "
          f"W {args.rows}x{args.cols}, slots {SLOTS}, max |y| {top:.1f}, {args.repeats} decryptions each")
    print(f"{'way':<8} {'N':>6} {'scale':>5} {'depth':>5} {'logQP':>5} {'max err':>9} {'bits':>5} {'decrypt ms':>10} "
          f"{'x base':>6} {'keygen s':>8} {'1st call +s':>11} {'ct KiB':>6} {'keys MiB':>8} {'estimate':>8}")
    for name, row in rows.items():
        p = row["params"]
        estimate = "" if row["estimate"] is None else f"{row['estimate']:.2f}"
        print(f"{name:<8} {p.ring_dim:>6} {p.scale_bits:>5} {p.depth:>5} {p.log_qp:>5} {row['error']:>9.2e} "
              f"{math.log2(top / row['error']):>5.1f} {row['decrypt'] * 1e3:>10.2f} "
              f"{row['decrypt'] / base['decrypt']:>6.1f} {row['keygen']:>8.2f} {row['extra']:>11.2f} "
              f"{row['ct'] / 1024:>6.0f} {row['keys'] / 2**20:>8.1f} {estimate:>8}")


if __name__ == "__main__":
    main()
