"""Compiling einsums of 2-8 operands at scale: compile time, steps, rotation keys, key bytes and upload of each plan,
every operand encrypted and one encrypted with the rest plain, under the default budgets (keys <= 1 GiB, uploads
<= 64 MiB), with median and worst. Compile times are CPU seconds of this process.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/compile_bench.py             # 20 einsums per operand count
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/compile_bench.py --per-count 5

The einsums are random (seeded): 2-8 operands of 1-2 named indices (sometimes one repeated: a diagonal), sizes 2-7,
`...` over a batch of 2-3 in about a third of them, implicit or explicit output. Baselines measured in the same run:
compile time against `optimize="greedy"` with budgets off (one candidate, opt_einsum's greedy path, as before the
candidate search); keys against the same einsum with one cipher operand. Targets (issue 17): worst compile < 1 s,
worst key bytes within the key budget, and no all-cipher plan with more than 4x the keys of the one-cipher plan when
the budget forces it (the all-cipher einsum compiled again with its key budget set to 4x the one-cipher plan's keys,
priced at its own ring and depth, and priced again at the new plan's where that moved to a smaller ring, on which the
same bytes hold more keys).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import string
import subprocess
import time

import numpy as np

import einfhe
from einfhe.plan import DEFAULT_KEY_BUDGET, DEFAULT_UPLOAD_BUDGET
from einfhe.plan.cost import load_cost_model

UNBOUNDED = {"key_budget": 1 << 62, "upload_budget": 1 << 62}
MIB = 1 << 20


def random_einsum(rng: np.random.Generator, operands: int) -> tuple[str, list[tuple[int, ...]]]:
    """A random einsum of `operands` operands: shared letters, sizes 2-7, some repeated indices and `...`."""
    pool = string.ascii_lowercase[: operands + 2]
    sizes = {c: int(rng.integers(2, 8)) for c in pool}
    batch = (int(rng.integers(2, 4)),) if rng.random() < 0.3 else ()
    terms, shapes = [], []
    for _ in range(operands):
        term = list(rng.choice(list(pool), size=int(rng.integers(1, 3)), replace=False))
        if rng.random() < 0.25:
            term.append(term[int(rng.integers(len(term)))])
        text, shape = "".join(term), tuple(sizes[c] for c in term)
        if batch and rng.random() < 0.5:
            text, shape = "..." + text, batch + shape
        terms.append(text)
        shapes.append(shape)
    spec = ",".join(terms)
    if rng.random() < 0.5:
        used = sorted(set("".join(terms).replace(".", "")))
        spec += "->" + ("..." if batch else "") + "".join(c for c in used if rng.random() < 0.4)
    return spec, shapes


def compile_timed(spec: str, operands: list, **options) -> tuple[float, einfhe.Plan | None, str]:
    """(CPU seconds, plan or None, the error's first words) of one compile. CPU time (this process's), not wall
    time: on a shared machine the wall time of a 10 ms compile swings several-fold with the other load."""
    start = time.process_time()
    try:
        plan = einfhe.compile(spec, *operands, **options)
        return time.process_time() - start, plan, ""
    except einfhe.EinfheError as exc:
        return time.process_time() - start, None, str(exc).split(":")[0]


def row(seconds: float, plan: einfhe.Plan, spec: str) -> dict:
    """The figures of one compiled plan."""
    est = plan.estimate()
    return {"spec": spec, "seconds": seconds, "steps": len(plan.steps), "keys": est.keys, "key_bytes": est.key_bytes,
            "upload_bytes": est.upload_bytes, "depth": plan.depth, "ring": est.ring_dim}


def forced_plan(spec: str, operands: list, plan: einfhe.Plan, allowed: int, model) -> tuple:
    """(plan, error) of `spec` compiled with a key budget of `allowed` keys priced at `plan`'s ring and depth,
    priced again at the new plan's ring and depth while a smaller ring lets it hold more keys in those bytes."""
    budget = 1 << 62
    for _ in range(3):
        est = plan.estimate()
        budget = min(budget, model.key_bytes(est.ring_dim, est.depth, allowed))
        _, plan, error = compile_timed(spec, operands, key_budget=budget)
        if plan is None or len(plan.rotations) <= allowed:
            break
    return plan, error


def summary(name: str, rows: list[dict]) -> str:
    """Median and worst of each figure over `rows`."""
    def pair(key, scale=1.0, fmt="{:.0f}"):
        values = [r[key] / scale for r in rows]
        return f"{fmt.format(statistics.median(values))} / {fmt.format(max(values))}"
    return (f"{name:<22} {len(rows):4d}  compile CPU s {pair('seconds', fmt='{:.3f}')}  steps {pair('steps')}  "
            f"keys {pair('keys')}  key MiB {pair('key_bytes', MIB, '{:.1f}')}  upload MiB {pair('upload_bytes', MIB, '{:.1f}')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-count", type=int, default=20, help="einsums per operand count (2..8)")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    model = load_cost_model()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"compile_bench  commit {commit}  {platform.processor() or platform.machine()}  {os.cpu_count()} cores  "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}  budgets: keys <= {DEFAULT_KEY_BUDGET // MIB} MiB, "
          f"uploads <= {DEFAULT_UPLOAD_BUDGET // MIB} MiB")
    rows = {"all cipher": [], "one cipher": [], "greedy, no budget": []}
    refused: dict[str, list[str]] = {"all cipher": [], "one cipher": []}
    ratios, forced, forced_refused = [], [], []
    for operands in range(2, 9):
        for _ in range(args.per_count):
            spec, shapes = random_einsum(rng, operands)
            cipher_all = [einfhe.cipher(s) for s in shapes]
            one = [einfhe.cipher(shapes[0])] + [np.ones(s) for s in shapes[1:]]
            results = {}
            for name, ops in (("all cipher", cipher_all), ("one cipher", one)):
                seconds, plan, error = compile_timed(spec, ops)
                if plan is None:
                    refused[name].append(f"{spec}: {error}")
                    continue
                results[name] = (seconds, plan)
                rows[name].append(row(seconds, plan, spec))
            seconds, plan, _ = compile_timed(spec, cipher_all, optimize="greedy", **UNBOUNDED)
            if plan is not None:
                rows["greedy, no budget"].append(row(seconds, plan, spec))
                if "all cipher" in results:
                    ratios.append(results["all cipher"][0] / max(seconds, 1e-6))
            if "all cipher" in results and "one cipher" in results:
                all_plan, one_plan = results["all cipher"][1], results["one cipher"][1]
                allowed = 4 * max(1, len(one_plan.rotations))
                if len(all_plan.rotations) <= allowed:
                    forced.append(len(all_plan.rotations) / max(1, len(one_plan.rotations)))
                    continue
                plan, error = forced_plan(spec, cipher_all, all_plan, allowed, model)
                if plan is None:
                    forced_refused.append(f"{spec} (one cipher: {len(one_plan.rotations)} keys): {error}")
                else:
                    forced.append(len(plan.rotations) / max(1, len(one_plan.rotations)))
    print(f"{'':<22} {'n':>4}  (median / worst)")
    for name, values in rows.items():
        print(summary(name, values))
    for name, errors in refused.items():
        print(f"{name}: {len(errors)} refused" + "".join(f"\n    {e}" for e in errors[:5]))
    worst_compile, worst_spec = max((r["seconds"], r["spec"]) for name in ("all cipher", "one cipher")
                                    for r in rows[name])
    worst_keys = max(r["key_bytes"] for name in ("all cipher", "one cipher") for r in rows[name])
    print(f"compile time, all cipher / greedy without budgets (same einsum): median {statistics.median(ratios):.2f}x, "
          f"worst {max(ratios):.2f}x")
    print(f"target worst compile < 1 s: {worst_compile:.3f} CPU s ({worst_spec}) -> "
          f"{'met' if worst_compile < 1 else 'NOT met'}")
    print(f"target worst key bytes <= {DEFAULT_KEY_BUDGET // MIB} MiB: {worst_keys / MIB:.1f} MiB -> "
          f"{'met' if worst_keys <= DEFAULT_KEY_BUDGET else 'NOT met'}")
    print(f"keys all cipher / one cipher with the budget forcing <= 4x: median {statistics.median(forced):.2f}x, "
          f"worst {max(forced):.2f}x over {len(forced)} einsums; refused under that budget: {len(forced_refused)}"
          + "".join(f"\n    {e}" for e in forced_refused[:5]))


if __name__ == "__main__":
    main()
