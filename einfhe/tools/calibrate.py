"""Measure the price of every SIMD op on this machine and store it as the cost model's JSON table.

    python -m einfhe.tools.calibrate            # rings 2^14 and 2^15, depths 1-3, every level; writes einfhe/data/costs.json
    python -m einfhe.tools.calibrate --rings 13 14 15 16   # what the package's table holds (2^13: depths 1-2 only)
    einfhe calibrate --rings 14 --repeats 5 --out /tmp/costs.json

Each op is timed on OpenFHE (the 128-bit parameters `calibration_parameters` gives each ring and depth) as the fastest of `repeats` runs (the
machine is shared: the minimum is the least disturbed by other jobs, as `timeit` advises), at every
level 0..depth of contexts of each depth (no rescale or level drop at the last level); ciphertext and key sizes are measured by serializing them. The OpenMP
thread count in force (OMP_NUM_THREADS) is recorded with the table: prices depend on it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import numpy as np

from ..backends.openfhe import OpenFHEBackend
from ..backends.plaintext_cache import DEFAULT_CACHE_BYTES
from ..plan.keyswitch import calibration_parameters
from .timing import call_seconds

__all__ = ["calibrate", "main", "DEFAULT_PATH"]

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "data" / "costs.json"


def _fastest_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls of `fn()`, in seconds."""
    return min(call_seconds(fn, repeats))


def _cached_seconds(backend: OpenFHEBackend, op, ct, vec, repeats: int) -> float:
    """Seconds of `op(ct, vec)` with `vec`'s plaintext already encoded in the backend's cache (a reuse)."""
    off = backend.plaintexts.max_bytes
    backend.plaintexts.max_bytes = DEFAULT_CACHE_BYTES
    try:
        op(ct, vec)
        return _fastest_seconds(lambda: op(ct, vec), repeats)
    finally:
        backend.plaintexts.clear()
        backend.plaintexts.max_bytes = off


def _measure_level(backend: OpenFHEBackend, ct, repeats: int) -> dict:
    """Seconds of each op on ciphertext `ct` (at its level; no rescale below the last level); plaintext products
    and sums both cold (encoded in the op) and cached (their plaintext encoded by an earlier op)."""
    rng = np.random.default_rng(0)
    vec = rng.uniform(-1, 1, backend.slots)
    other = ct
    digits = backend.precompute_rotations(ct)
    last = backend.level(ct) >= backend.max_depth
    product = None if last else backend.mul_plain(ct, vec)
    rescale = {} if last else {"rescale": _fastest_seconds(lambda: backend.rescale(product), repeats),
                               "level_reduce": _fastest_seconds(lambda: backend.level_reduce(ct), repeats)}
    return rescale | {
        "encrypt": _fastest_seconds(lambda: backend.encrypt(vec), repeats),
        "decrypt": _fastest_seconds(lambda: backend.decrypt(ct), repeats),
        "mul_plain": _fastest_seconds(lambda: backend.mul_plain(ct, vec), repeats),
        "add_plain": _fastest_seconds(lambda: backend.add_plain(ct, vec), repeats),
        "mul_plain_cached": _cached_seconds(backend, backend.mul_plain, ct, vec, repeats),
        "add_plain_cached": _cached_seconds(backend, backend.add_plain, ct, vec, repeats),
        "mul": _fastest_seconds(lambda: backend.mul(ct, other), repeats),
        "add": _fastest_seconds(lambda: backend.add(ct, other), repeats),
        "sub": _fastest_seconds(lambda: backend.sub(ct, other), repeats),
        "rotate": _fastest_seconds(lambda: backend.rotate(ct, 1), repeats),
        "hoist": _fastest_seconds(lambda: backend.precompute_rotations(ct), repeats),
        "rotate_hoisted": _fastest_seconds(lambda: backend.rotate_hoisted(ct, digits, 1), repeats),
    }


def calibrate(ring_logs=(14, 15), depths=(1, 2, 3), repeats: int = 9, log=print) -> dict:
    """Measure op prices and sizes for each ring 2^k and depth; return the cost table as a JSON-ready dict."""
    prices, ct_bytes, rot_bytes, relin_bytes = {}, {}, {}, {}
    for log_n in ring_logs:
        ring = 1 << log_n
        for depth in depths:
            params = calibration_parameters(ring, depth)
            if params.ring_dim != ring:
                log(f"N=2^{log_n} depth {depth}: no 128-bit parameter set on this ring (skipped)")
                continue
            backend = OpenFHEBackend.generate(params, [1])
            backend.plaintexts.max_bytes = 0  # price a plaintext product with its encoding (a cold run's price)
            keys = backend.export_evaluation_keys()
            rot_bytes.setdefault(str(ring), {})[str(depth)] = len(keys["rotation_keys"])
            relin_bytes.setdefault(str(ring), {})[str(depth)] = len(keys["mult_key"])
            ct = backend.encrypt(np.full(backend.slots, 0.5))
            for level in range(depth + 1):
                row = _measure_level(backend, ct, repeats)
                prices.setdefault(str(ring), {}).setdefault(str(depth), {})[str(level)] = row
                ct_bytes.setdefault(str(ring), {}).setdefault(str(depth), {})[str(level)] = {
                    "bytes": len(backend.serialize_ciphertext(ct))
                }
                log(f"N=2^{log_n} depth {depth} level {level}: " + ", ".join(
                    f"{op} {1e3 * s:.2f}ms" for op, s in row.items()))
                if level < depth:
                    ct = backend.rescale(backend.mul_plain(ct, np.ones(backend.slots)))
    import openfhe

    return {
        "format": "einfhe.costs/1",
        "machine": {
            "host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "default"),
            "openfhe": getattr(openfhe, "__version__", "unknown"), "repeats": repeats,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "prices": prices,
        "ciphertext_bytes": ct_bytes,
        "rotation_key_bytes": rot_bytes,
        "relin_key_bytes": relin_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the calibration from the command line and write the table."""
    parser = argparse.ArgumentParser(prog="einfhe calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--rings", type=int, nargs="+", default=[14, 15], help="log2 of the ring dimensions")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    table = calibrate(args.rings, args.depths, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out} (OMP_NUM_THREADS={table['machine']['omp_num_threads']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
