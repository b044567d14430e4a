"""Every linear format of quant runs encrypted from the artifact: its weights exactly as quantized (integer codes
with deferred row scales where one scale spans a row), its activations unrounded."""

import numpy as np
import pytest
import torch
from torch import nn

import einfhe
import quant
from einfhe.compiler import IntLinear, Linear, load_artifact_model
from einfhe.compiler.model import compile_model
from quant.activations import Square

B = 16

# (format, the layer einfhe keeps, the largest activation code the plaintext run rounds to: None for A16; for
# W4A4's outlier channels (int8) and FMPQ's 8-bit groups the int4 bound 7 is the coarser, so it bounds them too)
FORMATS = [
    (quant.W4A16(group_size=64), IntLinear, None), (quant.W4A16(group_size=32), Linear, None),
    (quant.W4A8(group_size=32), IntLinear, 127), (quant.W4A4(group_size=64, outliers=0), IntLinear, 7),
    (quant.W4A4(group_size=32, outliers=4), Linear, 7), (quant.W8A8(), IntLinear, 127),
    (quant.W6A6(), IntLinear, 31), (quant.FMPQ(group_size=64), IntLinear, 7), (quant.FMPQ(group_size=32), Linear, 7),
]


def _rounding_bound(x, w0, b0, w2, qmax):
    """How far per-token activation rounding (round to nearest, step |row|max / qmax) can move the output."""
    if qmax is None:
        return 0.0
    h = x @ w0.T + b0
    dh = (np.abs(x).max(1, keepdims=True) / qmax / 2) * np.abs(w0).sum(1)[None, :]
    squared = (np.abs(h) + dh) ** 2
    d_in = 2 * np.abs(h) * dh + dh ** 2 + squared.max(1, keepdims=True) / qmax / 2
    return d_in @ np.abs(w2).T


@pytest.mark.parametrize("config, kind, qmax", FORMATS,
                         ids=lambda v: repr(v) if not isinstance(v, (type, int, type(None))) else None)
def test_each_format_computes_its_quantized_weights_on_exact_activations(config, kind, qmax, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), Square(), nn.Linear(32, 5))
    X = torch.rand(B, 64) * 2 - 1
    quant.quantize_(model, config, calibration=[X])
    quant.export(model, X, tmp_path)
    layers, n_features = load_artifact_model(tmp_path)
    assert isinstance(layers[0], kind)
    # the reference: torch's own dequantized weights (QuantLayer.weight, smoothing folded in) on float activations
    with torch.no_grad():
        w0, w2 = (model[i].weight.double().numpy() for i in (0, 2))
        b0, b2 = (model[i].bias.double().numpy() for i in (0, 2))
        x = X.double().numpy()
        expected = ((x @ w0.T + b0) ** 2) @ w2.T + b2
        quantized = model(X).double().numpy()
    program = compile_model(layers, n_features, batch=B, slots=B)
    got = program.unpack_output(einfhe.simulate(program.plan, program.pack_input(x), *program.plains))
    # torch's dequantized weights are float32 products (each within 2^-24 relative of the exact code * scale that
    # einfhe multiplies by): that rounding carried through the layer, the square and the head bounds the gap
    eps, h = 2.0 ** -24, x @ w0.T + b0
    dh = eps * (np.abs(x) @ np.abs(w0).T)
    bound = (2 * np.abs(h) * dh + dh ** 2) @ np.abs(w2).T + eps * (h ** 2) @ np.abs(w2).T
    assert np.all(np.abs(got - expected) <= 2 * bound + 1e-12)
    # the plaintext run also rounds its activations per token; the encrypted one does not: they differ by at most
    # what that rounding can move the output (plus the float32 weights' rounding)
    assert np.all(np.abs(got - quantized) <= _rounding_bound(x, w0, b0, w2, qmax) + 2 * bound + 1e-6)
