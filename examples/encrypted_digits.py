"""`make demo`, the service part: a quantized digits classifier served encrypted, end to end on this machine.

    .venv/bin/python examples/encrypted_digits.py

Trains a 64-32-10 MLP with a square activation on scikit-learn's bundled digits (seconds, torch), quantizes it
to 4-bit weights (quant, W4A16 with AWQ), exports its integers, starts the service on a loopback port with a
temporary data directory, registers the model as the operator, then, as a tenant, runs the whole test split
encrypted (one batched request: samples in the slots) and in plaintext, plus single-sample encrypted requests,
and prints accuracy (float / 4-bit plaintext / encrypted), latency and the bytes moved. Parameters are 128-bit.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe's libgomp before torch's

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import quant
from client import Client, EncryptedModel

from server import LocalServer, Settings

__all__ = ["main", "train_digits_mlp"]

OPERATOR, TENANT = "operator-token-0123456789", "tenant-token-0123456789"
SINGLE_SAMPLES = 5


def train_digits_mlp(seed: int = 0, epochs: int = 300):
    """Train the float MLP; return it and the (train, test) split of the digits, pixels scaled to [0, 1]."""
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split((X / 16.0).astype(np.float32), y, test_size=0.3, random_state=0,
                                          stratify=y)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 32), quant.Square(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    inputs, labels = torch.tensor(Xtr), torch.tensor(ytr)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(net(inputs), labels).backward()
        opt.step()
    return net, (Xtr, ytr), (Xte, yte)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _traffic(http) -> tuple[int, int]:
    return http.bytes_sent, http.bytes_received


def main() -> int:
    """Run the demo; exit status 1 when encrypted predictions disagree with the 4-bit plaintext ones on >1%."""
    start = time.perf_counter()
    net, (Xtr, ytr), (Xte, yte) = train_digits_mlp()
    with torch.no_grad():
        float_acc = float((net(torch.tensor(Xte)).argmax(1).numpy() == yte).mean())
    quant.quantize_(net, quant.W4A16(64), calibration=[torch.tensor(Xtr)], recipe="awq")
    print(f"digits: {len(Xtr)} train / {len(Xte)} test images; MLP 64-32-10 (square activation) trained and "
          f"quantized to 4-bit weights in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        export = quant.export_integer_model(net, Path(tmp) / "digits", example_input=torch.tensor(Xtr))
        tokens = Path(tmp) / "tokens.txt"
        tokens.write_text(f"operator:{OPERATOR}\ntenant:{TENANT}\n")
        settings = Settings(data_dir=Path(tmp) / "data", token_file=tokens, workers=2)
        with LocalServer(settings) as url:
            print(f"server on {url} (data in a temporary directory)")
            with Client(url, OPERATOR, progress=False) as operator:
                t0 = time.perf_counter()
                info = operator.register_model("digits", export)
            single, batch = info["programs"]["single"], info["programs"]["batch"]
            print(f"registered 'digits' in {time.perf_counter() - t0:.2f} s\n"
                  f"  single-sample program: {einfhe.Parameters.from_json(single['params'])}\n"
                  f"    {len(single['rotations'])} rotation keys, {single['cts_in']} ciphertext in\n"
                  f"  batched program: {einfhe.Parameters.from_json(batch['params'])}\n"
                  f"    up to {batch['batch']} samples, {len(batch['rotations'])} rotation keys, "
                  f"{batch['cts_in']} ciphertexts in")
            with EncryptedModel(url, "digits", token=TENANT, progress=False) as model:
                http = model.client.http
                t0 = time.perf_counter()
                model.prepare()
                print(f"keys for both programs generated here, evaluation keys uploaded ({_mib(http.bytes_sent)}, "
                      f"fetching the requirements included): {time.perf_counter() - t0:.2f} s")
                first = model.infer(Xte[0])
                times, moved = [], []
                for x in Xte[1:1 + SINGLE_SAMPLES]:
                    t0, before = time.perf_counter(), _traffic(http)
                    model.infer(x)
                    times.append(time.perf_counter() - t0)
                    moved.append([a - b for a, b in zip(_traffic(http), before)])
                up, down = np.median(moved, axis=0)
                print(f"encrypted, one sample: median {statistics.median(times) * 1e3:.0f} ms per request "
                      f"(encrypt, upload {_mib(up)}, run, download {_mib(down)}, decrypt)")
                t0, before = time.perf_counter(), _traffic(http)
                encrypted = model.infer(Xte)
                batch_s = time.perf_counter() - t0
                up, down = [a - b for a, b in zip(_traffic(http), before)]
                print(f"encrypted, whole test split in one batch: {batch_s:.2f} s for {len(Xte)} samples "
                      f"({len(Xte) / batch_s:.0f} samples/s; upload {_mib(up)}, download {_mib(down)})")
                t0, before = time.perf_counter(), _traffic(http)
                plain = model.infer(Xte, encrypted=False)
                up, down = [a - b for a, b in zip(_traffic(http), before)]
                print(f"plaintext, whole test split: {(time.perf_counter() - t0) * 1e3:.0f} ms "
                      f"(upload {up / 1024:.0f} KiB, download {down / 1024:.0f} KiB)")
    quant_acc = float((plain.argmax(1) == yte).mean())
    enc_acc = float((encrypted.argmax(1) == yte).mean())
    agree = float((encrypted.argmax(1) == plain.argmax(1)).mean())
    error = float(np.abs(encrypted - plain).max())
    print(f"\naccuracy on {len(Xte)} test images: float {float_acc:.4f}, 4-bit plaintext {quant_acc:.4f}, "
          f"encrypted {enc_acc:.4f}\nencrypted vs plaintext: predictions agree on {agree:.4f}, max |logit "
          f"difference| {error:.1e}; single-sample check {np.abs(first - plain[0]).max():.1e}")
    print(f"demo took {time.perf_counter() - start:.1f} s")
    return 0 if agree >= 0.99 else 1


if __name__ == "__main__":
    raise SystemExit(main())
