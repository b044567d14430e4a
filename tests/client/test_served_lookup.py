"""A model whose export marked its embedding lookup client-side, served: the client looks its token ids up in the
model's table and encrypts the embeddings; encrypted and plaintext answers match the artifact run in torch."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import numpy as np
import pytest
import torch
from client_helpers import TOKENS
from torch import nn

import quant
from client import Client, EncryptedModel

VOCAB, DIM, LENGTH = 20, 6, 3


class _Bag(nn.Module):
    """Token embeddings, a per-token linear layer, the tokens mixed by a transpose and a head."""

    def __init__(self):
        super().__init__()
        self.embed, self.proj, self.head = nn.Embedding(VOCAB, DIM), nn.Linear(DIM, DIM), nn.Linear(LENGTH * DIM, 2)

    def forward(self, ids):
        h = self.proj(self.embed(ids))
        return self.head((h * h).transpose(1, 2).flatten(1))


def test_token_ids_are_looked_up_by_the_client(live_server, tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (8, LENGTH))
    quant.export(_Bag(), ids, tmp_path / "bag")
    with torch.no_grad():
        expected = quant.load_artifact(tmp_path / "bag")(ids).double().numpy()
    with Client(live_server, TOKENS["operator"], progress=False) as operator:
        info = operator.register_model("bag", tmp_path / "bag", slots=8, insecure_test_params=True)
    assert info["client_lookup"] == {"vocab": VOCAB, "dim": DIM} and info["encrypted_blockers"] == []
    with EncryptedModel(live_server, "bag", token=TOKENS["alice"], progress=False) as model:
        encrypted, plain = model.infer(ids.numpy()), model.infer(ids.numpy(), encrypted=False)
        with pytest.raises(ValueError, match="token ids"):
            model.infer(np.full((2, LENGTH), VOCAB))
    # float32 in torch and the worker, CKKS noise at scale 2^40 through three levels: 1e-5 of the largest output
    np.testing.assert_allclose(plain, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(encrypted, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
