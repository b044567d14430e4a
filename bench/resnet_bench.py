"""ResNet-20 (CIFAR-10 shape: 32x32x3, 16/32/64 channels, 10 classes, seeded random weights) encrypted in einfhe's
channel-packed one-sample layout, against the same model in plaintext, with Orion as the peer.

    OMP_NUM_THREADS=1 PYTHONPATH=.:bench .venv/bin/python bench/resnet_bench.py --simulate
    OMP_NUM_THREADS=1 PYTHONPATH=.:bench .venv/bin/python bench/resnet_bench.py --orion /path/to/orion-venv/bin/python

The model is bench/resnet_model.py's (BatchNorm statistics measured on its own activations, so every ReLU sees
values of order one); each ReLU is the composite minimax ReLU (`--degrees`, Orion's default 15, 15, 27) fitted
on its input's calibrated range times `--margin` (Orion's margin, 2). Printed: the level map (where each layer
runs and each bootstrap sits), the bootstrap count, op counts, the rotation keys, the cost model's estimate of
the plan at the 128-bit parameters `Parameters.derive(--depth, 2^15, bootstrap=True)` gives, the seconds of the
run, and the max logit error against the float model and against the same polynomial network in float64.
`--simulate` runs the plan on einfhe's exact slot simulator (no encryption: it checks the program, not the
noise). `--orion PYTHON` runs Orion's own ResNet at the same degrees in the same run (bench/orion_resnet.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402  -- loads openfhe before torch

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet_model import RESNET20, seeded_resnet, write_problem  # noqa: E402

from einfhe.compiler import CompositeReLU, Linear  # noqa: E402
from einfhe.compiler.packed_cnn import Block, GlobalAvgPool, compile_packed_cnn, conv_with_batchnorm  # noqa: E402
from einfhe.params import Parameters  # noqa: E402

SLOTS = 1 << 15


def _conv_bn(conv, bn):
    """A torch Conv2d + BatchNorm2d pair as one einfhe Conv."""
    return conv_with_batchnorm(conv.weight.detach().double().numpy(), None, bn.weight.detach().double().numpy(),
                               bn.bias.detach().double().numpy(), bn.running_mean.double().numpy(),
                               bn.running_var.double().numpy(), conv.stride[0], conv.padding[0], bn.eps)


def packed_layers(net, calibration: torch.Tensor, degrees, margin: float):
    """The network as channel-packed layers, each ReLU fitted on its calibrated input range times `margin`, and the
    polynomial network's forward in float64 (the reference the encrypted program computes)."""
    bounds = []

    def relu_of(pre: torch.Tensor) -> CompositeReLU:
        bounds.append(float(pre.abs().max()) * margin)
        return CompositeReLU.fit(bounds[-1], tuple(degrees))

    with torch.no_grad():
        x = calibration.double()
        net = net.double()
        pre = net.bn1(net.conv1(x))
        layers, x = [_conv_bn(net.conv1, net.bn1), relu_of(pre)], torch.relu(pre)
        for stage in net.layers:
            for block in stage:
                mid = block.bn1(block.conv1(x))
                body = (_conv_bn(block.conv1, block.bn1), relu_of(mid), _conv_bn(block.conv2, block.bn2))
                shortcut = () if len(block.shortcut) == 0 else (_conv_bn(block.shortcut[0], block.shortcut[1]),)
                pre = block.bn2(block.conv2(torch.relu(mid))) + block.shortcut(x)
                layers += [Block(body, shortcut), relu_of(pre)]
                x = torch.relu(pre)
        head = Linear(net.linear.weight.double().numpy(), net.linear.bias.double().numpy())
    return layers + [GlobalAvgPool(), head], bounds


def polynomial_forward(net, layers, x: torch.Tensor) -> np.ndarray:
    """The float64 forward of the network with each ReLU replaced by its composite polynomial (in layer order)."""
    inner = [layer.body[1] for layer in layers if isinstance(layer, Block)]
    outer = [layer for layer in layers if isinstance(layer, CompositeReLU)]

    def act(relu, t):
        return torch.tensor(relu(t.numpy()))

    with torch.no_grad():
        net = net.double()
        t = act(outer[0], net.bn1(net.conv1(x.double())))
        index = 0
        for stage in net.layers:
            for block in stage:
                mid = act(inner[index], block.bn1(block.conv1(t)))
                t = act(outer[index + 1], block.bn2(block.conv2(mid)) + block.shortcut(t))
                index += 1
        return net.linear(t.mean(dim=(2, 3))).numpy().reshape(-1)


def run_orion(python: str, net, x: np.ndarray, blocks, channels, degrees) -> dict | None:
    """Orion's ResNet on the same weights, input and degrees (bench/orion_resnet.py), or None if it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        problem = os.path.join(tmp, "problem.npz")
        write_problem(problem, net.float(), x, blocks, channels, degrees)
        env = dict(os.environ, OMP_NUM_THREADS="1", GOMAXPROCS="1", PYTHONPATH="")
        done = subprocess.run([python, str(Path(__file__).with_name("orion_resnet.py")), problem],
                              capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"# Orion failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--degrees", type=int, nargs="+", default=[15, 15, 27])
    parser.add_argument("--margin", type=float, default=2.0)
    parser.add_argument("--depth", type=int, default=6, help="levels between bootstraps")
    parser.add_argument("--blocks", type=int, nargs="+", default=list(RESNET20["blocks"]),
                        help="basic blocks per stage (ResNet-20: 3 3 3)")
    parser.add_argument("--channels", type=int, nargs="+", default=list(RESNET20["channels"]))
    parser.add_argument("--simulate", action="store_true")
    parser.add_argument("--write-problem", metavar="NPZ", help="write bench/resnet_encrypted.py's problem file")
    parser.add_argument("--orion", help="Orion's interpreter (bench/orion_peer.py's venv)")
    args = parser.parse_args()

    net, x = seeded_resnet(args.blocks, args.channels)
    calibration = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)).clamp(-2.5, 2.5)
    layers, bounds = packed_layers(net, calibration, args.degrees, args.margin)
    start = time.perf_counter()
    cnn = compile_packed_cnn(layers, (3, 32, 32), slots=SLOTS, max_depth=args.depth)
    compile_s = time.perf_counter() - start
    print("\n".join(cnn.level_map))
    counts = {op: n for op, n in cnn.plan.op_counts().items() if n}
    print(f"compile {compile_s:.1f} s; {cnn.bootstraps} bootstraps; ReLU bounds {min(bounds):.2f}..{max(bounds):.2f}; "
          f"ops {counts}; {len(cnn.plan.rotations)} rotation keys; plain operands "
          f"{sum(p.nbytes for p in cnn.plains) / 2**20:.0f} MiB")
    params = Parameters.derive(args.depth, SLOTS, bootstrap=True)
    estimate = cnn.plan.estimate(params)
    print(f"128-bit parameters: {params}\ncost model at those parameters: {estimate.seconds:.0f} s, "
          f"evaluation keys {estimate.key_bytes / 2**30:.1f} GiB")
    with torch.no_grad():
        clear = net.double()(torch.tensor(x).double()).numpy().reshape(-1)
    poly = polynomial_forward(net, layers, torch.tensor(x))
    if args.write_problem:
        write_problem(args.write_problem, net, x, args.blocks, args.channels, args.degrees, bounds=np.array(bounds),
                      clear=clear, polynomial=poly)
    if args.simulate:
        start = time.perf_counter()
        got = einfhe.simulate(cnn.plan, x[0], *cnn.plains)
        print(f"simulated in {time.perf_counter() - start:.1f} s: max logit error {np.abs(got - clear).max():.2e} "
              f"vs float ReLU, {np.abs(got - poly).max():.2e} vs the polynomial network; argmax "
              f"{int(np.argmax(got))} vs {int(np.argmax(clear))}")
    if args.orion:
        orion = run_orion(args.orion, net, x, args.blocks, args.channels, args.degrees)
        if orion:
            print(f"Orion: run {orion['run_s']} s, {orion['bootstraps_run']} bootstraps, max logit error "
                  f"{orion['max_error']:.2e}, peak RSS {orion['peak_rss_bytes'] / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
