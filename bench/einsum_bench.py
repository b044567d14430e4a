"""Einsum strategies at 128-bit (N=2^14 and 2^15): einfhe's chosen plan against its own plain
iteration-space plan and TenSEAL on the same sizes and ring, with op counts, keys, bytes and errors.

    OMP_NUM_THREADS=1 .venv/bin/python bench/einsum_bench.py            # full list, both rings
    OMP_NUM_THREADS=1 .venv/bin/python bench/einsum_bench.py --quick    # N=2^14, short list, fewer repeats
    einfhe bench --quick
    OMP_NUM_THREADS=1 .venv/bin/python bench/einsum_bench.py --ring-choice  # old vs new parameter choice

`--ring-choice [--orion PYTHON]` times each quick case the way main ran it before issue 23 (8192 slots, N=2^14, every plaintext
encoded on every run) and the new way (`compile(..., slots="auto")`: the cheapest 128-bit ring by the cost model;
lifted encryption where the ring has room; plaintexts encoded once per backend) in interleaved rounds on one worker; the new side's first (cold) run is shown
apart. Errors, upload bytes and the op-count lower bound (restated on each one's ring) are printed beside, and
the new way compiled with `rescale="late"` (rotations before the rescale: more precise, slower). With
`--orion`, Orion (bench/orion_peer.py, in its own venv) runs the plain-matrix x cipher-vector cases in the same
rounds, one thread, 128-bit at ring 2^13.

Times are medians of `--repeats` runs of the server computation alone (einfhe.run / TenSEAL's op, plaintext
encoding included in both); keys, encryption and decryption are outside the timing. Client encryption of
the uploads is reported beside the server time. einfhe runs with its default workers
(`einfhe.runtime.scheduler.default_workers`: under OMP_NUM_THREADS=1 and with a core idle, 2 threads for a plan whose
critical path is at most half its estimate); where that is 2 the one-thread time is printed beside it. TenSEAL gets
`n_threads` = OMP_NUM_THREADS.

The op-count lower bound (`lower_bound_ms`) holds for every plan of einfhe's plan IR whose plain operands
enter only through plaintext products (`mul_plain`), whose slot-wise cipher products multiply one entry of
each operand (no sums formed before a product: Strassen-like schemes are outside the class), and whose
products are each followed by a rescale, run in the context einfhe derives for the plan's depth D (the class of
plans with the chosen plan's depth). Every price is the cheapest the cost table has for that ring and depth at
any level where the op can happen: products and rescales at levels below D, rotations at levels 0..D (a plan
may drop levels before rotating). The bound is the sum of three parts:

- products: ceil(P / slots), P the scalar products of the contraction. Plain x cipher: the output is linear
  in the plaintext slot values (S = slots per product), the map from them to the matrix the plan computes is
  linear for a fixed plan, so a generic dense W (P free entries) needs S >= P. Cipher x cipher: every slot
  product yields one entry-by-entry product, and all P are needed.
- rotations: an output slot sums K terms of one cipher operand, uploaded in U ciphertexts (the fewest of any
  cipher operand that every output needs K entries of). Follow a term from an input slot to the output slot:
  its offset is the sum of the rotations on its path, so the terms one slot can hold number at most U times
  the number of distinct sets of rotations a path can take. A path takes a plain rotation or not (x2), and at
  most one of the h rotations hoisted from one precomputation (they share their source: none is another's
  ancestor): x(h + 1). So log2(K / U) <= sum over hoist groups of log2(h + 1) + plain rotations, and the
  rotations cost at least log2(K / U) times the cheapest price per doubling: min(rotate, min over h >= 1 of
  (hoist + h * rotate_hoisted) / log2(h + 1)). Hoisted and plain rotations are thus priced consistently
  with the plan's estimate.
- rescales: one per output ciphertext when there are products.
A second table compares, for each chosen plan, its own rotation-key set with the power-of-two basis
(`compile(rotation_basis="pow2")`): keys, key bytes (from the measured key sizes), rotations and estimate.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

import einfhe
from einfhe.plan.cost import load_cost_model
from einfhe.plan.keybasis import basis_tradeoff
from einfhe.runtime.scheduler import default_workers
from einfhe.tools.timing import call_seconds

try:  # TenSEAL is in the `bench` extra
    import tenseal as ts
except ImportError:  # pragma: no cover - reported in the output
    ts = None


@dataclass(frozen=True)
class Case:
    """One benchmark einsum: spec, shapes, which operands are cipher, and the lower bound's P and K."""

    name: str
    spec: str
    shapes: tuple
    cipher: tuple
    products: int
    terms: int
    quick: bool = True


CASES = [
    Case("vec x plain mat n=64", "ij,j->i", ((64, 64), (64,)), (False, True), 64 * 64, 64),
    Case("vec x plain mat n=256", "ij,j->i", ((256, 256), (256,)), (False, True), 256 * 256, 256),
    Case("vec x plain mat n=1024", "ij,j->i", ((1024, 1024), (1024,)), (False, True), 1024 * 1024, 1024),
    Case("cipher matmul 16x16", "ij,jk->ik", ((16, 16), (16, 16)), (True, True), 16 ** 3, 16),
    Case("cipher matmul 64x64", "ij,jk->ik", ((64, 64), (64, 64)), (True, True), 64 ** 3, 64, quick=False),
    Case("batched bij,bjk->bik 4x16x16", "bij,bjk->bik", ((4, 16, 16), (4, 16, 16)), (True, True), 4 * 16 ** 3, 16),
    Case("row sums ij->i 64x64", "ij->i", ((64, 64),), (True,), 0, 64),
    Case("transpose ij->ji 64x64", "ij->ji", ((64, 64),), (True,), 0, 1),
    Case("chain i,ij,jk->k 64", "i,ij,jk->k", ((64,), (64, 64), (64, 64)), (True, False, False), 64 * 64, 64),
]


def _median_ms(fn, repeats: int) -> float:
    """Median wall time of `fn()` in milliseconds (a call over 5 s is timed once)."""
    return 1e3 * statistics.median(call_seconds(fn, repeats, give_up_after=5.0))


def _cheapest(model, op: str, ring: int, depth: int, below_depth: bool) -> float:
    """The cheapest calibrated price of `op` in a context of `depth` over levels < depth (or <= depth)."""
    return min(model.price(op, ring, depth, level) for level in range(depth if below_depth else depth + 1))


def price_per_doubling(model, ring: int, depth: int, slots: int) -> float:
    """The cheapest cost of one doubling of the terms a slot holds: a plain rotation, or a hoist group of h
    rotations (which multiplies them by h + 1 at most) per log2(h + 1)."""
    hoist = _cheapest(model, "hoist", ring, depth, False)
    hoisted = _cheapest(model, "rotate_hoisted", ring, depth, False)
    h = np.arange(1, slots)
    return min(_cheapest(model, "rotate", ring, depth, False), float(((hoist + h * hoisted) / np.log2(h + 1)).min()))


def lower_bound_ms(case: Case, plan: einfhe.Plan, ring: int) -> float:
    """The op-count lower bound of `case` (module docstring), in ms at the cheapest calibrated prices."""
    model, slots, depth = load_cost_model(), plan.slots, max(1, plan.depth)
    uploads = min(op.layout.num_cts for op in plan.cipher_inputs) if plan.cipher_inputs else 1
    doublings = math.log2(max(1.0, case.terms / uploads))
    mult = "mul" if sum(case.cipher) > 1 and case.products else "mul_plain"
    products = math.ceil(case.products / slots)
    seconds = products * _cheapest(model, mult, ring, depth, True)
    seconds += doublings * price_per_doubling(model, ring, depth, slots)
    seconds += plan.cts_out * _cheapest(model, "rescale", ring, depth, True) if products else 0.0
    return 1e3 * seconds


def run_einfhe(case: Case, arrays, slots: int, strategy: str, repeats: int) -> dict:
    """Compile with `strategy`, make keys, encrypt, time einfhe.run, decrypt; return the row's figures."""
    operands = [einfhe.cipher(a.shape) if c else a for a, c in zip(arrays, case.cipher)]
    plan = einfhe.compile(case.spec, *operands, slots=slots, strategy=strategy)
    ctx = einfhe.Context.for_plan(plan)
    start = time.perf_counter()
    inputs = [einfhe.encrypt(ctx, a, plan.input_layout(i)) if c else a
              for i, (a, c) in enumerate(zip(arrays, case.cipher))]
    encrypt_ms = 1e3 * (time.perf_counter() - start)
    out, workers = [], default_workers(plan)
    ms = _median_ms(lambda: out.append(einfhe.run(ctx, plan, *inputs, workers=workers)), repeats)
    serial_ms = _median_ms(lambda: einfhe.run(ctx, plan, *inputs, workers=1), repeats) if workers > 1 else ms
    got = einfhe.decrypt(ctx, out[-1])
    keys = ctx.backend.export_evaluation_keys()
    counts = plan.op_counts()
    return {
        "strategy": plan.strategy, "ms": ms, "workers": workers, "serial_ms": serial_ms, "encrypt_ms": encrypt_ms, "est_ms": 1e3 * plan.estimated_seconds(ctx.params),
        "rotations": counts["rotate"] + counts["rotate_hoisted"], "hoisted": counts["rotate_hoisted"],
        "pt_mults": counts["mul_plain"] + counts["mask"], "ct_mults": counts["mul"], "depth": plan.depth,
        "keys": len(plan.rotations), "key_bytes": len(keys["rotation_keys"]) + len(keys["mult_key"]),
        "upload_bytes": sum(len(ctx.backend.serialize_ciphertext(ct)) for t in inputs
                            if isinstance(t, einfhe.EncryptedTensor) for ct in t.cts),
        "error": float(np.abs(got - np.einsum(case.spec, *arrays)).max(initial=0.0)),
        "ring": ctx.params.ring_dim, "lb_ms": lower_bound_ms(case, plan, ctx.params.ring_dim),
    }


def run_tenseal(case: Case, arrays, ring: int, repeats: int) -> dict | None:
    """The same einsum with TenSEAL (CKKSVector.mm for a vector times a plain matrix, CKKSTensor otherwise)."""
    if ts is None:
        return None
    depth = 2 if case.name.startswith("chain") else 1
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=ring, coeff_mod_bit_sizes=[60] + [40] * depth + [60],
                     n_threads=int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None)
    ctx.global_scale = 2 ** 40
    ctx.generate_galois_keys()
    ctx.generate_relin_keys()
    expected = np.einsum(case.spec, *arrays)
    if case.spec == "ij,j->i":
        x = ts.ckks_vector(ctx, arrays[1].tolist())
        matrix = arrays[0].T.tolist()
        op, uploaded = (lambda: x.mm(matrix)), [x]
    elif case.spec == "i,ij,jk->k":
        x = ts.ckks_vector(ctx, arrays[0].tolist())
        matrix = (arrays[1] @ arrays[2]).tolist()  # the same plain precomputation einfhe's plan does
        op, uploaded = (lambda: x.mm(matrix)), [x]
    elif case.spec == "ij,jk->ik" and case.shapes[0][0] <= 16 and ring <= 16384:
        a, b = ts.ckks_tensor(ctx, arrays[0]), ts.ckks_tensor(ctx, arrays[1])
        op, uploaded = (lambda: a.mm(b)), [a, b]
    elif ring > 16384 and case.spec in ("ij->i", "ij->ji"):
        return None  # one CKKSTensor ciphertext per element: 4096 of them, 3.6 GiB at N=2^15
    elif case.spec == "ij->i":
        a = ts.ckks_tensor(ctx, arrays[0])
        op, uploaded = (lambda: a.sum(axis=1)), [a]
    elif case.spec == "ij->ji":
        a = ts.ckks_tensor(ctx, arrays[0])
        op, uploaded = (lambda: a.transpose()), [a]
    else:
        return None  # 64x64 CKKSTensor matmul: 262,144 ciphertext products; batched matmul: no TenSEAL op
    out = []
    ms = _median_ms(lambda: out.append(op()), repeats)
    result = out[-1].decrypt()
    got = np.array(result.tolist() if hasattr(result, "tolist") else result)
    key_bytes = len(ctx.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=True,
                                  save_relin_keys=True))
    return {"ms": ms, "error": float(np.abs(np.reshape(got, expected.shape) - expected).max()),
            "key_bytes": key_bytes, "upload_bytes": sum(len(u.serialize()) for u in uploaded)}


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _print_header(argv) -> None:
    """The machine and command lines every table starts with."""
    print(f"# machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}, python {platform.python_version()}")
    print(f"# command: {' '.join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:]))}")


def _prepared(case: Case, arrays, slots, main_way: bool = False, rescale: str = "early") -> tuple:
    """Compile at `slots` (or "auto"), make the plan's context (as main did before issue 23: unlifted, every
    plaintext encoded on every run) and encrypt the cipher operands."""
    operands = [einfhe.cipher(a.shape) if c else a for a, c in zip(arrays, case.cipher)]
    plan = einfhe.compile(case.spec, *operands, slots=slots, rescale=rescale)
    if main_way:
        ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.derive(max(1, plan.depth), plan.slots))
        ctx.backend.plaintexts.max_bytes = 0
    else:
        ctx = einfhe.Context.for_plan(plan)
    inputs = [einfhe.encrypt(ctx, a, plan.input_layout(i)) if c else a
              for i, (a, c) in enumerate(zip(arrays, case.cipher))]
    return plan, ctx, inputs


def _orion_matvec(case: Case, arrays, python: str | None):
    """Orion on a plain-matrix x cipher-vector case (the only einsum its API expresses), or None."""
    if case.spec != "ij,j->i" or case.cipher != (False, True) or not python:
        return None
    from bench.orion_peer import start_peer  # run from the checkout root (PYTHONPATH=.), as `--orion` documents

    return start_peer(python, [(arrays[0], None)], arrays[1])


def compare_ring_choice(cases, rounds: int, orion_python: str | None = None) -> None:
    """Old (8192 slots) and new (slots="auto") parameter choice per case, and Orion where it applies, timed in
    interleaved rounds."""
    print("| case | old N | old ms | old bound ms | new N (slots) | new ms (first run) | new bound ms | old / new | "
          "old error | new error | old upload | new upload | late-rescale ms | late / new | late error | "
          "Orion ms | Orion / new | Orion error |")
    print("|" + "---|" * 18)
    rng = np.random.default_rng(0)
    for case in cases:
        arrays = [rng.uniform(-1, 1, s) for s in case.shapes]
        setups = {"old": _prepared(case, arrays, 8192, main_way=True), "new": _prepared(case, arrays, "auto"),
                  "late": _prepared(case, arrays, "auto", rescale="late")}
        peer = _orion_matvec(case, arrays, orion_python)
        times = {name: [] for name in setups}
        orion_ms = []
        for _ in range(rounds):
            for name, (plan, ctx, inputs) in setups.items():
                start = time.perf_counter()
                einfhe.run(ctx, plan, *inputs, workers=1)
                times[name].append(time.perf_counter() - start)
            if peer is not None:
                orion_ms.append(peer.run_ms())
        cold_ms = 1e3 * times["new"][0]
        row = {}
        for name, (plan, ctx, inputs) in setups.items():
            got = einfhe.decrypt(ctx, einfhe.run(ctx, plan, *inputs, workers=1))
            row[name] = {
                "ring": ctx.params.ring_dim, "slots": plan.slots, "ms": 1e3 * statistics.median(times[name]),
                "bound": lower_bound_ms(case, plan, ctx.params.ring_dim),
                "error": float(np.abs(got - np.einsum(case.spec, *arrays)).max(initial=0.0)),
                "upload": sum(len(ctx.backend.serialize_ciphertext(ct)) for t in inputs
                              if isinstance(t, einfhe.EncryptedTensor) for ct in t.cts),
            }
        old, new, late = row["old"], row["new"], row["late"]
        orion_cells = "- | - | -"
        if peer is not None:
            # Orion takes float32 weights and inputs: its reference is the einsum of those, in float64
            rounded = [a.astype(np.float32).astype(np.float64) for a in arrays]
            expected = np.einsum(case.spec, *rounded)
            orion_error = float(np.abs(peer.result()[:expected.size] - expected).max())
            peer.close()
            orion = statistics.median(orion_ms)
            orion_cells = f"{orion:.1f} | {orion / new['ms']:.2f}x | {orion_error:.1e}"
        print(f"| {case.name} | 2^{int(math.log2(old['ring']))} | {old['ms']:.1f} | {old['bound']:.1f} | "
              f"2^{int(math.log2(new['ring']))} ({new['slots']}) | {new['ms']:.1f} ({cold_ms:.1f}) | {new['bound']:.1f} | "
              f"{old['ms'] / new['ms']:.2f}x | {old['error']:.1e} | {new['error']:.1e} | "
              f"{_fmt_bytes(old['upload'])} | {_fmt_bytes(new['upload'])} | {late['ms']:.1f} | "
              f"{late['ms'] / new['ms']:.2f}x | {late['error']:.1e} | {orion_cells} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark list and print a Markdown table with ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=2^14 only, short list, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rings", type=int, nargs="+", default=[14, 15], help="log2 ring dimensions")
    parser.add_argument("--ring-choice", action="store_true", help="old (8192 slots) vs new (slots='auto') only")
    parser.add_argument("--orion", metavar="PYTHON", help="with --ring-choice: Orion's interpreter (bench/orion_peer.py)")
    args = parser.parse_args(argv)
    if args.ring_choice:
        _print_header(argv)
        compare_ring_choice([c for c in CASES if c.quick], max(args.repeats, 5), args.orion)
        return 0
    rings = [14] if args.quick else args.rings
    repeats = 2 if args.quick else args.repeats
    cases = [c for c in CASES if c.quick or not args.quick]
    _print_header(argv)
    print("| case | N | einfhe plan | ms | workers (1-worker ms) | est ms | lower bound ms | est / bound | rotations (hoisted) | pt-mults | "
          "ct-mults | depth | keys | key bytes | upload (encrypt ms) | max error | iteration-space ms "
          "(upload, encrypt ms) | x | TenSEAL ms | x |")
    print("|" + "---|" * 20)
    rng = np.random.default_rng(0)
    for log_n in rings:
        slots = (1 << log_n) // 2
        for case in cases:
            arrays = [rng.uniform(-1, 1, s) for s in case.shapes]
            best = run_einfhe(case, arrays, slots, "auto", repeats)
            base = run_einfhe(case, arrays, slots, "iteration-space", repeats)
            ten = run_tenseal(case, arrays, best["ring"], repeats)
            ratio = lambda other: f"{other / best['ms']:.1f}x" if best["ms"] > 0.05 else "-"  # noqa: E731
            bound = f"{best['est_ms'] / best['lb_ms']:.2f}" if best["lb_ms"] > 0 else "-"
            ten_ms = f"{ten['ms']:.1f}" if ten else "n/a"
            print(f"| {case.name} | 2^{int(math.log2(best['ring']))} | {best['strategy']} | {best['ms']:.1f} | "
                  f"{best['workers']}{' (' + format(best['serial_ms'], '.1f') + ')' if best['workers'] > 1 else ''} | "
                  f"{best['est_ms']:.1f} | {best['lb_ms']:.1f} | {bound} | {best['rotations']} ({best['hoisted']}) | "
                  f"{best['pt_mults']} | {best['ct_mults']} | {best['depth']} | {best['keys']} | "
                  f"{_fmt_bytes(best['key_bytes'])} | {_fmt_bytes(best['upload_bytes'])} ({best['encrypt_ms']:.0f}) | "
                  f"{best['error']:.1e} | {base['ms']:.1f} ({_fmt_bytes(base['upload_bytes'])}, "
                  f"{base['encrypt_ms']:.0f}) | {ratio(base['ms'])} | {ten_ms}"
                  f"{' (' + _fmt_bytes(ten['upload_bytes']) + ', keys ' + _fmt_bytes(ten['key_bytes']) + ', err ' + format(ten['error'], '.1e') + ')' if ten else ''} | "
                  f"{ratio(ten['ms']) if ten else '-'} |", flush=True)
    print_key_bases(cases, rings)
    return 0


def print_key_bases(cases, rings) -> None:
    """The rotation-key trade-off of each chosen plan (compile only): the plan's own set vs powers of two."""
    print("\n| case | N | plan keys | plan key bytes | plan rotations | est ms | pow2 keys | pow2 key bytes | "
          "pow2 rotations | est ms |")
    print("|" + "---|" * 10)
    for log_n in rings:
        slots = (1 << log_n) // 2
        for case in cases:
            operands = [einfhe.cipher(s) if c else np.ones(s) for s, c in zip(case.shapes, case.cipher)]
            plan = einfhe.compile(case.spec, *operands, slots=slots)
            if not plan.rotations:
                continue
            params = einfhe.Parameters.derive(plan.depth, slots)
            rows = {r["basis"]: r for r in basis_tradeoff(plan, params)}
            cells = " | ".join(f"{r['keys']} | {_fmt_bytes(r['key_bytes'])} | {r['rotations']} | "
                               f"{1e3 * r['estimated_seconds']:.1f}" for r in (rows["plan"], rows["pow2"]))
            print(f"| {case.name} | 2^{log_n} | {cells} |")


if __name__ == "__main__":
    raise SystemExit(main())
