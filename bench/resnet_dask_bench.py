"""The channel-packed ResNet on Dask workers: how its plan splits into parallel work, and its time on 1, 2 and 4
workers against one thread, measured in the same run.

    OMP_NUM_THREADS=1 PYTHONPATH=.:bench .venv/bin/python bench/resnet_dask_bench.py [--size 8] [--dask 1,2,4]

First the structure of ResNet-20's own plan (CIFAR shape, 2^15 slots, `--depth` levels a stretch, as
bench/resnet_bench.py compiles it; no encryption): `einfhe.plan.stages` cuts it at every level change and
`partition` splits each stage into independent parts, so the largest part count of any stage bounds the speed-up
Dask can give one image. Then a run: at 128-bit one worker would hold ResNet-20's 38 GiB of keys, which this
machine cannot give even one worker, so the same network (ResNet-20's blocks and channels, seeded weights) runs on
a `--size` x `--size` image at `--size`^2 * 16 slots with the same chain (`--depth` + bootstrapping, the 128-bit
set's scale over its first modulus) and NO security: it measures how the work spreads, not a 128-bit latency.
Printed: one process on one thread, then staged runs on a LocalCluster of single-threaded processes (each run
includes every worker loading the key set), each with its ratio to the one-thread run and its max logit error
against the polynomial network in float64.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402  -- loads openfhe before torch

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deep_dask_bench import dask_seconds  # noqa: E402
from resnet_bench import SLOTS, packed_layers, polynomial_forward  # noqa: E402
from resnet_model import RESNET20, seeded_resnet  # noqa: E402

from einfhe.compiler.packed_cnn import compile_packed_cnn  # noqa: E402
from einfhe.params import INSECURE, Parameters  # noqa: E402
from einfhe.plan.partition import partition  # noqa: E402
from einfhe.plan.stages import stages  # noqa: E402


def _images(count: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed)).clamp(-2.5, 2.5)


def structure(plan) -> str:
    """The plan's stages and the part counts of its stages, as one line."""
    parts = [len(partition(stage.plan)) for stage in stages(plan)]
    return (f"{len(parts)} stages, {sum(p > 1 for p in parts)} of them with more than one part (at most "
            f"{max(parts)}); {plan.bootstraps} bootstraps, each one ciphertext")


def main() -> None:
    """Print ResNet-20's stage structure, then time the small-image ResNet on one thread and on Dask workers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8, help="image side of the timed run (insecure ring)")
    parser.add_argument("--depth", type=int, default=6, help="levels between bootstraps")
    parser.add_argument("--degrees", type=int, nargs="+", default=[15, 15, 27])
    parser.add_argument("--dask", default="1,2,4", help="comma-separated Dask worker counts")
    parser.add_argument("--skip-structure", action="store_true", help="skip ResNet-20's 2^15-slot plan")
    args = parser.parse_args()
    net, _ = seeded_resnet()
    if not args.skip_structure:
        layers, _ = packed_layers(net, _images(64, 32, 1), args.degrees, 2.0)
        full = compile_packed_cnn(layers, (3, 32, 32), slots=SLOTS, max_depth=args.depth)
        print(f"ResNet-20 (3x32x32, {SLOTS} slots, depth {args.depth}): {structure(full.plan)}", flush=True)
        del full, layers

    layers, _ = packed_layers(net, _images(64, args.size, 1), args.degrees, 2.0)
    slots = args.size * args.size * RESNET20["channels"][0]
    cnn = compile_packed_cnn(layers, (3, args.size, args.size), slots=slots, max_depth=args.depth)
    x = _images(1, args.size, 2).numpy()
    expected = polynomial_forward(net, layers, torch.tensor(x))
    secure = Parameters.derive(args.depth, SLOTS, bootstrap=True)
    params = Parameters(2 * slots, slots, args.depth, secure.scale_bits, secure.first_mod_bits, INSECURE,
                        True).validate()
    start = time.perf_counter()
    ctx = einfhe.Context.for_plan(cnn.plan, params=params)
    keys = einfhe.evaluation_keys_to_bytes(ctx)
    keygen = time.perf_counter() - start
    xe = einfhe.encrypt(ctx, x[0], cnn.plan.input_layout(0), level=cnn.input_level(params))
    print(f"ResNet-20 blocks and channels on 3x{args.size}x{args.size}: {params}; {structure(cnn.plan)}; keys "
          f"{len(keys) / 2**20:.0f} MiB in {keygen:.1f} s; {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    start = time.perf_counter()
    got = einfhe.decrypt(ctx, einfhe.run(ctx, cnn.plan, *cnn.operands(xe)))
    base = time.perf_counter() - start
    print(f"one process, one thread: {base:.1f} s, max logit error {np.abs(got - expected).max():.2e}", flush=True)
    plains = {i + 1: p for i, p in enumerate(cnn.plains)}
    for workers in [int(w) for w in args.dask.split(",") if w]:
        seconds, result = dask_seconds(workers, cnn.plan, plains, keys, einfhe.tensor_to_bytes(ctx, xe),
                                       params.to_json(), staged=True)
        got = einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, result))
        print(f"dask {workers} worker(s), staged: {seconds:.1f} s ({base / seconds:.2f}x one thread), max logit "
              f"error {np.abs(got - expected).max():.2e}, load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
