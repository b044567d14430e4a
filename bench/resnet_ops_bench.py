"""ResNet-20's channel-packed plan at 128-bit, extrapolated from op prices measured here at its parameters, with its
first layer run encrypted end to end at 128-bit to check the extrapolation.

    OMP_NUM_THREADS=1 PYTHONPATH=.:bench .venv/bin/python bench/resnet_ops_bench.py [--depth 6] [--repeats 3]
        [--bootstrap-seconds S]

The whole network does not fit this machine at 128-bit (its rotation and bootstrapping keys are 18-38 GiB:
BENCHMARKS.md), so this bench measures what it can. The parameters are the 128-bit set of the plan
(`Parameters.derive(--depth, 2^15, bootstrap=True)`: ring 2^16, 2^55 scale, depth + 19 levels, six key-switching
digits at depth 6) made without bootstrapping keys (the same chain and key size, so the same op prices). On it:
1. every op kind the plan runs (plaintext product with its encoding, addition, plaintext addition, rescale,
   rotation, hoisting and hoisted rotation, ciphertext product with relinearization, each Chebyshev series the
   ReLUs evaluate, on [-1, 1] and on another domain) is timed on a ciphertext at each level of a stretch between
   bootstraps (the level a refreshed ciphertext starts at, plus 0..depth), the median of `--repeats`;
2. with `--stem`, the plan's stem convolution (3 -> 16 channels, with exactly its 24 rotation keys: ~5 GB, so
   under the big-memory lock) runs encrypted on the input image: measured seconds and max error against torch,
   beside its priced (extrapolated) seconds;
3. the whole plan is priced step by step at the measured price of its op at its level, per stage (stem, the
   three stages of basic blocks, the head), plus its bootstraps at `--bootstrap-seconds` each (default: the
   measured 8,192-slot bootstrap of bench/bootstrap_bench.py, `einfhe.plan.cost.BOOTSTRAP_SECONDS`; the
   2^15-slot one was not measured: its keys do not fit beside the rest here).
Everything in 3 is extrapolated, not run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402  -- loads openfhe before torch

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet_bench import SLOTS, packed_layers  # noqa: E402
from resnet_model import seeded_resnet  # noqa: E402

from einfhe.backends.openfhe import OpenFHEBackend  # noqa: E402
from einfhe.compiler.packed_cnn import compile_packed_cnn, compile_packed_image  # noqa: E402
from einfhe.params import Parameters  # noqa: E402
from einfhe.plan import chebyshev_levels  # noqa: E402
from einfhe.plan.cost import BOOTSTRAP_SECONDS  # noqa: E402
from einfhe.tools.timing import call_seconds  # noqa: E402


def _median_seconds(fn, repeats: int) -> float:
    """The median wall-clock seconds of `repeats` calls of `fn()`."""
    return statistics.median(call_seconds(fn, repeats))


def _label(key: tuple) -> str:
    return key[0] if len(key) == 2 else f"{key[0]}({key[1]}{' on [-1, 1]' if key[2] else ''})"


def op_prices(backend, offset: int, depth: int, degrees: set[int], repeats: int) -> dict:
    """Seconds of each op kind at each level since a refresh (0..depth): {(op, level): seconds}, chebyshev keyed
    by ('chebyshev', degree, on [-1, 1], level)."""
    rng = np.random.default_rng(0)
    start = backend.max_depth - 1 - depth
    prices = {}
    for level in range(depth + 1):
        ct = backend.encrypt(rng.uniform(-1, 1, backend.slots), start + level)
        other = backend.encrypt(rng.uniform(-1, 1, backend.slots), start + level)
        vector = lambda: rng.uniform(-1, 1, backend.slots)  # noqa: E731  -- a fresh plaintext: no cache hit
        prices["add", level] = _median_seconds(lambda: backend.add(ct, other), repeats)
        prices["add_plain", level] = _median_seconds(lambda: backend.add_plain(ct, vector()), repeats)
        prices["rotate", level] = _median_seconds(lambda: backend.rotate(ct, offset), repeats)
        digits = backend.precompute_rotations(ct)
        prices["hoist", level] = _median_seconds(lambda: backend.precompute_rotations(ct), repeats)
        prices["rotate_hoisted", level] = _median_seconds(lambda: backend.rotate_hoisted(ct, digits, offset), repeats)
        if level < depth:
            prices["mul_plain", level] = _median_seconds(lambda: backend.mul_plain(ct, vector()), repeats)
            product = backend.mul_plain(ct, vector())
            prices["rescale", level] = _median_seconds(lambda: backend.rescale(product), repeats)
            prices["mul", level] = _median_seconds(lambda: backend.mul(ct, other), repeats)
        for degree in degrees:
            for lo, hi in ((-1.0, 1.0), (-2.0, 2.0)):  # OpenFHE maps a domain other than [-1, 1] onto it first
                if level + chebyshev_levels(degree, lo, hi) <= depth:
                    coeffs = rng.uniform(-1, 1, degree + 1)
                    prices["chebyshev", degree, hi == 1, level] = _median_seconds(
                        lambda: backend.chebyshev(ct, coeffs, lo, hi), repeats)
        print(f"  level {level}: " + ", ".join(f"{_label(key)} {1e3 * value:.1f} ms" for key, value in prices.items()
                                               if key[-1] == level), flush=True)
    return prices


def priced_steps(plan, prices: dict) -> list[float]:
    """The measured price of every step of the plan at its level (loads free, bootstraps priced apart: 0)."""
    levels, seconds = plan.levels(), []
    for step in plan.steps:
        if step.op in ("load", "bootstrap"):
            seconds.append(0.0)
        elif step.op == "chebyshev":
            unit = step.lo == -1 and step.hi == 1
            seconds.append(prices["chebyshev", len(step.coeffs) - 1, unit, levels[step.src]])
        else:
            seconds.append(prices[step.op, levels[step.args[0]] if step.args else 0])
    return seconds


def _run_stem(stem, layout, conv, x, params, prices, depth: int) -> None:
    """The stem convolution encrypted at 128-bit with exactly its rotation keys: measured against priced seconds,
    its error against torch."""
    start = time.perf_counter()
    ctx = einfhe.Context.for_plan(stem.plan, params=params)
    print(f"# the stem's keys (relinearization + {len(stem.plan.rotations)} rotations) in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    xe = einfhe.encrypt(ctx, x[0], stem.plan.input_layout(0), level=ctx.backend.max_depth - 1 - depth)
    start = time.perf_counter()
    out = einfhe.run(ctx, stem.plan, *stem.operands(xe))
    seconds = time.perf_counter() - start
    got = layout.unpack(einfhe.decrypt(ctx, out))
    expected = torch.nn.functional.conv2d(torch.tensor(x).double(), torch.tensor(conv.weight),
                                          torch.tensor(conv.bias), padding=1)[0].numpy()
    print(f"stem convolution at 128-bit: measured {seconds:.2f} s, priced {sum(priced_steps(stem.plan, prices)):.2f} "
          f"s; max error {np.abs(got - expected).max():.2e} (outputs up to {np.abs(expected).max():.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--degrees", type=int, nargs="+", default=[15, 15, 27])
    parser.add_argument("--margin", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stem", action="store_true", help="also run the stem convolution encrypted (~5 GB)")
    parser.add_argument("--bootstrap-seconds", type=float, default=BOOTSTRAP_SECONDS[8192])
    args = parser.parse_args()

    net, x = seeded_resnet()
    calibration = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)).clamp(-2.5, 2.5)
    layers, _ = packed_layers(net, calibration, args.degrees, args.margin)
    cnn = compile_packed_cnn(layers, (3, 32, 32), slots=SLOTS, max_depth=args.depth)
    chain = Parameters.derive(args.depth, SLOTS, bootstrap=True)
    params = dataclasses.replace(chain, depth=chain.total_depth, bootstrap=False).validate()
    print(f"# chain of the plan: {chain}\n# measured on: {params} (no bootstrapping keys)")

    stem, stem_layout = compile_packed_image(layers[:1], (3, 32, 32), slots=SLOTS, max_depth=args.depth)
    offset = stem.plan.rotations[0]
    start = time.perf_counter()
    backend = OpenFHEBackend.generate(params, [offset])
    print(f"# keys (relinearization, one rotation) in {time.perf_counter() - start:.1f} s", flush=True)
    prices = op_prices(backend, offset, args.depth, set(args.degrees), args.repeats)
    del backend
    if args.stem:
        _run_stem(stem, stem_layout, layers[0], x, params, prices, args.depth)

    seconds = priced_steps(cnn.plan, prices)
    blocks = (len(cnn.layer_starts) - 3) // 2  # stem conv and ReLU, (block, ReLU) pairs, the head
    names = ["stem", "stem"] + [f"stage {1 + i // (blocks // 3)}" for i in range(blocks) for _ in (0, 1)] + ["head"]
    by_stage, boots = defaultdict(float), defaultdict(int)
    for name, first, last in zip(names, cnn.layer_starts, cnn.layer_starts[1:] + (len(seconds),)):
        by_stage[name] += sum(seconds[first:last])
        boots[name] += sum(1 for step in cnn.plan.steps[first:last] if step.op == "bootstrap")
    total = sum(seconds) + cnn.bootstraps * args.bootstrap_seconds
    for label in by_stage:
        print(f"  {label:<8} compute {by_stage[label]:8.1f} s + {boots[label]:3d} bootstraps x "
              f"{args.bootstrap_seconds:.1f} s = {by_stage[label] + boots[label] * args.bootstrap_seconds:8.1f} s")
    print(f"ResNet-20 at 128-bit, extrapolated: {total:.0f} s ({sum(seconds):.0f} s compute + {cnn.bootstraps} "
          f"bootstraps x {args.bootstrap_seconds:.1f} s), depth {args.depth} between bootstraps")


if __name__ == "__main__":
    main()
