"""ResNet-20 encrypted end to end at 128-bit in the channel-packed layout, from a problem file: numpy and OpenFHE only
(no torch), for a machine with the memory its keys need (~38 GiB at depth 6: not this project's 24 GiB one).

    python bench/resnet_bench.py --write-problem resnet20.npz        # here: weights, input, ReLU bounds, references
    OMP_NUM_THREADS=16 PYTHONPATH=. python bench/resnet_encrypted.py resnet20.npz [--depth 6] [--simulator]

The problem file holds the seeded model's weights under Orion's parameter names (bench/resnet_model.py), the
input, each ReLU's calibrated bound, the ReLU degrees and the logits of the float model and of the polynomial
network. The script folds the BatchNorms, fits the ReLUs, compiles the channel-packed plan
(einfhe.compiler.packed_cnn), derives its 128-bit parameters, makes exactly its keys, encrypts the input at the
plan's input level, runs the plan one step at a time in plan order, decrypts, and prints: key generation seconds
and evaluation-key bytes (the cost model's count), bootstraps, levels between them, seconds per stage (stem, the
three stages, the head) and per op kind, total seconds, and the max logit error against the float model and the
polynomial network. `--simulator` runs the same plan on the exact slot simulator (a check of the program).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

import einfhe
from einfhe.compiler import CompositeReLU, Linear
from einfhe.compiler.packed_cnn import Block, GlobalAvgPool, compile_packed_cnn, conv_with_batchnorm
from einfhe.params import Parameters
from einfhe.runtime.interpreter import RunStats

SLOTS = 1 << 15


def _conv_bn(problem, conv: str, bn: str, stride: int, padding: int):
    return conv_with_batchnorm(problem[f"{conv}.weight"], None, problem[f"{bn}.weight"], problem[f"{bn}.bias"],
                               problem[f"{bn}.running_mean"], problem[f"{bn}.running_var"], stride, padding)


def resnet_layers(problem) -> list:
    """The problem's ResNet as channel-packed layers (the ReLUs fitted on its bounds, in network order)."""
    degrees = tuple(int(d) for d in problem["degrees"])
    relus = iter(CompositeReLU.fit(float(bound), degrees) for bound in problem["bounds"])
    layers = [_conv_bn(problem, "conv1", "bn1", 1, 1), next(relus)]
    for stage, count in enumerate(int(b) for b in problem["blocks"]):
        for block in range(count):
            name, stride = f"layers.{stage}.{block}", 2 if stage and not block else 1
            body = (_conv_bn(problem, f"{name}.conv1", f"{name}.bn1", stride, 1), next(relus),
                    _conv_bn(problem, f"{name}.conv2", f"{name}.bn2", 1, 1))
            shortcut = ()
            if f"{name}.shortcut.0.weight" in problem.files:
                shortcut = (_conv_bn(problem, f"{name}.shortcut.0", f"{name}.shortcut.1", stride, 0),)
            layers += [Block(body, shortcut), next(relus)]
    return layers + [GlobalAvgPool(), Linear(problem["linear.weight"], problem["linear.bias"])]


class _StepClock:
    """A backend wrapper that times every call in order (one call per step when steps run one at a time)."""

    def __init__(self, backend) -> None:
        self._backend, self.seconds = backend, []

    def __getattr__(self, name):
        attribute = getattr(self._backend, name)
        if not callable(attribute) or name in ("encrypt", "decrypt"):
            return attribute

        def timed(*args, **kwargs):
            start = time.perf_counter()
            value = attribute(*args, **kwargs)
            self.seconds.append(time.perf_counter() - start)
            return value
        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("problem")
    parser.add_argument("--depth", type=int, default=6, help="levels between bootstraps")
    parser.add_argument("--simulator", action="store_true")
    args = parser.parse_args()

    problem = np.load(args.problem)
    layers = resnet_layers(problem)
    start = time.perf_counter()
    cnn = compile_packed_cnn(layers, (3, 32, 32), slots=SLOTS, max_depth=args.depth)
    print(f"compiled in {time.perf_counter() - start:.1f} s: {cnn.bootstraps} bootstraps, at most {args.depth} levels "
          f"between them, {len(cnn.plan.rotations)} rotation keys", flush=True)
    params = Parameters.derive(args.depth, SLOTS, bootstrap=True)
    print(f"parameters: {params}\nevaluation keys (cost model): "
          f"{cnn.plan.estimate(params).key_bytes / 2**30:.1f} GiB", flush=True)
    start = time.perf_counter()
    ctx = einfhe.Context.for_plan(cnn.plan, params=params, backend="simulator" if args.simulator else "openfhe")
    print(f"keys made in {time.perf_counter() - start:.1f} s", flush=True)
    level = 0 if args.simulator else cnn.input_level(params)
    xe = einfhe.encrypt(ctx, problem["x"][0], cnn.plan.input_layout(0), level=level)
    clock, stats = _StepClock(ctx.backend), RunStats()
    ctx.backend = clock
    start = time.perf_counter()
    out = einfhe.run(ctx, cnn.plan, *cnn.operands(xe), stats=stats, workers=1)
    total = time.perf_counter() - start
    ctx.backend = clock._backend
    got = einfhe.decrypt(ctx, out)

    timed = [step for step in cnn.plan.steps if step.op != "load"]
    first = {id(step): i for i, step in enumerate(timed)}
    blocks = (len(cnn.layer_starts) - 3) // 2
    names = ["stem", "stem"] + [f"stage {1 + i // max(1, blocks // 3)}" for i in range(blocks) for _ in (0, 1)]
    by_stage = defaultdict(float)
    bounds = list(cnn.layer_starts[1:]) + [len(cnn.plan.steps)]
    for name, begin, end in zip(names + ["head"], cnn.layer_starts, bounds):
        for step in cnn.plan.steps[begin:end]:
            if id(step) in first and first[id(step)] < len(clock.seconds):
                by_stage[name] += clock.seconds[first[id(step)]]
    for name, seconds in by_stage.items():
        print(f"  {name:<8} {seconds:9.1f} s")
    print("  by op: " + ", ".join(f"{op} {s:.1f} s" for op, s in sorted(stats.seconds.items(), key=lambda i: -i[1])))
    error = np.abs(got - problem["clear"]).max()
    print(f"the network encrypted, one image: {total:.1f} s; max logit error {error:.2e} "
          f"vs the float model, {np.abs(got - problem['polynomial']).max():.2e} vs the polynomial network; argmax "
          f"{int(np.argmax(got))} vs {int(np.argmax(problem['clear']))}")


if __name__ == "__main__":
    main()
