"""Constants and builders for client tests: test tenants, the insecure test ring, a hand-written integer model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import einfhe
from einfhe.params.precision import error_bound

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab", "operator": "operator-token-012345678"}
SLOTS = 32
TEST_PARAMS = einfhe.Parameters.insecure_for_tests(2, SLOTS)


def _linear_entry(index: int, name: str, n_in: int, n_out: int) -> dict:
    keys = ("weight", "scale", "zero", "bias")
    return {"op": "linear", "name": name, "in_features": n_in, "out_features": n_out, "group_size": n_in,
            "weight_bits": 4, "activation": {"bits": 16, "scheme": "float", "outlier_bits": None, "range": None},
            "arrays": {**{k: f"layers.{index}.{k}" for k in keys}, "input_scale": None}}


def write_integer_model(directory: Path, rng: np.random.Generator, sizes=(8, 4, 3), act: str = "square") -> list:
    """Write a Linear-act-Linear model in quant's integer format (4-bit codes, zero points, one scale per row).

    Returns the real float64 weights and biases [(W1, b1), (W2, b2)] for the numpy reference; the file is written
    here by hand from the format's documentation, independently of quant's exporter and einfhe's reader.
    """
    directory.mkdir(parents=True, exist_ok=True)
    arrays, layers, real = {}, [], []
    for index, (n_in, n_out) in zip((0, 2), zip(sizes, sizes[1:])):
        codes = rng.integers(0, 16, (n_out, n_in)).astype(np.int8)
        zero = rng.integers(6, 10, (n_out, 1)).astype(np.int8)
        scale = rng.uniform(0.02, 0.1, (n_out, 1)).astype(np.float32)
        bias = rng.uniform(-0.5, 0.5, n_out).astype(np.float32)
        arrays.update({f"layers.{index}.weight": codes, f"layers.{index}.scale": scale,
                       f"layers.{index}.zero": zero, f"layers.{index}.bias": bias})
        real.append(((codes.astype(np.float64) - zero) * scale.astype(np.float64), bias.astype(np.float64)))
        layers.append(_linear_entry(index, f"fc{index}", n_in, n_out))
    layers.insert(1, {"op": "act", "fn": act, "name": "act", "range": None})
    np.savez(directory / "model.npz", **arrays)
    manifest = {"format": "einfhe.intmodel", "version": 1, "input_shape": [sizes[0]], "layers": layers}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return real


def reference(real: list, x: np.ndarray) -> np.ndarray:
    """The model in float64 numpy: (x W1^T + b1)^2 W2^T + b2."""
    (W1, b1), (W2, b2) = real
    return ((x @ W1.T + b1) ** 2) @ W2.T + b2


def model_tolerance(params: einfhe.Parameters, real: list, x: np.ndarray, keyswitches: int) -> float:
    """A bound on the encrypted model's error: CKKS errors of each layer (einfhe.params.precision.error_bound), carried
    through the square (|2he + e^2|) and the second layer's weights (row sums of |W2|)."""
    (W1, b1), (W2, b2) = real
    h = np.abs(x @ W1.T + b1).max()
    e1 = error_bound(params, float(np.abs(W1).max() * np.abs(x).max()), W1.shape[1], 1, keyswitches)
    e2 = 2 * h * e1 + e1 ** 2 + error_bound(params, float(h * h), 1, 2, keyswitches)
    e3 = np.abs(W2).sum(axis=1).max() * e2 + error_bound(params, float(np.abs(W2).max() * h * h), W2.shape[1], 3,
                                                         keyswitches)
    return float(e3)
