"""Where a 64x64 matvec's precision goes at a 2^40 scale: hand-written OpenFHE on einfhe's own 128-bit context for
it (N=2^13, 4,096 slots, 55-bit first modulus, 40-bit scaling, lifted: `Parameters.derive(1, 4096,
small_first_modulus=True, lift=True)`), four ways side by side, beside einfhe's own plans on the same context.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/matvec_precision.py [--keys 4]

x (64) is packed replicated, slot 64 i + j = x_j, multiplied by W flattened and summed over j by six rotations
(steps 1..32): slot 64 i holds y_i. The ways:
- fresh: encrypted at scale 2^40 on the two towers the plan needs; rescale, then rotate (main before issue 23);
- lifted: encrypted at 2^40 * q on three towers and rescaled by the client before the upload (einfhe's
  `Context.for_plan`); rescale, then rotate (einfhe's default, rescale="early");
- lifted, late: the same upload; rotate, then rescale (einfhe's rescale="late");
- unrescaled upload: encrypted at 2^40 * q and uploaded so (three towers: 1.5x the bytes); the product is rotated at
  scale 2^40 * q * q' and rescaled twice (OpenFHE's FLEXIBLEAUTOEXT does this).
Per way: the upload's own error (x decrypted as uploaded), the matvec's error, each the median over `--keys` key sets
of the max over the 64 outputs, against float64; the upload's bytes and the matvec's time.
"""

from __future__ import annotations

import einfhe  # first: openfhe's libgomp

import argparse
import statistics
import time

import numpy as np

N_IN = 64


def _ways(backend, x_slots: np.ndarray, w_slots: np.ndarray):
    """{way: (uploaded ct, its true scale, function of it -> (result ct, its true scale))}."""
    cc, pk = backend.cc, backend.public_key
    delta = float(1 << backend.params.scale_bits)
    q = [c * delta for c in backend._scale_corrections()]  # the primes the rescales drop, top first

    def encrypt_fresh():
        return cc.Encrypt(pk, cc.MakeCKKSPackedPlaintext(x_slots.tolist(), 1, 1)), delta

    def encrypt_lifted():  # scale 2^40 * q0 (degree 2 with values times q0/2^40), rescaled by q0: exactly 2^40
        ct = cc.Encrypt(pk, cc.MakeCKKSPackedPlaintext((x_slots * q[0] / delta).tolist(), 2, 0))
        return cc.Rescale(ct), delta

    def encrypt_unrescaled():
        return cc.Encrypt(pk, cc.MakeCKKSPackedPlaintext((x_slots * q[0] / delta).tolist(), 2, 0)), delta * q[0]

    def rotate_sum(ct):
        step = 1
        while step < N_IN:
            ct = cc.EvalAdd(ct, cc.EvalRotate(ct, step))
            step *= 2
        return ct

    def product(ct, scale, level, drops):
        """ct (true scale `scale`, at `level`) times W, encoded so that `drops` rescales land on 2^40 exactly."""
        factor = np.prod([q[level + k] for k in range(drops)]) / scale
        return cc.EvalMult(ct, cc.MakeCKKSPackedPlaintext((w_slots * factor).tolist(), 1, level))

    def early(ct, scale):
        return rotate_sum(cc.Rescale(product(ct, scale, 1, 1))), delta

    def late(ct, scale):
        return cc.Rescale(rotate_sum(product(ct, scale, 1, 1))), delta

    def twice(ct, scale):
        return cc.Rescale(cc.Rescale(rotate_sum(product(ct, scale, 0, 2)))), delta

    return {"fresh, rescale then rotate": (encrypt_fresh, early),
            "lifted, rescale then rotate": (encrypt_lifted, early),
            "lifted, rotate then rescale": (encrypt_lifted, late),
            "unrescaled upload, rotate, rescale twice": (encrypt_unrescaled, twice)}


def _values(backend, ct, scale: float) -> np.ndarray:
    plain = backend.cc.Decrypt(backend.secret_key, ct)
    plain.SetLength(backend.slots)
    nominal = float(1 << backend.params.scale_bits) ** ct.GetNoiseScaleDeg()
    return np.array(plain.GetRealPackedValue()) * nominal / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=4, help="key sets (each its own W, x)")
    args = parser.parse_args()
    params = einfhe.Parameters.derive(1, 4096, small_first_modulus=True, lift=True)
    print(f"parameters: {params}")
    rng = np.random.default_rng(0)
    rows = {}
    for _ in range(args.keys):
        W, x = rng.uniform(-1, 1, (N_IN, N_IN)), rng.uniform(-1, 1, N_IN)
        exact = W @ x
        plans = {r: einfhe.compile("ij,j->i", W, einfhe.cipher(x.shape), slots=4096, rescale=r)
                 for r in ("early", "late")}
        ctx = einfhe.Context.for_plan(plans["early"], plans["late"], params=params)
        backend = ctx.backend
        backend.cc.EvalRotateKeyGen(backend.secret_key, [1 << k for k in range(6)])
        ways = _ways(backend, np.tile(x, N_IN), W.reshape(-1))
        for name, (encrypt, compute) in ways.items():
            ct, scale = encrypt()
            upload = len(backend.serialize_ciphertext(ct))
            upload_error = np.abs(_values(backend, ct, scale)[:N_IN] - x).max()
            start = time.perf_counter()
            out, out_scale = compute(ct, scale)
            seconds = time.perf_counter() - start
            error = np.abs(_values(backend, out, out_scale)[::N_IN] - exact).max()
            rows.setdefault(name, []).append((upload_error, error, upload, seconds))
        for rescale, plan in plans.items():
            xe = einfhe.encrypt(ctx, x, plan.input_layout(1))
            start = time.perf_counter()
            ye = einfhe.run(ctx, plan, W, xe, workers=1)
            seconds = time.perf_counter() - start
            error = np.abs(einfhe.decrypt(ctx, ye) - exact).max()
            upload = sum(len(backend.serialize_ciphertext(c)) for c in xe.cts)
            rows.setdefault(f"einfhe plan, rescale={rescale!r} ({plan.strategy})", []).append(
                (float("nan"), error, upload, seconds))
    print(f"{'way':52s} {'upload error':>12s} {'matvec error':>12s} {'upload':>10s} {'ms':>7s}  "
          f"(medians of {args.keys} key sets)")
    for name, values in rows.items():
        upload_error, error, upload, seconds = (statistics.median(v[k] for v in values) for k in range(4))
        print(f"{name:52s} {upload_error:12.1e} {error:12.1e} {upload / 1024:7.0f} KiB {1e3 * seconds:7.1f}")


if __name__ == "__main__":
    main()
