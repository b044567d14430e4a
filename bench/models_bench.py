"""Encrypted inference of small quantized models at 128-bit, against their float form and TenSEAL.

    PYTHONPATH=. .venv/bin/python bench/models_bench.py [--tenseal-samples 10] [--repeats 3] [--models mlp,cnn,cancer,resnet]

For each model (digits MLP 64-32-10 and a small digits CNN, both with square activations, and a
breast-cancer MLP 30-16-2; trained here in seconds with torch on scikit-learn's bundled data), it prints:
float / 4-bit plaintext / encrypted accuracy on the whole test split, agreement of the encrypted predictions
with the 4-bit plaintext model, and the levels, ring and evaluation time of the float-weight program and the
quantized program, both batched (samples in the slots), all measured in the same run. For the digits MLP it
also prints the single-sample latency and the same MLP run the way TenSEAL's tutorials do (one CKKSVector per
sample, `mm`, `square`), for the ratio. `resnet` is bench/digits_resnet.py's ResNet-style CNN (BatchNorm, a skip
connection) taken through quant's artifact: quant.export, plaintext by quant.load_artifact, encrypted from
einfhe's reader of the same files.

    .venv/bin/python bench/models_bench.py --one-sample [--repeats 7]

times the digits MLP's single sample five ways in interleaved rounds: `compile_model(..., batch=1)` as main
compiled it before issue 23 (the batched packing: 64 ciphertexts in), main's one-sample program (unlifted,
every plaintext encoded on every run), and `compile_model(..., batch=1)` now (the one-sample program, lifted
encryption, plaintexts encoded once per backend), the same with `rescale="late"`, and with `input_bound=1.0` (the
features' range declared, so the default ring choice is `slots="auto"`: the quadratic form of the input's
monomials at depth 1, N=2^13), with each one's error
against the float64 evaluation of the same weights and the 4-bit plaintext logits, and its upload bytes.
`--orion PYTHON` adds Orion (bench/orion_peer.py, its own venv) on the same weights in the same rounds.
"""

from __future__ import annotations

import einfhe  # first: openfhe's libgomp before torch's

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import quant
from bench.digits_resnet import DigitsResNet, digits_split, train
from einfhe.compiler import load_artifact_model
from einfhe.compiler.layers import Square
from einfhe.compiler.model import IntLinear, Linear, Residual, _compile_program, compile_model


def _data(name: str):
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        X = X / 16.0
    else:
        X, y = load_breast_cancer(return_X_y=True)
        X = (X - X.mean(0)) / X.std(0) / 4
    return train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)


def _model(kind: str, n_features: int, n_classes: int) -> nn.Sequential:
    if kind == "cnn":
        return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1), quant.Square(),
                             nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, n_classes))
    hidden = 32 if n_features == 64 else 16
    return nn.Sequential(nn.Linear(n_features, hidden), quant.Square(), nn.Linear(hidden, n_classes))


def _train(net: nn.Module, X, y, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    X, y = torch.tensor(X), torch.tensor(y)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    return net


def _float_layers(layers):
    return [Linear(layer.weight, layer.bias) if isinstance(layer, IntLinear)
            else Residual(tuple(_float_layers(layer.layers))) if isinstance(layer, Residual) else layer
            for layer in layers]


def _encrypted(layers, n_features, X, repeats):
    model = compile_model(layers, n_features, batch=len(X))
    ctx = einfhe.Context.for_plan(model.plan)
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ye = einfhe.run(ctx, model.plan, *model.operands(xe))
        times.append(time.perf_counter() - start)
    return model, ctx, statistics.median(times), model.unpack_output(einfhe.decrypt(ctx, ye))


def _tenseal_latency(layers, X, samples):
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 16384, coeff_mod_bit_sizes=[60, 40, 40, 40, 60])
    ctx.global_scale = 2**40
    ctx.generate_galois_keys()
    (W1, b1), (W2, b2) = [(layer.weight, layer.bias) for layer in layers if isinstance(layer, Linear)]
    times, outs = [], []
    for x in X[:samples]:
        enc = ts.ckks_vector(ctx, x.tolist())
        start = time.perf_counter()
        h = enc.mm(W1.T.tolist()) + b1.tolist()
        h.square_()
        out = h.mm(W2.T.tolist()) + b2.tolist()
        times.append(time.perf_counter() - start)
        outs.append(out.decrypt())
    return statistics.median(times), np.array(outs)


def _float64_logits(layers, x: np.ndarray) -> np.ndarray:
    """The MLP (Linear and Square layers, the 4-bit weights dequantized) evaluated in float64: the reference the
    encrypted programs' errors are measured against (the float32 plaintext logits floor them near 1e-5)."""
    for layer in _float_layers(layers):
        x = x ** 2 if isinstance(layer, Square) else np.asarray(layer.weight) @ x + (
            0 if layer.bias is None else np.asarray(layer.bias))
    return x


def _orion_peer(layers, x, python: str | None):
    """Orion on the same MLP (its 4-bit weights dequantized: Linear, square, Linear), or None."""
    if not python:
        return None
    from bench.orion_peer import start_peer

    return start_peer(python, [(layer.weight, layer.bias) for layer in _float_layers(layers)
                               if isinstance(layer, Linear)], x)


def _one_sample_ways(layers, n_features, x, logits, rounds: int, orion_python: str | None = None) -> None:
    """Main's batch=1 (batched packing), main's one-sample program, batch=1 now and Orion, in interleaved rounds;
    errors against the float64 evaluation of the same weights (and, as before, the 4-bit plaintext logits)."""
    exact = _float64_logits(layers, x)
    main_options = dict(slots=8192, max_cts=1 << 16, max_depth=None, placement="cost", ring_dim=65536)
    ways = {
        "main, batch=1 (batched packing)": (_compile_program(layers, n_features, 1, **main_options), "main"),
        "main, one-sample program": (_compile_program(layers, n_features, None, **main_options), "main"),
        "now, batch=1": (compile_model(layers, n_features, batch=1), "now"),
        "now, batch=1, rescale='late'": (compile_model(layers, n_features, batch=1, rescale="late"), "now"),
        # the features lie in [0, 1]: declared, the default ring choice prices N=2^13 too (slots="auto"), where the
        # quadratic form of the monomials runs at depth 1
        "now, batch=1, input_bound=1.0": (compile_model(layers, n_features, batch=1, input_bound=1.0), "now"),
    }
    ready = {}
    for label, (model, way) in ways.items():
        if way == "now":
            ctx = einfhe.Context.for_plan(model.plan)
        else:  # main before issue 23: unlifted parameters, every plaintext encoded on every run
            ctx = einfhe.Context.for_plan(model.plan, params=einfhe.Parameters.derive(model.plan.depth, model.plan.slots))
            ctx.backend.plaintexts.max_bytes = 0
        xe = einfhe.encrypt(ctx, model.pack_input(x[None, :] if model.batch else x), model.input_layout)
        ready[label] = (model, ctx, xe, [])
    peer, orion_ms = _orion_peer(layers, x, orion_python), []
    for _ in range(rounds):
        for model, ctx, xe, times in ready.values():
            start = time.perf_counter()
            einfhe.run(ctx, model.plan, *model.operands(xe), workers=1)
            times.append(time.perf_counter() - start)
        if peer is not None:
            orion_ms.append(peer.run_ms())
    base = statistics.median(ready["main, one-sample program"][3])
    for label, (model, ctx, xe, times) in ready.items():
        out = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe), workers=1)))
        error = float(np.abs(np.reshape(out, -1) - logits).max())
        error64 = float(np.abs(np.reshape(out, -1) - exact).max())
        upload = sum(len(ctx.backend.serialize_ciphertext(ct)) for ct in xe.cts)
        print(f"  {label:34s} {model.plan.strategy:20s} N={ctx.params.ring_dim} depth {model.plan.depth}  {1e3 * statistics.median(times):7.1f} ms "
              f"(first {1e3 * times[0]:.1f})  x{base / statistics.median(times):.2f} vs main's one-sample  "
              f"max |error| vs float64 {error64:.1e}, vs 4-bit logits {error:.1e}  upload {upload / 2**20:.2f} MiB "
              f"({len(xe.cts)} ct)")
    if peer is not None:
        got = peer.result()[:logits.size]
        error, error64 = float(np.abs(got - logits).max()), float(np.abs(got - exact).max())
        peer.close()
        orion = statistics.median(orion_ms)
        now = statistics.median(ready["now, batch=1, input_bound=1.0"][3])
        print(f"  {'Orion (N=2^13 conjugate-invariant)':32s} {orion:7.1f} ms (first {orion_ms[0]:.1f})  "
              f"Orion / now (input_bound=1.0) x{orion / (1e3 * now):.2f}  max |error| vs float64 {error64:.1e}, vs 4-bit logits {error:.1e}")


def run(name: str, kind: str, args) -> None:
    """Train, quantize, compile and run one model; print one block of figures."""
    Xtr, Xte, ytr, yte = _data(name)
    n_classes = int(ytr.max()) + 1
    net = _train(_model(kind, Xtr.shape[1], n_classes), Xtr, ytr)
    with torch.no_grad():
        float_acc = (net(torch.tensor(Xte)).argmax(1).numpy() == yte).mean()
    body = nn.Sequential(*list(net)[1:]) if kind == "cnn" else net
    images = Xte.reshape(-1, 1, 8, 8) if kind == "cnn" else Xte
    calibration = torch.tensor(Xtr.reshape((-1,) + images.shape[1:]))
    # group 64 keeps an MLP's first layer one group per row (integer under encryption); the CNN's 4-bit layer is
    # its last, which runs with float scales anyway, so it takes the finer groups (64 loses 1.7 points there)
    quant.quantize_(body, quant.W4A16(32 if kind == "cnn" else 64), calibration=[calibration], recipe="awq")
    with tempfile.TemporaryDirectory() as tmp:
        quant.export_integer_model(body, tmp, example_input=calibration)
        layers, n_features = einfhe.load_integer_model(tmp)
        quantized_plain = quant.run_integer_model(quant.read_integer_model(tmp), images)
    q_acc = (quantized_plain.argmax(1) == yte).mean()
    print(f"\n=== {name} {kind}: {len(Xtr)} train / {len(Xte)} test samples; float accuracy {float_acc:.4f}, "
          f"4-bit plaintext {q_acc:.4f}")
    if args.one_sample:
        _one_sample_ways(layers, n_features, Xte[0].astype(np.float64), quantized_plain[0], max(5, args.repeats),
                         args.orion)
        return
    for label, program in (("float weights", _float_layers(layers)), ("4-bit integer", layers)):
        model, ctx, seconds, out = _encrypted(program, n_features, Xte, args.repeats)
        enc_acc = (out.argmax(1) == yte).mean()
        agree = (out.argmax(1) == quantized_plain.argmax(1)).mean()
        print(f"  {label:14s} depth {model.plan.depth}  N={ctx.params.ring_dim}  towers {model.plan.depth + 1}  "
              f"{seconds:.2f} s per batch: {len(Xte)} samples here = {len(Xte) / seconds:.0f} samples/s, a full batch of "
              f"{ctx.slots} = {ctx.slots / seconds:.0f} samples/s)  encrypted accuracy {enc_acc:.4f}  agreement with 4-bit plaintext {agree:.4f}  "
              f"rotation keys {len(model.plan.rotations)}")
    if name == "digits" and kind == "mlp":
        single = compile_model(layers, n_features)
        ctx = einfhe.Context.for_plan(single.plan)
        xe = einfhe.encrypt(ctx, single.pack_input(Xte[0]), single.input_layout)
        times = []
        for _ in range(max(3, args.repeats)):
            start = time.perf_counter()
            einfhe.run(ctx, single.plan, *single.operands(xe))
            times.append(time.perf_counter() - start)
        ours = statistics.median(times)
        print(f"  single sample (4-bit, iteration space): {ours * 1e3:.1f} ms, depth {single.plan.depth}, "
              f"{len(single.plan.rotations)} rotation keys")
        if args.tenseal_samples:
            tenseal_s, outs = _tenseal_latency(_float_layers(layers), Xte, args.tenseal_samples)
            agree = (outs.argmax(1) == quantized_plain[: len(outs)].argmax(1)).mean()
            print(f"  TenSEAL (tutorial style, N=16384, float weights): {tenseal_s * 1e3:.0f} ms/sample over "
                  f"{len(outs)} samples (agreement {agree:.2f}); ratio TenSEAL/einfhe single-sample "
                  f"{tenseal_s / ours:.1f}x")


def run_resnet(args) -> None:
    """The digits ResNet (BatchNorm, a skip connection) through quant's artifact: trained, quantized (head W4A16),
    exported with quant.export, run in plaintext by quant.load_artifact (QuantLinear) and encrypted from einfhe's
    reading of the same files; float-weight and integer programs timed side by side."""
    Xtr, Xte, ytr, yte = digits_split()
    torch.manual_seed(0)
    start = time.perf_counter()
    net = train(DigitsResNet(), Xtr, ytr)
    trained = time.perf_counter() - start
    with torch.no_grad():
        float_acc = (net(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean()
        quant.quantize_(net, quant.W4A16(group_size=64))
        quantized = net(torch.from_numpy(Xte)).argmax(1).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        quant.export(net, torch.from_numpy(Xtr[:256]), tmp)
        with torch.no_grad():
            plain = quant.load_artifact(tmp)(torch.from_numpy(Xte)).argmax(1).numpy()
        layers, n_features = load_artifact_model(tmp)
    flat = Xte.reshape(len(Xte), -1)
    print(f"\n=== digits resnet (artifact): trained in {trained:.1f} s; float accuracy {float_acc:.4f}, quantized torch "
          f"{(quantized == yte).mean():.4f}, artifact plaintext {(plain == yte).mean():.4f} (agreement with the "
          f"quantized torch model {(plain == quantized).mean():.4f})")
    for label, program in (("float weights", _float_layers(layers)), ("4-bit integer", layers)):
        model, ctx, seconds, out = _encrypted(program, n_features, flat, args.repeats)
        pred = out.argmax(1)
        print(f"  {label:14s} depth {model.plan.depth}  N={ctx.params.ring_dim}  {len(model.plan.steps)} steps  "
              f"{seconds:.2f} s per batch of {len(flat)}  encrypted accuracy {(pred == yte).mean():.4f}  "
              f"agreement with the quantized torch model {(pred == quantized).mean():.4f}")


def main() -> None:
    """Run every model and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tenseal-samples", type=int, default=10, help="0 skips the TenSEAL baseline")
    parser.add_argument("--one-sample", action="store_true", help="the digits MLP's single sample, three ways, only")
    parser.add_argument("--orion", metavar="PYTHON", help="with --one-sample: Orion's interpreter (bench/orion_peer.py)")
    parser.add_argument("--models", default="mlp,cnn,cancer,resnet", help="comma-separated subset to run")
    args = parser.parse_args()
    chosen = "mlp" if args.one_sample else args.models
    for key, (name, kind) in (("mlp", ("digits", "mlp")), ("cnn", ("digits", "cnn")),
                              ("cancer", ("breast_cancer", "mlp"))):
        if key in chosen.split(","):
            run(name, kind, args)
    if "resnet" in chosen.split(","):
        run_resnet(args)


if __name__ == "__main__":
    main()
