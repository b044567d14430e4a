"""quant's model artifact served end to end over a real server: the digits ResNet (BatchNorm, a skip connection)
quantized, exported, registered, and answered in plaintext (quant's kernels in a worker) and encrypted."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import numpy as np
import pytest
from client_helpers import TOKENS

from client import Client, EncryptedModel
from server import LocalServer, Settings


@pytest.fixture(scope="module")
def served_resnet(tmp_path_factory):
    """The digits ResNet trained, quantized (head W4A16) and exported, registered on a server at 1024 slots."""
    from bench.digits_resnet import export_quantized

    tmp = tmp_path_factory.mktemp("resnet")
    made = export_quantized(tmp / "artifact")
    token_file = tmp / "tokens.txt"
    token_file.write_text("".join(f"{t}:{k}\n" for t, k in TOKENS.items()))
    settings = Settings(data_dir=tmp / "data", token_file=token_file, workers=1, allow_insecure_test_params=True)
    with LocalServer(settings) as url:
        with Client(url, TOKENS["operator"], progress=False) as operator:
            info = operator.register_model("resnet", tmp / "artifact", slots=1024, insecure_test_params=True)
        yield {"url": url, "info": info, **made}


def test_registration_reports_the_batched_program_only(served_resnet):
    info = served_resnet["info"]
    assert (info["n_features"], info["n_outputs"], info["input_shape"]) == (64, 10, [1, 8, 8])
    assert list(info["programs"]) == ["batch"] and info["encrypted_blockers"] == []  # the Residual needs batching
    assert info["layers"][:2] == ["conv2d:stem", "square:act0"]


def test_plaintext_and_encrypted_answers_agree_with_the_quantized_model(served_resnet):
    X, y = served_resnet["X"], served_resnet["y"]
    with EncryptedModel(served_resnet["url"], "resnet", token=TOKENS["alice"], progress=False) as model:
        plain = model.infer(X, encrypted=False).argmax(1)
        encrypted = model.infer(X).argmax(1)
        one = model.infer(X[0])  # one sample runs as a batch of one
    assert one.shape == (10,)
    assert (plain == served_resnet["quant"]).mean() >= 0.99
    assert (encrypted == served_resnet["quant"]).mean() >= 0.99
    float_accuracy = (served_resnet["float"] == y).mean()
    assert (encrypted == y).mean() >= float_accuracy - 0.01 and (plain == y).mean() >= float_accuracy - 0.01
