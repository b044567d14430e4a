"""A ResNet-style CNN on scikit-learn's digits deep enough for two bootstraps, encrypted end to end at 128-bit.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/digits_deep.py [--samples 128] [--slots 128] [--simulate]

The digits are upsampled to 16x16 (bilinear). The network: a strided stem (conv 3x3 stride 2 + BatchNorm, 16x16 ->
8x8), a square, a residual block x + BN(conv(square(BN(conv(x))))), a 2x2 average pool, and a head of four
Linear + BatchNorm + square stages and a Linear to the 10 classes: 14 levels (the pool and the first Linear are
one layer), trained here in float (square
activations, so the plaintext model is the polynomial network itself). At most `--depth` (6) levels fit between
bootstraps at 128-bit (`Parameters.derive(6, slots, bootstrap=True)`: ring 2^16), so the level planner
(`compile_model(..., max_depth=6)`) must place at least two bootstraps, and places them where they refresh
the fewest ciphertexts (the head, one ciphertext per feature, the test images across the slots). The input is
encrypted at `model.input_level(params)`, with only the levels the stretch before the first bootstrap uses.

`--noise 5e-3 1e-2` also prints how far the plaintext model's predictions move with uniform noise of those
amplitudes added where the bootstraps sit (the error one bootstrap may leave). Printed: the level map, float /
plaintext / encrypted accuracy on the test images, the agreement of encrypted and
plaintext predictions, max logit error, seconds per op kind (bootstrap, products, ...), key generation, key bytes,
and the largest value entering each bootstrap against the headroom OpenFHE's bootstrapping leaves. `--simulate`
runs the same plan on einfhe's exact slot simulator instead (seconds, for a check). Depth 6 between bootstraps
holds a 2^55 scale at 128-bit by six key-switching digits (`Parameters.derive`'s scale floor: at the 2^48 it
once derived, one bootstrap's error was 0.26 and the decryption failed), which doubles the keys to 8 GiB; the
process then peaks near 14 GB at 128 slots (BENCHMARKS.md has the run), so run it alone.
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
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_resnet import digits_split, train  # noqa: E402

import quant  # noqa: E402
from einfhe.compiler import Linear, Residual, Square, avg_pool2d, compile_model, conv2d, fold_batchnorm  # noqa: E402
from einfhe.params import Parameters, bootstrap_headroom  # noqa: E402


class DeepDigitsNet(nn.Module):
    """Strided stem, one residual block, average pool, a head of four Linear-BN-square stages: 16x16 -> 10."""

    def __init__(self, channels: int = 2, hidden: int = 16, pool: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels)
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.square = quant.Square()
        self.pool = nn.AvgPool2d(pool)
        widths = [channels * (8 // pool) ** 2] + [hidden] * 4
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm1d(b) for b in widths[1:])
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores for images ``[B, 1, 16, 16]``."""
        h = self.square(self.bn0(self.stem(x)))
        h = h + self.bn2(self.conv2(self.square(self.bn1(self.conv1(h)))))
        h = torch.flatten(self.pool(h), 1)
        for fc, bn in zip(self.fcs, self.bns):
            h = self.square(bn(fc(h)))
        return self.head(h)


def upsample(images: np.ndarray) -> np.ndarray:
    """8x8 digits to 16x16 (bilinear), float32 ``[N, 1, 16, 16]``."""
    up = nn.functional.interpolate(torch.from_numpy(images), size=(16, 16), mode="bilinear", align_corners=False)
    return up.numpy().astype(np.float32)


def _bn(bn: nn.Module) -> list:
    return [t.detach().double().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)] + [bn.eps]


def _conv(conv: nn.Conv2d, shape: tuple[int, int, int]) -> Linear:
    return conv2d(conv.weight.detach().double().numpy(), conv.bias.detach().double().numpy(), shape,
                  conv.stride[0], conv.padding[0])


def _linear(fc: nn.Linear) -> Linear:
    return Linear(fc.weight.detach().double().numpy(), fc.bias.detach().double().numpy())


def einfhe_layers(net: DeepDigitsNet) -> list:
    """The trained network as einfhe layers (BatchNorm folded into the layer before it, pooling a Linear)."""
    c = net.stem.out_channels
    layers = [fold_batchnorm(_conv(net.stem, (1, 16, 16)), *_bn(net.bn0)), Square(),
              Residual((fold_batchnorm(_conv(net.conv1, (c, 8, 8)), *_bn(net.bn1)), Square(),
                        fold_batchnorm(_conv(net.conv2, (c, 8, 8)), *_bn(net.bn2)))),
              None]
    for fc, bn in zip(net.fcs, net.bns):
        layers += [fold_batchnorm(_linear(fc), *_bn(bn)), Square()]
    pool, first = avg_pool2d((c, 8, 8), net.pool.kernel_size), layers[4]
    layers[3:5] = [Linear(first.weight @ pool.weight, first.bias)]  # pooling and the first Linear: one layer
    return layers + [_linear(net.head)]


def layer_inputs(layers: list, X: np.ndarray) -> list[np.ndarray]:
    """In plaintext (float64), the value entering each layer, then the output: X is (samples, features)."""
    values = [X]
    for layer in layers:
        values.append(_apply(layer, values[-1]))
    return values


def noisy_logits(layers: list, X: np.ndarray, points: tuple[int, ...], amplitude: float) -> np.ndarray:
    """The plaintext logits with uniform noise of `amplitude` added to the value entering each layer of `points`
    (where the bootstraps sit): the error budget a bootstrap has."""
    rng, h = np.random.default_rng(1), X
    for position, layer in enumerate(layers):
        if position in points:
            h = h + rng.uniform(-amplitude, amplitude, h.shape)
        h = _apply(layer, h)
    return h


def _apply(layer, h: np.ndarray) -> np.ndarray:
    if isinstance(layer, Square):
        return h * h
    if isinstance(layer, Residual):
        out = h
        for inner in layer.layers:
            out = _apply(inner, out)
        return h + out
    return h @ layer.weight.T + (0 if layer.bias is None else layer.bias)


def _key_bytes(backend) -> int:
    """Bytes of the evaluation keys: the automorphism keys (bootstrapping's and the plan's) and the
    relinearization key, each the serialized size of one key-switching key (as bench/bootstrap_bench.py)."""
    import openfhe

    tag = backend.key_tag
    count = len(backend.cc.GetExistingEvalAutomorphismKeyIndices(tag)) + 1
    return count * len(openfhe.SerializeEvalMultKeyString(openfhe.BINARY, tag))


def main() -> None:
    """Train, compile with the level planner, run encrypted (or simulated), print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128, help="test images encrypted (one batch)")
    parser.add_argument("--depth", type=int, default=6, help="levels between bootstraps")
    parser.add_argument("--slots", type=int, default=128)
    parser.add_argument("--simulate", action="store_true", help="einfhe's slot simulator instead of OpenFHE")
    parser.add_argument("--noise", type=float, nargs="*", default=[],
                        help="also print the plaintext model's agreement with this much noise at the bootstraps")
    args = parser.parse_args()
    torch.manual_seed(0)
    Xtr, Xte, ytr, yte = digits_split()
    Xtr, Xte = upsample(Xtr), upsample(Xte)
    start = time.perf_counter()
    net = train(DeepDigitsNet(), Xtr, ytr, epochs=300)
    print(f"trained in {time.perf_counter() - start:.1f} s; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    images, labels = Xte[:args.samples], yte[:args.samples]
    with torch.no_grad():
        float_logits = net(torch.from_numpy(images)).double().numpy()
    layers = einfhe_layers(net)
    X = images.reshape(len(images), -1).astype(np.float64)
    values = layer_inputs(layers, X)
    plain_logits = values[-1]
    model = compile_model(layers, X.shape[1], batch=len(X), slots=args.slots, max_depth=args.depth)
    greedy = compile_model(layers, X.shape[1], batch=len(X), slots=args.slots, max_depth=args.depth,
                           placement="greedy")
    print(model.levels)
    print(f"greedy placement: {greedy.levels.bootstrapped_cts} ciphertexts bootstrapped at "
          f"{len(greedy.levels.bootstrap_before)} point(s), ~{greedy.levels.seconds:.0f} s")
    params = Parameters.derive(args.depth, args.slots, bootstrap=True)
    headroom = bootstrap_headroom(params.scale_bits, params.first_mod_bits)
    for position in model.levels.bootstrap_before:
        print(f"bootstrap before layer {position}: max |value| {np.abs(values[position]).max():.2f} "
              f"(headroom {headroom:.0f})")
    for amplitude in args.noise:
        noisy = noisy_logits(layers, X, model.levels.bootstrap_before, amplitude)
        agree = np.mean(noisy.argmax(1) == plain_logits.argmax(1))
        print(f"noise +-{amplitude:g} at the bootstraps (plaintext): agreement {agree:.4f}, "
              f"max |logit error| {np.abs(noisy - plain_logits).max():.3g}")
    print(f"parameters: {params}; plan depth {model.plan.depth}, {model.plan.bootstraps} bootstrapped ciphertexts")
    stats = einfhe.RunStats()
    if args.simulate:
        start = time.perf_counter()
        out = einfhe.simulate(model.plan, model.pack_input(X), *model.plains, stats=stats)
        run_s = time.perf_counter() - start
    else:
        start = time.perf_counter()
        ctx = einfhe.Context.for_plan(model.plan, params=params)
        keygen_s = time.perf_counter() - start
        key_bytes = _key_bytes(ctx.backend)
        start = time.perf_counter()
        level = model.input_level(params)
        xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout, level=level)
        encrypt_s = time.perf_counter() - start
        start = time.perf_counter()
        ye = einfhe.run(ctx, model.plan, *model.operands(xe), stats=stats, workers=1)
        run_s = time.perf_counter() - start
        out = einfhe.decrypt(ctx, ye)
        print(f"key generation {keygen_s:.1f} s, keys {key_bytes / 2**30:.2f} GiB; encryption of {len(xe.cts)} "
              f"ciphertexts at level {level} of {params.total_depth} {encrypt_s:.1f} s")
    got = model.unpack_output(out)
    float_pred, plain_pred, enc_pred = float_logits.argmax(1), plain_logits.argmax(1), got.argmax(1)
    print(f"run {run_s:.1f} s for {len(X)} images ({1e3 * run_s / len(X):.1f} ms per image); by op: " + ", ".join(
        f"{op} {stats.counts[op]} x = {seconds:.1f} s" for op, seconds in sorted(stats.seconds.items(),
                                                                                key=lambda item: -item[1])))
    print(f"accuracy on {len(X)} test images: float {np.mean(float_pred == labels):.4f}, plaintext "
          f"{np.mean(plain_pred == labels):.4f}, encrypted {np.mean(enc_pred == labels):.4f}; encrypted agrees "
          f"with plaintext on {np.mean(enc_pred == plain_pred):.4f}; max |logit error| "
          f"{np.abs(got - plain_logits).max():.3e} (logits up to {np.abs(plain_logits).max():.1f})")


if __name__ == "__main__":
    main()
