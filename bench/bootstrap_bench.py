"""One CKKS bootstrap at 128-bit security (ring 2^16) per slot count: key generation, bootstrap key bytes, time and
precision, against a ciphertext multiplication at the same ring.

    PYTHONPATH=. .venv/bin/python bench/bootstrap_bench.py [--slots 8192 1024 64] [--depth 2] [--repeats 1]

For each slot count: `Parameters.derive(depth, slots, bootstrap=True)` (the scale OpenFHE's correction factor
allows, einfhe.params.bootstrap), `OpenFHEBackend.generate` timed (key pair, relinearization key, bootstrap set-up
and keys for that slot count: sparse below N/2), the number of automorphism keys bootstrapping made and their
bytes (count x the bytes of the serialized relinearization key, a key-switching key of the same shape: the
whole set is several GB at 2^16 and is not serialized in memory), then a ciphertext of uniform values filling
the headroom, taken down to its last level and bootstrapped `--repeats` times: median seconds, levels left after
the bootstrap, max |error|. The baseline, measured in the same run on the same context, is one ciphertext
multiplication with relinearization and rescale at the top level; the ratio says how many of those a bootstrap
costs. Slow: about 2 minutes per slot count on one core, and up to ~6 GB of keys in memory at 8,192 slots.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402,F401  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import openfhe  # noqa: E402

from einfhe.backends.openfhe import OpenFHEBackend, release_openfhe_caches  # noqa: E402
from einfhe.params import Parameters, bootstrap_headroom, correction_factor  # noqa: E402


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(slots: int, depth: int, repeats: int) -> dict:
    """Key generation, key bytes, bootstrap time and error for one slot count."""
    params = Parameters.derive(depth, slots, bootstrap=True)
    backend, keygen_s = _timed(lambda: OpenFHEBackend.generate(params, []))
    cc, tag = backend.cc, backend.key_tag
    automorphism_keys = len(cc.GetExistingEvalAutomorphismKeyIndices(tag))
    one_key_bytes = len(openfhe.SerializeEvalMultKeyString(openfhe.BINARY, tag))
    rng = np.random.default_rng(slots)
    x = rng.uniform(-1, 1, slots) * 0.9 * bootstrap_headroom(params.scale_bits, params.first_mod_bits)
    fresh = backend.encrypt(x)
    _, mult_s = _timed(lambda: backend.rescale(backend.mul(fresh, fresh)))
    low = fresh
    for _ in range(params.total_depth - 1):
        low = backend.rescale(backend.mul_plain(low, np.ones(slots)))
    times, out = [], None
    for _ in range(repeats):
        out, seconds = _timed(lambda: backend.bootstrap(low))
        times.append(seconds)
    error = float(np.abs(backend.decrypt(out) - x).max())
    result = {
        "slots": slots, "ring": params.ring_dim, "scale_bits": params.scale_bits,
        "first_mod_bits": params.first_mod_bits, "correction_factor": correction_factor(params.ring_dim, slots),
        "log_qp": params.log_qp, "keygen_s": keygen_s, "automorphism_keys": automorphism_keys,
        "key_bytes": (automorphism_keys + 1) * one_key_bytes, "bootstrap_s": statistics.median(times),
        "levels_left": params.total_depth - out.GetLevel(), "max_error": error, "mult_s": mult_s,
    }
    del backend, fresh, low, out
    release_openfhe_caches()
    return result


def main() -> None:
    """Measure each slot count in turn and print one line each, with the ratio to a multiplication."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[8192, 1024, 64])
    parser.add_argument("--depth", type=int, default=2, help="levels between bootstraps")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}  depth between bootstraps {args.depth}")
    for slots in args.slots:
        r = measure(slots, args.depth, args.repeats)
        print(f"slots={r['slots']:>6} N={r['ring']} scale=2^{r['scale_bits']} q0={r['first_mod_bits']}b "
              f"cf={r['correction_factor']} log2(QP)~{r['log_qp']}  keygen {r['keygen_s']:.1f} s  "
              f"{r['automorphism_keys']} bootstrap keys, {r['key_bytes'] / 2**30:.2f} GiB  "
              f"bootstrap {r['bootstrap_s']:.2f} s (= {r['bootstrap_s'] / r['mult_s']:.0f} x one mult+rescale "
              f"of {r['mult_s'] * 1e3:.0f} ms)  levels left {r['levels_left']}  max |error| {r['max_error']:.2e} "
              f"(2^{np.log2(r['max_error']):.1f})", flush=True)


if __name__ == "__main__":
    main()
