"""`make demo`: encrypted einsums end to end at 128-bit security, printing plan, layouts, timing and error."""

from __future__ import annotations

import time

import numpy as np

import einfhe
from einfhe.params import error_bound

__all__ = ["run_demo", "main"]

CASES = [
    ("ij,j->i", "cipher vector x plain 64x64 matrix", [(64, 64), (64,)], ["plain", "cipher"]),
    ("bij,bjk->bik", "batched cipher x cipher matmul", [(4, 8, 8), (4, 8, 8)], ["cipher", "cipher"]),
    ("ij,jk,kl->il", "3-operand chain (cipher, plain, plain)", [(8, 16), (16, 16), (16, 4)], ["cipher", "plain", "plain"]),
]


def run_demo(seed: int = 0) -> float:
    """Run each demo case on OpenFHE at 128-bit parameters and return the worst max error seen."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for spec, title, shapes, kinds in CASES:
        arrays = [rng.uniform(-1, 1, s) for s in shapes]
        operands = [einfhe.cipher(a.shape) if k == "cipher" else a for a, k in zip(arrays, kinds)]
        print(f"\n=== {title}: einsum('{spec}') on shapes {shapes}")
        plan = einfhe.compile(spec, *operands)
        print(plan.explain())
        for op in plan.cipher_inputs:
            print(op.layout.describe())
        t0 = time.perf_counter()
        ctx = einfhe.Context.for_plan(plan)
        t1 = time.perf_counter()
        inputs = [einfhe.encrypt(ctx, a, plan.input_layout(i)) if k == "cipher" else a
                  for i, (a, k) in enumerate(zip(arrays, kinds))]
        t2 = time.perf_counter()
        stats = einfhe.RunStats()
        result = einfhe.run(ctx, plan, *inputs, stats=stats)
        t3 = time.perf_counter()
        got = einfhe.decrypt(ctx, result)
        t4 = time.perf_counter()
        error = float(np.abs(got - np.einsum(spec, *arrays)).max())
        worst = max(worst, error)
        summed = int(np.prod([n for i, n in einfhe.parse_einsum(spec, *shapes).size_items if i not in spec.split("->")[1]]))
        bound = error_bound(ctx.params, 1.0, summed, plan.depth, plan.keyswitches)
        print(f"parameters: {ctx.params}")
        print(f"time: keys {t1 - t0:.2f}s  encrypt {t2 - t1:.3f}s  evaluate {t3 - t2:.3f}s  decrypt {t4 - t3:.3f}s")
        print("evaluate by op: " + ", ".join(f"{op} {n}x {stats.seconds[op] * 1e3:.1f}ms" for op, n in sorted(stats.counts.items())))
        print(f"max |error| vs numpy.einsum: {error:.2e}   (CKKS bound for these parameters {bound:.1e})")
    return worst


def main() -> int:
    """Entry point of `make demo`: exit status 1 if any error exceeds 1e-3."""
    worst = run_demo()
    print(f"\nworst max error {worst:.2e} ({'OK' if worst < 1e-3 else 'TOO LARGE'}: the demo requires < 1e-3)")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
