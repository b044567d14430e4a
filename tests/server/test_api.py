"""The REST API in-process (httpx.ASGITransport): auth, ownership, caps, malformed input, the job flow."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import asyncio
import re

import httpx
import msgpack
import numpy as np
import openfhe
import pytest
from server_helpers import SLOTS, assert_error, call, keyset_body, npy

from einfhe.crypto.blobs import pack_blob, pack_parts
from server import Settings, create_app

pytestmark = pytest.mark.anyio


async def upload_keys(app, ctx, tenant="alice") -> str:
    response = await call(app, "POST", "/keysets", tenant, content=keyset_body(ctx),
                          headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def make_plan(app, matvec, tenant="alice") -> dict:
    assert (await call(app, "PUT", "/operands/W", tenant, content=npy(matvec["W"]))).status_code == 200
    body = {"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}], "slots": SLOTS,
            "params": matvec["params"].to_json()}
    response = await call(app, "POST", "/plans", tenant, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def wait_job(app, job_id: str, tenant="alice") -> dict:
    for _ in range(200):
        job = (await call(app, "GET", f"/jobs/{job_id}", tenant, params={"wait": 0.2})).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.05)
    raise TimeoutError(job_id)


async def test_auth_required(app):
    assert_error(await call(app, "GET", "/keysets", None), 401, "unauthorized")
    assert_error(await call(app, "GET", "/keysets", None, headers={"Authorization": "Bearer nope"}), 401, "unauthorized")


async def test_job_flow(app, matvec):
    ctx, plan_info = matvec["ctx"], await make_plan(app, matvec)
    assert plan_info["rotations"] == list(matvec["plan"].rotations)
    assert plan_info["input_layouts"]["1"] == matvec["plan"].input_layout(1).to_json()
    keyset_id = await upload_keys(app, ctx)
    data = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matvec["x"], matvec["plan"].input_layout(1)))
    response = await call(app, "POST", "/jobs", params={"plan_id": plan_info["id"], "keyset_id": keyset_id},
                          content=data, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 202, response.text
    job = await wait_job(app, response.json()["id"])
    assert job["status"] == "succeeded", job
    result = await call(app, "GET", f"/jobs/{job['id']}/result")
    y = einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, result.content))
    np.testing.assert_allclose(y, matvec["W"] @ matvec["x"], atol=1e-6)  # tenant isolation: test_isolation.py


async def test_a_result_answered_inline_with_keep_false_is_not_kept(app, matvec):
    """keep=false: the inline answer is the only copy (the row keeps the outcome); without an inline answer the
    result is stored as usual; keep=true (the default) stores an inline answer too."""
    ctx, plan_info = matvec["ctx"], await make_plan(app, matvec)
    keyset_id = await upload_keys(app, ctx)
    data = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matvec["x"], matvec["plan"].input_layout(1)))
    params = {"plan_id": plan_info["id"], "keyset_id": keyset_id, "wait": 30, "keep": "false"}
    octets = {"Content-Type": "application/octet-stream"}
    results = app.state.service.store.blob_dir("results")

    def decrypted(blob: bytes) -> np.ndarray:
        return einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, blob))

    inline = await call(app, "POST", "/jobs", params=params, content=data, headers=octets)
    assert inline.status_code == 200, inline.text
    np.testing.assert_allclose(decrypted(inline.content), matvec["W"] @ matvec["x"], atol=1e-6)
    job_id = inline.headers["X-Einfhe-Job"]
    job = (await call(app, "GET", f"/jobs/{job_id}")).json()
    assert (job["status"], job["result_size"]) == ("succeeded", len(inline.content))
    assert not (results / job_id).exists()
    assert_error(await call(app, "GET", f"/jobs/{job_id}/result"), 410, "result_not_kept")

    kept = await call(app, "POST", "/jobs", params={**params, "keep": "true"}, content=data, headers=octets)
    assert kept.status_code == 200, kept.text
    assert (await call(app, "GET", f"/jobs/{kept.headers['X-Einfhe-Job']}/result")).content == kept.content

    queued = await call(app, "POST", "/jobs", params={**params, "wait": 0}, content=data, headers=octets)
    assert queued.status_code == 202, queued.text
    job = await wait_job(app, queued.json()["id"])
    stored = await call(app, "GET", f"/jobs/{job['id']}/result")
    assert stored.status_code == 200, stored.text
    np.testing.assert_allclose(decrypted(stored.content), matvec["W"] @ matvec["x"], atol=1e-6)


async def test_deleting_a_finished_job_and_a_key_set(app, matvec):
    """DELETE removes a finished job with its stored result, and a key set with its keys; a job whose key set was
    deleted while it waited fails with keyset_deleted."""
    ctx, plan_info = matvec["ctx"], await make_plan(app, matvec)
    keyset_id = await upload_keys(app, ctx)
    data = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matvec["x"], matvec["plan"].input_layout(1)))
    octets = {"Content-Type": "application/octet-stream"}
    store = app.state.service.store
    done = await call(app, "POST", "/jobs", params={"plan_id": plan_info["id"], "keyset_id": keyset_id, "wait": 30},
                      content=data, headers=octets)
    job_id = done.headers["X-Einfhe-Job"]
    assert store.blob_path("results", job_id).exists()
    assert (await call(app, "DELETE", f"/jobs/{job_id}")).status_code == 204
    assert not store.blob_path("results", job_id).exists()
    assert_error(await call(app, "GET", f"/jobs/{job_id}"), 404, "not_found")
    assert_error(await call(app, "DELETE", f"/jobs/{job_id}"), 404, "not_found")
    assert job_id not in {job["id"] for job in (await call(app, "GET", "/jobs")).json()}

    assert (await call(app, "DELETE", f"/keysets/{keyset_id}")).status_code == 204
    assert not store.blob_path("keysets", keyset_id).exists()
    assert_error(await call(app, "GET", f"/keysets/{keyset_id}"), 404, "not_found")
    refused = await call(app, "POST", "/jobs", params={"plan_id": plan_info["id"], "keyset_id": keyset_id},
                         content=data, headers=octets)
    assert_error(refused, 404, "not_found")

    # the keys gone while a job waits (a worker never loaded them): the job fails with its own code
    other = await upload_keys(app, ctx)
    store.blob_path("keysets", other).unlink()
    orphan = await call(app, "POST", "/jobs", params={"plan_id": plan_info["id"], "keyset_id": other},
                        content=data, headers=octets)
    job = await wait_job(app, orphan.json()["id"])
    assert (job["status"], job["error"]["code"]) == ("failed", "keyset_deleted"), job


async def test_secret_key_upload_refused(app, matvec):
    ctx = matvec["ctx"]
    secret = openfhe.Serialize(ctx.backend.secret_key, openfhe.BINARY)
    for parts in ({"secret_key": secret}, {"public_key": secret}, {"rotation_keys": secret}):
        response = await call(app, "POST", "/keysets", content=keyset_body(ctx, **parts),
                              headers={"Content-Type": "application/octet-stream"})
        assert_error(response, 400, "secret_key_refused")
    assert (await call(app, "GET", "/keysets")).json() == []


@pytest.mark.parametrize("body, code", [
    (b"\x00garbage", "malformed_blob"),
    (msgpack.packb([1, 2, 3]), "malformed_blob"),
    (pack_blob("evaluation_keys", bytes(16), pack_parts({"params": {}, "parts": []}, [])), "invalid_parameters"),
    (pack_blob("evaluation_keys", bytes(16), pack_parts({"params": 1, "parts": ["context"]}, [b"x"])), "malformed_blob"),
    (pack_blob("tensor", bytes(16), b""), "malformed_blob"),
])
async def test_malformed_keyset(app, body, code):
    response = await call(app, "POST", "/keysets", content=body, headers={"Content-Type": "application/octet-stream"})
    assert_error(response, 400, code)


async def test_keyset_with_corrupt_parts(app, matvec):
    ctx = matvec["ctx"]
    octet = {"Content-Type": "application/octet-stream"}
    for parts in ({"public_key": b"\x01" * 64}, {"mult_key": b"\x01" * 64}, {"context": b""}):
        response = await call(app, "POST", "/keysets", content=keyset_body(ctx, **parts), headers=octet)
        assert_error(response, 400, "malformed_blob")
    response = await call(app, "POST", "/keysets", content=keyset_body(ctx, extra=b"x"), headers=octet)
    assert_error(response, 400, "unknown_key_part")


async def test_insecure_parameters_refused_by_default(tmp_path, token_file, matvec):
    app = create_app(Settings(data_dir=tmp_path / "strict", token_file=token_file, workers=1))
    try:
        response = await call(app, "POST", "/keysets", content=keyset_body(matvec["ctx"]),
                              headers={"Content-Type": "application/octet-stream"})
        assert_error(response, 400, "insecure_parameters")
        await call(app, "PUT", "/operands/W", content=npy(matvec["W"]))
        body = {"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}], "slots": SLOTS,
                "params": matvec["params"].to_json()}
        assert_error(await call(app, "POST", "/plans", json=body), 400, "insecure_parameters")
        body.pop("params")  # the server's own choice is 128-bit
        plan = (await call(app, "POST", "/plans", json=body)).json()
        assert plan["params"]["security"] == einfhe.params.SECURE and plan["params"]["ring_dim"] >= 8192
    finally:
        app.state.service.close()


async def test_body_caps(tmp_path, token_file):
    app = create_app(Settings(data_dir=tmp_path / "caps", token_file=token_file, workers=1, max_operand_bytes=1000,
                              max_json_bytes=200, allow_insecure_test_params=True))
    try:
        assert_error(await call(app, "PUT", "/operands/big", content=npy(np.zeros(1000))), 413, "payload_too_large")
        body = {"spec": "ij,j->i" + " " * 300, "operands": [{"cipher": [8]}]}
        assert_error(await call(app, "POST", "/plans", json=body), 413, "payload_too_large")
        assert (await call(app, "PUT", "/operands/small", content=npy(np.zeros(10)))).status_code == 200
    finally:
        app.state.service.close()


async def test_length_required(app):
    async def chunks():
        yield b"abc"

    assert_error(await call(app, "PUT", "/operands/x", content=chunks()), 411, "length_required")


@pytest.mark.parametrize("body", [b"not npy", npy(np.array(["a", "b"])), npy(np.array([np.nan])),
                                  npy(np.zeros((0,))), npy(np.zeros(4))[:60]])
async def test_malformed_operand(app, body):
    assert_error(await call(app, "PUT", "/operands/W", content=body), 400, "malformed_blob")


async def test_pickled_operand_refused(app):
    import io
    buffer = io.BytesIO()
    np.save(buffer, np.array([1, {"a": 1}], dtype=object), allow_pickle=True)
    assert_error(await call(app, "PUT", "/operands/W", content=buffer.getvalue()), 400, "malformed_blob")


@pytest.mark.parametrize("name", ["bad%20name", "-x", "a" * 65])
async def test_bad_operand_name(app, name):
    assert_error(await call(app, "PUT", f"/operands/{name}", content=npy([1.0])), 400, "invalid_request")


async def test_malformed_job_bodies(app, matvec):
    ctx, plan_info = matvec["ctx"], await make_plan(app, matvec)
    keyset_id = await upload_keys(app, ctx)
    good = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matvec["x"], matvec["plan"].input_layout(1)))
    other_params = einfhe.Parameters.insecure_for_tests(3, SLOTS)
    other = einfhe.Context.for_plan(matvec["plan"], params=other_params)
    wrong_fp = einfhe.tensor_to_bytes(other, einfhe.encrypt(other, matvec["x"], matvec["plan"].input_layout(1)))
    wrong_layout = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, np.zeros(4)))
    query = {"plan_id": plan_info["id"], "keyset_id": keyset_id}
    octet = {"Content-Type": "application/octet-stream"}
    for body in (b"", b"garbage", good[:-10], good[:20] + b"\xff" * 12 + good[32:], wrong_fp, wrong_layout):
        assert_error(await call(app, "POST", "/jobs", params=query, content=body, headers=octet), 400, "malformed_blob")
    packed = {"Content-Type": "application/msgpack"}
    for body in (b"\xc1", msgpack.packb({"a": 1}), msgpack.packb([good, good])):
        assert_error(await call(app, "POST", "/jobs", params=query, content=body, headers=packed), 400, "malformed_blob")
    response = await call(app, "POST", "/jobs", params=query, content=good, headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")
    assert_error(await call(app, "POST", "/jobs", params={"plan_id": plan_info["id"]}, content=good, headers=octet),
                 400, "invalid_request")


async def test_job_payload_corrupt_inside_openfhe(app, matvec):
    """A blob whose einfhe envelope is right but whose OpenFHE bytes are garbage fails the job with a code."""
    ctx, plan_info = matvec["ctx"], await make_plan(app, matvec)
    keyset_id = await upload_keys(app, ctx)
    meta = {"layout": matvec["plan"].input_layout(1).to_json()}
    payload = einfhe.crypto.blobs.pack_parts(meta, [b"\x07" * 300])
    blob = einfhe.crypto.blobs.pack_blob("tensor", matvec["params"].fingerprint(), payload)
    response = await call(app, "POST", "/jobs", params={"plan_id": plan_info["id"], "keyset_id": keyset_id},
                          content=blob, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 202, response.text
    job = await wait_job(app, response.json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] in ("malformed_blob", "worker_crashed"), job
    assert_error(await call(app, "GET", f"/jobs/{job['id']}/result"), 409, "job_failed")


async def test_plan_errors(app, matvec):
    await call(app, "PUT", "/operands/W", content=npy(matvec["W"]))
    bad = {"spec": "ij,jk->i", "operands": [{"plain": "W"}, {"cipher": [8]}], "slots": SLOTS}
    assert_error(await call(app, "POST", "/plans", json=bad), 400, "invalid_einsum")
    missing = {"spec": "ij,j->i", "operands": [{"plain": "V"}, {"cipher": [8]}], "slots": SLOTS}
    assert_error(await call(app, "POST", "/plans", json=missing), 404, "not_found")
    both = {"spec": "i->i", "operands": [{"plain": "W", "cipher": [8]}]}
    assert_error(await call(app, "POST", "/plans", json=both), 400, "invalid_request")
    for bound in ({"plain": "W", "bound": 1.0}, {"cipher": [8], "bound": -1.0}, {"cipher": [8], "bound": "inf"}):
        request = {"spec": "ij,j->i", "operands": [{"plain": "W"}, bound], "slots": SLOTS}
        assert_error(await call(app, "POST", "/plans", json=request), 400, "invalid_request")
    huge = {"spec": "ij,jk->ik", "operands": [{"cipher": [4096, 4096]}, {"cipher": [4096, 4096]}]}
    assert_error(await call(app, "POST", "/plans", json=huge), 422, "work_limit_exceeded")
    assert_error(await call(app, "POST", "/plans", content=b"{", headers={"Content-Type": "application/json"}),
                 400, "invalid_request")


async def test_a_plan_over_its_budget_is_refused_with_what_to_raise(app, settings, matvec):
    """A plan request whose key budget no plan fits answers 422 over_budget naming the bytes to ask for; asking
    for them compiles; a budget past the server's cap, or a need past it, says so."""
    await call(app, "PUT", "/operands/W", content=npy(matvec["W"]))
    body = {"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}], "slots": SLOTS, "key_budget": 1024}
    response = await call(app, "POST", "/plans", json=body)
    assert_error(response, 422, "over_budget")
    message = response.json()["error"]["message"]
    needed = int(re.search(r"set key_budget=(\d+) in the plan request", message).group(1))
    assert "this request's is 0.0 MiB" in message and needed > 1024
    plan = await call(app, "POST", "/plans", json=body | {"key_budget": needed})
    assert plan.status_code == 201, plan.text
    assert plan.json()["plan"]["choice"]["chosen"]["key_bytes"] <= needed
    past = body | {"key_budget": settings.max_keyset_bytes + 1}
    assert_error(await call(app, "POST", "/plans", json=past), 422, "work_limit_exceeded")
    small = create_app(settings.model_copy(update={"max_keyset_bytes": needed - 1}))
    try:
        response = await call(small, "POST", "/plans", json=body | {"key_budget": needed - 1})
        assert_error(response, 422, "over_budget")
        assert "EINFHE_MAX_KEYSET_BYTES" in response.json()["error"]["message"]
    finally:
        small.state.service.close()


async def test_unknown_route_and_method(app):
    assert_error(await call(app, "GET", "/nope"), 404, "not_found")
    assert_error(await call(app, "DELETE", "/jobs"), 405, "method_not_allowed")


async def test_openapi_describes_binary_bodies(app):
    spec = (await call(app, "GET", "/openapi.json", None)).json()
    assert "application/octet-stream" in spec["paths"]["/jobs"]["post"]["requestBody"]["content"]
    assert "application/octet-stream" in spec["paths"]["/keysets"]["post"]["requestBody"]["content"]
    assert "application/msgpack" in spec["paths"]["/jobs"]["post"]["requestBody"]["content"]
    assert "application/octet-stream" in spec["paths"]["/jobs/{job_id}/result"]["get"]["responses"]["200"]["content"]
