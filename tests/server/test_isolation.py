"""Tenant isolation (issue 8): bob cannot read, use or delete alice's key sets, plans, operands, jobs, results or
(not being an operator) models, on every route that names an object, nor find them by guessing ids.

alice (the operator) holds an operand, a plan, a key set, a finished einsum job, a model and a finished model job;
bob holds his own operand under the same name, a plan and a key set under other keys. Every refusal is the answer
a missing object gets (404 not_found; 403 forbidden for model deletion, which is for operators), and after each
attempt alice's view of her objects is unchanged. A test fails when a route with an id has no case here.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import json
import re
import uuid
from urllib.parse import quote

import numpy as np
import pytest
from server_helpers import TOKENS, auth, finished_job, npy, seed_objects
from starlette.testclient import TestClient

from server import Settings, create_app

LISTS = ("/keysets", "/plans", "/operands", "/jobs", "/models")
OCTET = {"Content-Type": "application/octet-stream"}

# (method, path, query, body, status): {alice.x} is alice's object, {bob.x} bob's; bodies are named in `world`.
CASES = [
    ("GET", "/keysets/{alice.keyset_id}", {}, None, 404),
    ("GET", "/plans/{alice.plan_id}", {}, None, 404),
    ("GET", "/operands/W", {}, None, 200),  # bob's own W: names are per tenant
    ("PUT", "/operands/W", {}, "operand", 200),  # replaces bob's W only
    ("DELETE", "/operands/W", {}, None, 204),  # deletes bob's W only
    ("GET", "/operands/W", {}, None, 404),  # and alice's W does not show through
    ("GET", "/jobs/{alice.job_id}", {}, None, 404),
    ("DELETE", "/jobs/{alice.job_id}", {}, None, 404),
    ("DELETE", "/keysets/{alice.keyset_id}", {}, None, 404),
    ("GET", "/jobs/{alice.job_id}/result", {}, None, 404),
    ("GET", "/jobs/{alice.model_job_id}", {}, None, 404),
    ("GET", "/jobs/{alice.model_job_id}/result", {}, None, 404),
    ("POST", "/jobs", {"plan_id": "{alice.plan_id}", "keyset_id": "{bob.keyset_id}"}, "bob_tensor", 404),
    ("POST", "/jobs", {"plan_id": "{bob.plan_id}", "keyset_id": "{alice.keyset_id}"}, "alice_tensor", 404),
    ("POST", "/models/{alice.model_id}/jobs", {"keyset_id": "{alice.model_keyset_id}"}, "model_tensor", 404),
    ("DELETE", "/models/{alice.model_id}", {}, None, 403),
    # models are shared by design: every tenant may read the operator's models and run them (with its own keys)
    ("GET", "/models/{alice.model_id}", {}, None, 200),
    ("POST", "/models/{alice.model_id}/infer", {}, "sample", 200),
    ("GET", "/models/{alice.model_id}/lookup", {}, None, 404),  # a model of features has no lookup table
    ("GET", "/models/{alice.model_id}/embeddings", {}, None, 404),  # nor, being no encoder, embedding tables
]


def _fill(text: str, world: dict) -> str:
    """Put the seeded ids into a path or query template."""
    return re.sub(r"\{(alice|bob)\.(\w+)\}", lambda m: world[m.group(1)][m.group(2)], text)


def _private(world: dict) -> set[str]:
    """alice's ids and operand digest: no answer to bob may contain them (her model is shared by design)."""
    ids = {v for k, v in world["alice"].items() if k not in ("name", "model_id")}
    return ids | {operand["digest"] for operand in world["alice_view"]["/operands"]}


def _view(http: TestClient) -> dict:
    """Everything a tenant can list, and the result bytes of each of its finished jobs."""
    view = {path: http.get(path).json() for path in LISTS}
    view["results"] = {job["id"]: http.get(f"/jobs/{job['id']}/result").content for job in view["/jobs"]}
    return view


def _tensor(ctx, matvec) -> bytes:
    return einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matvec["x"], matvec["plan"].input_layout(1)))


@pytest.fixture(scope="module")
def world(tmp_path_factory, matvec, model_files):
    """alice's and bob's objects on one app (made once for the module: key checks and a model compile)."""
    tmp = tmp_path_factory.mktemp("isolation")
    (tmp / "tokens.txt").write_text("".join(f"{tenant}:{token}\n" for tenant, token in TOKENS.items()))
    app = create_app(Settings(data_dir=tmp / "data", token_file=tmp / "tokens.txt", workers=1, operators=["alice"],
                              allow_insecure_test_params=True))
    try:
        alice = TestClient(app, base_url="http://einfhe", headers=auth("alice"))
        bob = TestClient(app, base_url="http://einfhe", headers=auth("bob"))
        alice_ids = seed_objects(alice, matvec, model_files=model_files)
        bob_ctx = einfhe.Context.for_plan(matvec["plan"], params=matvec["params"])  # other keys, same parameters
        bob_ids = seed_objects(bob, {**matvec, "W": np.ones_like(matvec["W"])}, ctx=bob_ctx)
        # a finished model job of alice's, under a key set for the model's program
        program = alice.get(f"/models/{alice_ids['model_id']}").json()["programs"]["single"]
        model_plan = einfhe.Plan.from_json(json.dumps(program["plan"]))
        model_ctx = einfhe.Context.for_plan(model_plan, params=einfhe.Parameters.from_json(program["params"]))
        keyset = alice.post("/keysets", content=einfhe.evaluation_keys_to_bytes(model_ctx), headers=OCTET)
        assert keyset.status_code == 201, keyset.text
        layout = model_plan.cipher_inputs[0].layout
        model_tensor = einfhe.tensor_to_bytes(model_ctx, einfhe.encrypt(model_ctx, np.zeros(layout.shape), layout))
        job = alice.post(f"/models/{alice_ids['model_id']}/jobs", content=model_tensor, headers=OCTET,
                         params={"keyset_id": keyset.json()["id"], "wait": 30})
        alice_ids.update(model_keyset_id=keyset.json()["id"], model_job_id=finished_job(alice, job))
        bodies = {"alice_tensor": _tensor(matvec["ctx"], matvec), "bob_tensor": _tensor(bob_ctx, matvec),
                  "model_tensor": model_tensor, "operand": npy(np.full((2, 2), 7.0)), "sample": npy(np.zeros(6))}
        yield {"app": app, "alice": alice_ids, "bob": bob_ids, "alice_http": alice, "bob_http": bob,
               "alice_view": _view(alice), "bodies": bodies}
    finally:
        app.state.service.close()


@pytest.mark.parametrize("method, path, query, body, status", CASES, ids=[f"{c[0]} {c[1]} {c[2]}" for c in CASES])
def test_other_tenant_cannot_reach_alices_objects(world, method, path, query, body, status):
    response = world["bob_http"].request(method, _fill(path, world),
                                         params={k: _fill(v, world) for k, v in query.items()},
                                         content=world["bodies"][body] if body else None,
                                         headers=OCTET if body else {})
    assert response.status_code == status, response.text
    if status >= 400:
        assert response.json()["error"]["code"] == {403: "forbidden", 404: "not_found"}[status], response.text
    unsent = {secret for secret in _private(world) if secret not in str(response.request.url)}  # echoed ids aside
    assert not any(secret in response.text for secret in unsent), response.text
    assert _view(world["alice_http"]) == world["alice_view"]  # nothing of alice's changed


def test_every_route_with_an_id_has_a_case(world):
    covered = {(method, re.sub(r"\{(alice|bob)\.\w+\}", "{}", path)) for method, path, *_ in CASES}
    for path, operations in world["app"].openapi()["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] in ("path", "query")}
            if "{" not in path and not names & {"plan_id", "keyset_id"}:
                continue
            template = re.sub(r"\{\w+\}", "{}", path).replace("/operands/{}", "/operands/W")
            assert (method.upper(), template) in covered, f"no isolation case for {method.upper()} {path}"


def test_lists_show_only_the_tenants_own_objects(world):
    for path in LISTS:
        response = world["bob_http"].get(path)
        assert response.status_code == 200 and not any(secret in response.text for secret in _private(world)), path
    assert {job["id"] for job in world["bob_http"].get("/jobs").json()} == {world["bob"]["job_id"]}


def test_guessed_ids_answer_like_missing_ones(world):
    """Near misses and patterns of alice's ids answer exactly like a fresh random id (nothing to enumerate)."""
    bob = world["bob_http"]
    for kind, route in (("keyset_id", "/keysets/{}"), ("plan_id", "/plans/{}"), ("job_id", "/jobs/{}"),
                        ("model_job_id", "/jobs/{}")):
        real = world["alice"][kind]
        missing = bob.get(route.format(uuid.uuid4().hex))
        guesses = [real, real.upper(), real[:-1] + format((int(real[-1], 16) + 1) % 16, "x"), real[:8], real + "0",
                   "%", "_" * 32, "*", "1", "0" * 32, f"{real}' OR '1'='1"]
        for guess in guesses:
            response = bob.get(route.format(quote(guess, safe="")))
            assert response.status_code == missing.status_code == 404, (guess, response.text)
            assert response.json()["error"]["code"] == "not_found"
            message = response.json()["error"]["message"].replace(repr(guess), "ID")
            assert message == missing.json()["error"]["message"].replace(repr(missing.url.path.rsplit("/", 1)[1]), "ID")


def test_server_made_ids_are_random(world):
    """Every id the server makes is a random (version 4) UUID: 122 random bits, nothing sequential to walk."""
    ids = [v for tenant in ("alice", "bob") for k, v in world[tenant].items() if k != "name"]
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", value) and uuid.UUID(value).version == 4, value
