"""A whole encoder as one plan: layers stacked (their bootstraps placed across the stack) and spliced into one plan
that computes the polynomial layers on the simulator; a BERT-style encoder read back from quant's artifact with
numpy computes what quant's artifact module computes; its compiled program computes its polynomial layers."""

import functools

import numpy as np
import pytest

import einfhe
from einfhe.compiler import read_artifact_graph
from einfhe.compiler.transformer import (EncoderWeights, calibrate_encoder, calibrate_layers, compile_encoder,
                                         compile_packed_layer, encoder_chain, encoder_layer, place_bootstraps,
                                         polynomial_encoder, read_encoder_artifact, splice_plan, stack_programs)
from einfhe.errors import ModelError
from einfhe.runtime.magnitudes import value_magnitudes

WIDTH, HEADS, INNER, TOKENS, SLOTS = 16, 2, 32, 8, 256
CONFIG = {"hidden_size": WIDTH, "vocab_size": 40, "max_position_embeddings": 16, "type_vocab_size": 2,
          "layer_norm_eps": 1e-12, "intermediate_size": INNER, "num_attention_heads": HEADS, "num_hidden_layers": 2}


@pytest.fixture(scope="module")
def two_layers():
    """Two layers, each calibrated on what reaches it, and a held-out input."""
    rng = np.random.default_rng(0)
    samples = [rng.normal(size=(TOKENS, WIDTH)) for _ in range(12)]
    layers = []
    for _ in range(2):
        weights = EncoderWeights.random(rng, WIDTH, HEADS, INNER)
        layers.append((weights, calibrate_encoder(weights, samples)))
        samples = [encoder_layer(weights, x) for x in samples]
    return layers, rng.normal(size=(TOKENS, WIDTH)) * 0.9


def _simulated(plan, plains, x):
    params = einfhe.Parameters.insecure_for_tests(plan.depth, SLOTS, bootstrap=plan.bootstraps > 0)
    ctx = einfhe.Context.for_plan(plan, backend="simulator", params=params)
    return einfhe.decrypt(ctx, einfhe.run(ctx, plan, einfhe.encrypt(ctx, x, plan.input_layout(0)), *plains))


def test_a_stack_spliced_into_one_plan_computes_the_polynomial_layers(two_layers):
    layers, x = two_layers
    programs = [compile_packed_layer(w, b, TOKENS, slots=SLOTS) for w, b in layers]
    stacked, level_plan = place_bootstraps(stack_programs(programs), 12, SLOTS)
    plan, plains = splice_plan(stacked, "two layers")
    expected = encoder_layer(layers[1][0], encoder_layer(layers[0][0], x, layers[0][1]), layers[1][1])
    np.testing.assert_allclose(_simulated(plan, plains, x), expected, rtol=1e-9, atol=1e-9)
    # the chain run stage by stage agrees, and the one plan keeps the chain's keys, bootstraps and levels
    ctx = einfhe.Context.for_plan(*stacked.plans, backend="simulator",
                                  params=einfhe.Parameters.insecure_for_tests(stacked.depth, SLOTS, bootstrap=True))
    staged = stacked.run(functools.partial(einfhe.run, ctx), einfhe.encrypt(ctx, x, stacked.input_layout))
    np.testing.assert_allclose(einfhe.decrypt(ctx, staged), expected, rtol=1e-9, atol=1e-9)
    assert set(plan.rotations) == set(stacked.rotation_keys)
    assert plan.bootstraps == sum(p.bootstraps for p in stacked.plans) >= len(level_plan.bootstrap_before) > 0
    assert plan.depth == stacked.depth <= 12 and len(plan.cipher_inputs) == 1
    assert einfhe.Plan.from_json(plan.to_json()) == plan
    # the planner sees the stack whole: one layer's refresh points are not simply doubled
    alone = place_bootstraps(programs[0], 12, SLOTS)[1]
    assert {s.name.split(".")[0] for s in stacked.stages} == {"L0", "L1"}
    assert len(level_plan.bootstrap_before) <= 2 * len(alone.bootstrap_before) + 1


def test_layers_that_do_not_chain_are_refused(two_layers):
    layers, _ = two_layers
    weights, blocks = layers[0]
    wide = compile_packed_layer(weights, blocks, TOKENS, slots=2 * SLOTS)
    with pytest.raises(ModelError, match="input layout must be the layout"):
        stack_programs([compile_packed_layer(weights, blocks, TOKENS, slots=SLOTS), wide])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A tiny BERT (bench/quant_accuracy.py's MiniLM module, two layers, width 16) quantized to W4A16 and exported
    with its example token ids; the artifact module quant loads back; the example."""
    torch = pytest.importorskip("torch")
    import quant
    from bench.quant_accuracy import MiniLM

    torch.manual_seed(0)
    model = MiniLM(CONFIG).eval()
    quant.quantize_(model, quant.W4A16(group_size=32))
    ids = torch.randint(1, CONFIG["vocab_size"], (12, TOKENS), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[::3, 5:] = 0  # some example sentences shorter than the program
    directory = tmp_path_factory.mktemp("bert")
    quant.export(model, (ids, mask), directory, keep_example=True)
    return directory, quant.load_artifact(directory), ids, mask


def _pooled(hidden: np.ndarray, length: int) -> np.ndarray:
    pooled = hidden[:length].mean(axis=0)
    return pooled / np.linalg.norm(pooled)


def test_the_numpy_encoder_computes_what_quants_artifact_module_does(artifact):
    import torch

    directory, module, ids, mask = artifact
    encoder = read_encoder_artifact(*read_artifact_graph(directory))
    assert (len(encoder.layers), encoder.width, encoder.layers[0].heads, encoder.normalize) == (2, WIDTH, HEADS, True)
    np.testing.assert_array_equal(encoder.example, ids.numpy())
    with torch.no_grad():
        expected = module(ids, mask).double().numpy()
    for row in range(len(ids)):
        length = int(mask[row].sum())
        x = encoder.embeddings(ids[row, :length].numpy())
        for weights in encoder.layers:
            x = encoder_layer(weights, x)
        np.testing.assert_allclose(_pooled(x, length), expected[row], atol=1e-5)  # float32 rounding in torch


def test_the_compiled_encoder_computes_its_polynomial_layers(artifact):
    directory, _, ids, _ = artifact
    encoder = read_encoder_artifact(*read_artifact_graph(directory))
    blocks = calibrate_layers(encoder, TOKENS)
    compiled = compile_encoder(encoder, blocks, TOKENS, slots=SLOTS, max_depth=12)
    program = compiled.program
    assert program.batch is None and program.plan.depth <= 12
    assert program.plan.bootstraps >= len(compiled.levels.bootstrap_before) > 0
    # the least depth is the longest stretch no refresh cuts: compiling one level shallower is refused
    least = compile_encoder(encoder, blocks, TOKENS, slots=SLOTS, max_depth=compiled.least_depth).program
    assert least.plan.depth == compiled.least_depth
    with pytest.raises(ModelError, match="raise max_depth"):
        compile_encoder(encoder, blocks, TOKENS, slots=SLOTS, max_depth=compiled.least_depth - 1)
    x = encoder.embeddings(ids[0].numpy())
    np.testing.assert_allclose(_simulated(program.plan, program.plains, x), polynomial_encoder(encoder, blocks, x),
                               rtol=1e-9, atol=1e-9)


def test_refreshed_values_past_the_headroom_are_shrunk_and_the_encoder_still_computes_its_layers(artifact):
    """With the chain's measured magnitudes and a headroom of 1, refreshed values are multiplied by 2^-k before
    their bootstrap and doubled k times after (more plaintext products than without): the same polynomial layers."""
    directory, _, ids, _ = artifact
    encoder = read_encoder_artifact(*read_artifact_graph(directory))
    blocks = calibrate_layers(encoder, TOKENS)
    magnitudes = value_magnitudes(encoder_chain(encoder, blocks, TOKENS, slots=SLOTS), encoder.samples(TOKENS))
    plain = compile_encoder(encoder, blocks, TOKENS, slots=SLOTS, max_depth=12).program
    shrunk = compile_encoder(encoder, blocks, TOKENS, slots=SLOTS, max_depth=12, magnitudes=magnitudes,
                             headroom=1.0).program
    assert shrunk.plan.op_counts()["mul_plain"] > plain.plan.op_counts()["mul_plain"]
    x = encoder.embeddings(ids[1].numpy())
    np.testing.assert_allclose(_simulated(shrunk.plan, shrunk.plains, x), polynomial_encoder(encoder, blocks, x),
                               rtol=1e-9, atol=1e-9)


def test_what_is_no_encoder_is_refused_with_the_reason(artifact, tmp_path):
    import torch

    import quant

    directory, _, ids, mask = artifact
    graph, arrays = read_artifact_graph(directory)
    without = {k: v for k, v in graph.items() if k != "example"}
    with pytest.raises(ModelError, match="keep_example=True"):
        read_encoder_artifact(without, arrays).samples(TOKENS)
    pre_norm = {**graph, "nodes": [n for n in graph["nodes"] if n["op"] != "layernorm" or "output" not in
                                   n.get("module", "") or "attention" not in n["module"]]}
    with pytest.raises(ModelError, match="not a BERT-style encoder"):
        read_encoder_artifact(pre_norm, arrays)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4)).eval()
    quant.export(mlp, torch.randn(4, 8), tmp_path / "mlp")
    with pytest.raises(ModelError, match="integer token ids"):
        read_encoder_artifact(*read_artifact_graph(tmp_path / "mlp"))
