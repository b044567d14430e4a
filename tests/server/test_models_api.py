"""The models resource in-process: quant's own export registered, plaintext inference against quant's torch
QuantLinear forward, models surviving a restart, operator-only deletion."""

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


async def call(app, method: str, path: str, tenant: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe") as http:
        return await http.request(method, path, headers={**auth(tenant), **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture
def quantized(mlp_export):
    """The quantized MLP's export tarred, a batch of inputs and its expected outputs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(mlp_export["dir"], arcname="export")
    return {"tar": buffer.getvalue(), "X": mlp_export["X"], "expected": mlp_export["expected"]}


@pytest.fixture
def operator_settings(settings):
    return settings.model_copy(update={"operators": ["alice"]})


async def test_plaintext_inference_matches_quant_and_survives_restart(operator_settings, quantized):
    app = create_app(operator_settings)
    try:
        response = await call(app, "POST", "/models", "alice", content=quantized["tar"],
                              params={"name": "mlp", "slots": SLOTS, "insecure_test_params": True},
                              headers={"Content-Type": "application/x-tar"})
        assert response.status_code == 201, response.text
        model = response.json()
        first = await call(app, "POST", f"/models/{model['id']}/infer", "bob", content=npy(quantized["X"]))
    finally:
        app.state.service.close()
    assert first.status_code == 200, first.text
    y = np.load(io.BytesIO(first.content), allow_pickle=False)
    # QuantLinear's torch reference and the integer format's numpy forward compute the same W4A16 model in fp32
    np.testing.assert_allclose(y, quantized["expected"], rtol=1e-4, atol=1e-5)
    restarted = create_app(operator_settings)
    try:
        again = await call(restarted, "GET", f"/models/{model['id']}", "bob")
        second = await call(restarted, "POST", f"/models/{model['id']}/infer", "bob", content=npy(quantized["X"][0]))
    finally:
        restarted.state.service.close()
    assert again.json() == model
    # one row alone may round differently from the same row in a batch (float32 BLAS paths)
    np.testing.assert_allclose(np.load(io.BytesIO(second.content), allow_pickle=False), y[0], rtol=1e-6)


async def test_plaintext_inference_checks_the_input(operator_settings, quantized):
    app = create_app(operator_settings.model_copy(update={"max_infer_rows": 4}))
    try:
        model = (await call(app, "POST", "/models", "alice", content=quantized["tar"],
                            params={"name": "mlp", "slots": SLOTS, "insecure_test_params": True},
                            headers={"Content-Type": "application/x-tar"})).json()
        wrong = await call(app, "POST", f"/models/{model['id']}/infer", "bob", content=npy(np.zeros((2, 5))))
        many = await call(app, "POST", f"/models/{model['id']}/infer", "bob", content=npy(np.zeros((5, 6))))
        missing = await call(app, "POST", "/models/nope/infer", "bob", content=npy(np.zeros(6)))
        huge = await call(app, "POST", f"/models/{model['id']}/infer", "bob", content=npy(np.full((1, 6), 1e300)))
    finally:
        app.state.service.close()
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "invalid_request")
    assert (huge.status_code, huge.json()["error"]["code"]) == (400, "invalid_request")  # float32 overflow
    assert (many.status_code, many.json()["error"]["code"]) == (422, "work_limit_exceeded")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


async def test_a_length_is_refused_by_a_program_without_key_masks(operator_settings, quantized):
    """Only an encoder's 'tokens' program masks padding for a sentence's length; a length is never silently
    ignored."""
    app = create_app(operator_settings)
    try:
        model = (await call(app, "POST", "/models", "alice", content=quantized["tar"],
                            params={"name": "mlp", "slots": SLOTS, "insecure_test_params": True},
                            headers={"Content-Type": "application/x-tar"})).json()
        refused = await call(app, "POST", f"/models/{model['id']}/jobs", "bob", content=b"\0",
                             params={"variant": "single", "keyset_id": "none", "length": 3},
                             headers={"Content-Type": "application/octet-stream"})
    finally:
        app.state.service.close()
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_request")
    assert "'single' program takes no length" in refused.json()["error"]["message"]


async def test_only_operators_delete_models(operator_settings, quantized):
    app = create_app(operator_settings)
    try:
        model = (await call(app, "POST", "/models", "alice", content=quantized["tar"],
                            params={"name": "mlp", "slots": SLOTS, "insecure_test_params": True},
                            headers={"Content-Type": "application/x-tar"})).json()
        refused = await call(app, "DELETE", f"/models/{model['id']}", "bob")
        deleted = await call(app, "DELETE", f"/models/{model['id']}", "alice")
        gone = await call(app, "GET", f"/models/{model['id']}", "bob")
        listed = await call(app, "GET", "/models", "bob")
    finally:
        app.state.service.close()
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert deleted.status_code == 204 and gone.status_code == 404 and listed.json() == []
    assert not (operator_settings.data_dir / "blobs" / "models" / model["id"]).exists()


async def test_openapi_describes_model_bodies(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe") as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    register = paths["/models"]["post"]["requestBody"]["content"]
    assert {"application/x-tar", "application/zip", "application/msgpack"} <= set(register)
    job = paths["/models/{model_id}/jobs"]["post"]
    assert job["responses"]["200"]["content"]["application/octet-stream"]["schema"]["format"] == "binary"
    assert "202" in job["responses"] and "application/octet-stream" in job["requestBody"]["content"]
