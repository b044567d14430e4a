"""What the blob checksum (einfhe.crypto.blobs: CRC-32 over header and payload) costs, next to what it guards.

    PYTHONPATH=. .venv/bin/python bench/checksum_bench.py [--repeats 7] [--rotations 24]

At ring 2^14 (128-bit, depth 1): an evaluation-key set with `--rotations` rotation keys (about 40 MiB by default)
and a one-ciphertext tensor (about 0.5 MiB). For each, the median of `--repeats` runs of: the CRC-32 alone, the
whole einfhe write (pack_blob: header and checksum) and read (unpack_blob: header checks and checksum), and the
OpenFHE work the same bytes cost anyway (serializing the keys or the ciphertext; deserializing the ciphertext).
The ratio column is the checksum's time over that OpenFHE baseline, measured in the same run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import statistics  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402

from einfhe.crypto.blobs import HEADER_SIZE, pack_blob, unpack_blob  # noqa: E402
from einfhe.tools.timing import call_seconds  # noqa: E402


def _median(fn, repeats: int) -> float:
    """Median wall time of `fn()` in milliseconds."""
    return statistics.median(call_seconds(fn, repeats)) * 1e3


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rotations", type=int, default=22)
    args = parser.parse_args()
    params = einfhe.Parameters.derive(1, 8192)
    n = 8192
    plan = einfhe.compile("i,i->i", np.ones(n), einfhe.cipher((n,)), slots=8192)
    ctx = einfhe.Context.for_plan(plan, params=params)
    rotations = [1 << k for k in range(13)] + list(range(3, 3 + args.rotations - 13))
    ctx.backend.cc.EvalRotateKeyGen(ctx.backend.secret_key, rotations)
    ctx.backend.rotations = tuple(sorted(set(rotations)))
    keys = einfhe.evaluation_keys_to_bytes(ctx)
    tensor = einfhe.encrypt(ctx, np.linspace(-1, 1, n), plan.input_layout(1))
    blob = einfhe.tensor_to_bytes(ctx, tensor)
    ct_bytes = ctx.backend.serialize_ciphertext(tensor.cts[0])
    rows = [
        ("key set", keys, "evaluation_keys", "OpenFHE serialize keys", lambda: ctx.backend.export_evaluation_keys()),
        ("ciphertext", blob, "tensor", "OpenFHE deserialize ct", lambda: ctx.backend.deserialize_ciphertext(ct_bytes)),
    ]
    print(f"machine: {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; {params}")
    print(f"{'blob':<11} {'MiB':>7} {'crc32 ms':>9} {'pack ms':>8} {'unpack ms':>10} {'baseline':<24} {'ms':>8} "
          f"{'crc/base':>9}")
    for name, data, kind, base_name, base in rows:
        payload = data[HEADER_SIZE:]
        crc = _median(lambda: zlib.crc32(payload), args.repeats)
        pack = _median(lambda: pack_blob(kind, data[8:24], payload), args.repeats)
        unpack = _median(lambda: unpack_blob(data, kind, None), args.repeats)
        baseline = _median(base, args.repeats)
        print(f"{name:<11} {len(data) / 2**20:>7.2f} {crc:>9.3f} {pack:>8.3f} {unpack:>10.3f} {base_name:<24} "
              f"{baseline:>8.2f} {crc / baseline:>8.1%}")


if __name__ == "__main__":
    main()
