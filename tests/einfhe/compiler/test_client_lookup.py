"""An embedding lookup of the model's input, marked client-side at export, is the client's: the encrypted program
starts from the embeddings, and computes what the artifact computes in torch on the token ids."""

import numpy as np
import torch
from torch import nn

import einfhe
import quant
from einfhe.compiler import client_lookup, encrypted_blockers, load_artifact_model, read_artifact_graph
from einfhe.compiler.model import compile_model

VOCAB, DIM, TOKENS, B = 20, 6, 3, 8


def _bag() -> nn.Module:
    """Token embeddings flattened, a linear layer, a square and a head."""
    return nn.Sequential(nn.Embedding(VOCAB, DIM), nn.Flatten(), nn.Linear(TOKENS * DIM, 8), quant.Square(),
                         nn.Linear(8, 2))


def test_the_client_looks_ids_up_and_the_server_computes_the_rest(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (B, TOKENS))
    model = _bag()
    quant.export(model, ids, tmp_path)
    graph, _ = read_artifact_graph(tmp_path)
    assert encrypted_blockers(graph) == []
    table = client_lookup(tmp_path)
    np.testing.assert_array_equal(table, model[0].weight.detach().double().numpy())
    layers, n_features = load_artifact_model(tmp_path)
    assert n_features == TOKENS * DIM
    with torch.no_grad():
        plain = quant.load_artifact(tmp_path)(ids).double().numpy()
    program = compile_model(layers, n_features, batch=B, slots=B)
    features = table[ids.numpy()].reshape(B, -1)  # what the client encrypts
    got = program.unpack_output(einfhe.simulate(program.plan, program.pack_input(features), *program.plains))
    # torch's float32 rounding through an 18-term layer, a square and an 8-term head: 1e-5 of the largest output
    np.testing.assert_allclose(got, plain, rtol=0, atol=1e-5 * np.abs(plain).max())


def test_a_lookup_inside_the_model_stays_a_blocker():
    graph = {"inputs": [{"name": "x", "shape": [4], "dtype": "float32"}],
             "nodes": [{"name": "a", "op": "linear", "inputs": ["x"], "attrs": {"format": "W8A16"}},
                       {"name": "b", "op": "embedding", "inputs": ["a"], "attrs": {"client_side": True}}],
             "outputs": ["b"]}
    assert encrypted_blockers(graph) == ["b (embedding)"]
