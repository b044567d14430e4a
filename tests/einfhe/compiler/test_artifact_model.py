"""quant's model artifact read by einfhe with numpy: skip connections as Residual, the encrypted program computing
what the artifact computes in plaintext, ops with no encrypted form named."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import einfhe
import quant
from bench.digits_resnet import export_quantized
from einfhe.compiler import encrypted_blockers, load_artifact_model, read_artifact_graph
from einfhe.compiler.model import IntLinear, Residual, Square, compile_model

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits ResNet trained (a few seconds), then quantized (head W4A16) and exported; float and quantized
    predictions on the test split."""
    directory = tmp_path_factory.mktemp("resnet")
    made = export_quantized(directory)
    with torch.no_grad():
        plain = quant.load_artifact(directory)(torch.from_numpy(made["images"])).double().numpy()
    return {"dir": directory, "Xte": made["X"], "yte": made["y"], "float": made["float"], "quant": made["quant"],
            "plain": plain}


def test_the_skip_connection_becomes_a_residual_of_integer_layers(digits):
    layers, n_features = load_artifact_model(digits["dir"])
    assert n_features == 64
    assert [type(layer) for layer in layers] == [IntLinear, Square, Residual, Square, IntLinear, IntLinear]
    assert [type(layer) for layer in layers[2].layers] == [IntLinear, Square, IntLinear]


def test_the_batched_program_computes_the_plaintext_artifact_on_the_simulator(digits):
    layers, n_features = load_artifact_model(digits["dir"])
    X = digits["Xte"][:64]
    model = compile_model(layers, n_features, batch=64, slots=64)
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X), *model.plains))
    # the simulator is exact in float64; the artifact's torch run rounds in float32 (eps 6e-8) through six layers
    # of sums of up to 36 terms of outputs up to |y|: 1e-6 of the largest output covers it with room
    np.testing.assert_allclose(got, digits["plain"][:64], rtol=0, atol=1e-6 * np.abs(digits["plain"]).max() * 36)


@pytest.mark.fhe
def test_digits_resnet_encrypted_agrees_with_the_quantized_model(digits):
    layers, n_features = load_artifact_model(digits["dir"])
    X, yte = digits["Xte"], digits["yte"]
    model = compile_model(layers, n_features, batch=len(X), slots=1024)
    ctx = einfhe.Context.for_plan(model.plan, params=einfhe.Parameters.insecure_for_tests(model.plan.depth, 1024))
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
    encrypted = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe)))).argmax(1)
    plain = digits["plain"].argmax(1)
    assert (plain == digits["quant"]).mean() >= 0.99 and (encrypted == digits["quant"]).mean() >= 0.99
    assert (encrypted == yte).mean() >= (digits["float"] == yte).mean() - 0.01


def test_ops_with_no_encrypted_form_are_named(tmp_path):
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 4), nn.Softmax(-1))
    quant.export(model, torch.randn(4, 8), tmp_path)
    graph, _ = read_artifact_graph(tmp_path)
    assert encrypted_blockers(graph) == ["1 (layernorm)", "3 (softmax)"]
    with pytest.raises(einfhe.ModelError, match=r"1 \(layernorm\), 3 \(softmax\)"):
        load_artifact_model(tmp_path)


class _TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(6, 4)

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_branches_that_are_not_a_skip_connection_are_refused(tmp_path):
    quant.export(_TwoBranches(), torch.randn(3, 6), tmp_path)
    with pytest.raises(einfhe.ModelError, match="skip connection"):
        load_artifact_model(tmp_path)


def test_a_changed_graph_is_refused(digits, tmp_path):
    for name in ("manifest.json", "graph.json", "weights.safetensors"):
        (tmp_path / name).write_bytes((digits["dir"] / name).read_bytes())
    graph = json.loads((tmp_path / "graph.json").read_text())
    graph["nodes"][0]["attrs"]["stride"] = [2, 2]
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    with pytest.raises(einfhe.ModelError, match="checksum"):
        load_artifact_model(tmp_path)


def test_einfhe_reads_the_artifact_without_torch(digits):
    code = ("import sys, einfhe.compiler as c; layers, n = c.load_artifact_model(sys.argv[1]); "
            "print(n, len(layers), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(digits["dir"])], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, check=True)
    assert done.stdout.split() == ["64", "6", "False"]
