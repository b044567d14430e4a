"""Orion (PyPI orion-fhe, Lattigo) as a benchmark peer, in an interpreter of its own, driven over a pipe.

Orion 1.0.2 ships a CPython 3.11 wheel only, with its own torch, so it lives in a venv of its own (the `bench`
extra's instructions in pyproject.toml and README.md):

    ~/.pyenv/versions/3.11.7/bin/python -m venv /path/to/orion-venv
    /path/to/orion-venv/bin/pip install orion-fhe==1.0.2

The benchmarks (`einsum_bench.py --ring-choice`, `models_bench.py --one-sample`) take `--orion
/path/to/orion-venv/bin/python`, start this file under that interpreter with `OrionPeer`, and time one Orion
run per round beside einfhe's, so both are measured in the same interleaved rounds. The peer runs a chain of
`orion.nn.Linear` layers (square activations between them) on one sample, at ring 2^13 in Orion's
conjugate-invariant ring (8,192 real slots), its modulus chain sized by `orion_config` within log2(QP) <= 218
(128-bit by the HomomorphicEncryption.org table; a one-layer matvec gets [55, 40] and a 61-bit special prime),
one thread (OMP_NUM_THREADS=1, GOMAXPROCS=1). Protocol: after setup the peer prints `ready`; each `run` line is
answered with the milliseconds of one `net(ciphertext)`, `result` with the decrypted output as JSON; end of input
ends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

MAX_LOG_QP = 218  # log2(QP) at N=2^13 for 128-bit (HomomorphicEncryption.org standard, ternary secret)


def orion_config(depth: int) -> dict:
    """Orion's scheme configuration for a program of `depth` levels at ring 2^13, 128-bit.

    The scale is the largest (at most 40 bits) that leaves a first modulus 15 bits above it (values up to 2^14)
    and a special prime 5 bits above that within log2(QP) <= 218: a special prime below the digits (a 43-bit P
    under 55-bit digits, the 2^40-scale chain at depth 3) costs Orion most of its precision in key switching.
    """
    scale = min(40, (MAX_LOG_QP - 35) // (depth + 2))
    log_q = [scale + 15] + [scale] * depth
    log_p = min(61, MAX_LOG_QP - sum(log_q))
    return {"ckks_params": {"LogN": 13, "LogQ": log_q, "LogP": [log_p], "LogScale": scale, "H": 8192,
                            "RingType": "ConjugateInvariant"},
            "orion": {"margin": 2, "embedding_method": "hybrid", "backend": "lattigo", "fuse_modules": True,
                      "debug": False, "io_mode": "none"}}


class OrionPeer:
    """One Orion program in a child interpreter: set up at construction, then timed one run at a time."""

    def __init__(self, python: str, layers: list[tuple[np.ndarray, np.ndarray | None]], x: np.ndarray):
        """Start `python` on this file with `layers` ((weight, bias or None) each, square between) and input `x`."""
        self._dir = tempfile.TemporaryDirectory()
        problem = os.path.join(self._dir.name, "problem.npz")
        arrays = {"x": np.asarray(x, np.float32)}
        for i, (weight, bias) in enumerate(layers):
            arrays[f"w{i}"] = np.asarray(weight, np.float32)
            if bias is not None:
                arrays[f"b{i}"] = np.asarray(bias, np.float32)
        np.savez(problem, **arrays)
        env = dict(os.environ, OMP_NUM_THREADS="1", GOMAXPROCS="1", PYTHONPATH="")
        self._proc = subprocess.Popen([python, os.path.abspath(__file__), problem], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        if self._proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"Orion did not start under {python}")

    def _ask(self, line: str) -> str:
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        return self._proc.stdout.readline()

    def run_ms(self) -> float:
        """Milliseconds of one encrypted forward pass (the server's work: no encryption or decryption)."""
        return float(self._ask("run"))

    def result(self) -> np.ndarray:
        """The decrypted output of the last run."""
        return np.array(json.loads(self._ask("result")))

    def close(self) -> None:
        """End the child interpreter."""
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._dir.cleanup()


def start_peer(python: str | None, layers, x) -> OrionPeer | None:
    """An OrionPeer, or None (with the reason printed) when no Orion interpreter is given or it fails to start."""
    if not python:
        return None
    try:
        return OrionPeer(python, layers, x)
    except (OSError, RuntimeError) as exc:
        print(f"# Orion not measured: {exc}")
        return None


def _serve(problem_path: str) -> None:
    """The child side: build the Orion network, answer `run` and `result` lines."""
    import time

    import orion
    import orion.nn as on
    import torch

    problem = np.load(problem_path)
    count = sum(1 for key in problem.files if key.startswith("w"))

    class Chain(on.Module):
        def __init__(self):
            super().__init__()
            self.fcs = torch.nn.ModuleList()
            for i in range(count):
                out_features, in_features = problem[f"w{i}"].shape
                fc = on.Linear(in_features, out_features, bias=f"b{i}" in problem.files)
                with torch.no_grad():
                    fc.weight.copy_(torch.tensor(problem[f"w{i}"]))
                    if f"b{i}" in problem.files:
                        fc.bias.copy_(torch.tensor(problem[f"b{i}"]))
                self.fcs.append(fc)
            self.acts = torch.nn.ModuleList(on.Quad() for _ in range(count - 1))

        def forward(self, x):
            for i, fc in enumerate(self.fcs):
                x = fc(x) if i == 0 else fc(self.acts[i - 1](x))
            return x

    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        orion.init_scheme(orion_config(2 * count - 1))
        net = Chain()
        net.eval()
        x = torch.tensor(problem["x"])[None, :]
        orion.fit(net, x)
        level = orion.compile(net)
        ciphertext = orion.encrypt(orion.encode(x, level))
        net.he()
    print("ready", file=out, flush=True)
    result = None
    for line in sys.stdin:
        if line.strip() == "run":
            start = time.perf_counter()
            result = net(ciphertext)
            print(1e3 * (time.perf_counter() - start), file=out, flush=True)
        elif line.strip() == "result":
            values = result.decrypt().decode().double().numpy().reshape(-1)
            print(json.dumps(values.tolist()), file=out, flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1])
