"""Artifacts registered in-process: plaintext answers equal quant.load_artifact's; a model with ops that cannot run
encrypted is registered for plaintext only, its blockers named, its encrypted jobs refused."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import io
import tarfile

import httpx
import numpy as np
import pytest
from server_helpers import SLOTS, auth, npy

from server import create_app

pytestmark = pytest.mark.anyio


def _artifact(model, example, directory) -> tuple[bytes, object]:
    """Export `model`, tar the artifact; return the tar and the loaded artifact module."""
    import quant

    quant.export(model, example, directory)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(directory, arcname="artifact")
    return buffer.getvalue(), quant.load_artifact(directory)


async def _register_and_infer(settings, body: bytes, X: np.ndarray):
    app = create_app(settings.model_copy(update={"operators": ["alice"]}))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe") as http:
            model = (await http.post("/models", content=body, headers={**auth("alice"), "Content-Type": "application/x-tar"},
                                     params={"name": "m", "slots": SLOTS, "insecure_test_params": True}))
            assert model.status_code == 201, model.text
            model = model.json()
            answer = await http.post(f"/models/{model['id']}/infer", content=npy(X), headers=auth("bob"))
            job = await http.post(f"/models/{model['id']}/jobs", params={"keyset_id": "none", "variant": "batch"},
                                  content=b"\0" * 64, headers={**auth("bob"), "Content-Type": "application/octet-stream"})
    finally:
        app.state.service.close()
    assert answer.status_code == 200, answer.text
    return model, np.load(io.BytesIO(answer.content), allow_pickle=False), job


async def test_resnet_artifact_is_served_in_plaintext_as_quant_runs_it(settings, tmp_path):
    import torch

    import quant
    from bench.digits_resnet import DigitsResNet

    torch.manual_seed(0)
    net = DigitsResNet().eval()
    quant.quantize_(net, quant.W4A16(group_size=64))
    X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    body, loaded = _artifact(net, X, tmp_path / "artifact")
    model, y, _job = await _register_and_infer(settings, body, X.reshape(6, -1).double().numpy())
    assert list(model["programs"]) == ["batch"] and model["encrypted_blockers"] == []
    with torch.no_grad():
        expected = loaded(X).double().numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)  # the same modules in a worker


async def test_ops_with_no_encrypted_form_leave_the_model_plaintext_only(settings, tmp_path):
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 4), nn.Softmax(-1)).eval()
    X = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    body, loaded = _artifact(net, X, tmp_path / "artifact")
    model, y, job = await _register_and_infer(settings, body, X.double().numpy())
    assert model["programs"] == {} and model["encrypted_blockers"] == ["1 (layernorm)", "3 (softmax)"]
    with torch.no_grad():
        np.testing.assert_allclose(y, loaded(X).double().numpy(), rtol=1e-6, atol=1e-6)
    assert job.status_code == 400 and job.json()["error"]["code"] == "unsupported_model"
    assert "layernorm" in job.json()["error"]["message"]


async def test_minilm_is_served_in_plaintext_through_its_artifact(settings, tmp_path):
    import msgpack
    import torch

    import quant
    from bench.quant_accuracy import load_minilm, make_sentences

    model, tokenizer = load_minilm()
    quant.quantize_(model, quant.W4A16(group_size=128))
    encoded = tokenizer.encode_batch(make_sentences(5, seed=3))
    ids, mask = torch.tensor([e.ids for e in encoded]), torch.tensor([e.attention_mask for e in encoded])
    body, _loaded = _artifact(model, (ids[:2, :9], mask[:2, :9]), tmp_path / "artifact")
    inputs = msgpack.packb({"input_ids": npy(ids.numpy()), "attention_mask": npy(mask.numpy())})
    bad = msgpack.packb({"input_ids": npy(ids.numpy() + 10**6), "attention_mask": npy(mask.numpy())})
    app = create_app(settings.model_copy(update={"operators": ["alice"]}))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe") as http:
            registered = (await http.post("/models", content=body, params={"name": "minilm", "slots": SLOTS,
                                          "insecure_test_params": True},
                                          headers={**auth("alice"), "Content-Type": "application/x-tar"})).json()
            msgpack_type = {**auth("bob"), "Content-Type": "application/msgpack"}
            answer = await http.post(f"/models/{registered['id']}/infer", content=inputs, headers=msgpack_type)
            refused = await http.post(f"/models/{registered['id']}/infer", content=bad, headers=msgpack_type)
            one_array = await http.post(f"/models/{registered['id']}/infer", content=npy(ids.numpy()),
                                        headers=auth("bob"))
    finally:
        app.state.service.close()
    assert registered["programs"] == {} and registered["encoder"]["layers"] == 6  # an encoder exported without
    assert "keep_example=True" in registered["encrypted_blockers"][0]  # the example its layers are calibrated on
    assert answer.status_code == 200, answer.text
    with torch.no_grad():
        expected = model(ids, mask)
    got = torch.from_numpy(np.load(io.BytesIO(answer.content), allow_pickle=False)).float()
    assert float(torch.nn.functional.cosine_similarity(got, expected, dim=-1).min()) >= 1 - 1e-3
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_request")
    assert (one_array.status_code, one_array.json()["error"]["code"]) == (400, "invalid_request")
