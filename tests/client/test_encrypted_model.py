"""Models over a real uvicorn server on loopback: registration, EncryptedModel.infer encrypted and plaintext."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import json

import numpy as np
import pytest
from client_helpers import SLOTS, TOKENS, model_tolerance, reference, write_integer_model

from client import BadRequest, Client, EncryptedModel, Forbidden
from server import LocalServer, Settings


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """A server (one for the module) with a small integer model registered by the operator on the test ring."""
    tmp = tmp_path_factory.mktemp("models")
    token_file = tmp / "tokens.txt"
    token_file.write_text("".join(f"{t}:{k}\n" for t, k in TOKENS.items()))
    real = write_integer_model(tmp / "export", np.random.default_rng(0))
    settings = Settings(data_dir=tmp / "data", token_file=token_file, workers=2, allow_insecure_test_params=True)
    with LocalServer(settings) as url:
        with Client(url, TOKENS["operator"], progress=False) as operator:
            info = operator.register_model("tiny", tmp / "export", slots=SLOTS, insecure_test_params=True)
        yield {"url": url, "info": info, "real": real, "export": tmp / "export"}


def _tolerance(info: dict, real: list, x: np.ndarray, variant: str) -> float:
    program = info["programs"][variant]
    plan = einfhe.Plan.from_json(json.dumps(program["plan"]))
    return model_tolerance(einfhe.Parameters.from_json(program["params"]), real, x, plan.keyswitches)


def test_requirements_are_published_before_any_upload(served_model):
    with Client(served_model["url"], TOKENS["alice"], progress=False) as client:
        info = client.http.request("GET", f"/models/{served_model['info']['id']}").json()
        assert client.http.request("GET", "/keysets").json() == []
    single, batch = info["programs"]["single"], info["programs"]["batch"]
    assert (info["n_features"], info["n_outputs"], info["layers"]) == (8, 3, ["linear:fc0", "act:square", "linear:fc2"])
    for program in (single, batch):
        params = einfhe.Parameters.from_json(program["params"])
        assert (params.slots, params.depth, params.security) == (SLOTS, program["depth"], "INSECURE-TEST-ONLY")
        assert program["fingerprint"] == params.fingerprint().hex()
    assert single["batch"] is None and batch["batch"] == SLOTS and batch["rotations"] == [] and single["rotations"]
    assert batch["depth"] < single["depth"]  # 4-bit layers cost the batched packing no level
    assert einfhe.Layout.from_json(batch["input_layout"]).shape == (8, SLOTS)


def test_encrypted_inference_matches_numpy(served_model):
    rng = np.random.default_rng(1)
    x, X = rng.uniform(-1, 1, 8), rng.uniform(-1, 1, (SLOTS + 5, 8))  # the batch spans two padded requests
    info, real = served_model["info"], served_model["real"]
    with EncryptedModel(served_model["url"], "tiny", token=TOKENS["alice"], progress=False) as model:
        y, Y = model.infer(x), model.infer(X)
    assert y.shape == (3,) and Y.shape == (SLOTS + 5, 3)
    np.testing.assert_allclose(y, reference(real, x), atol=_tolerance(info, real, x, "single"), rtol=0)
    np.testing.assert_allclose(Y, reference(real, X), atol=_tolerance(info, real, X, "batch"), rtol=0)


def test_plaintext_inference_matches_numpy(served_model):
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (7, 8))
    with EncryptedModel(served_model["url"], served_model["info"]["id"], token=TOKENS["bob"]) as model:
        Y, y = model.infer(X, encrypted=False), model.infer(X[0], encrypted=False)
        assert model.client.http.request("GET", "/keysets").json() == []  # plaintext needs no keys
    # the worker runs W4A16 QuantLinear layers, whose format holds the scales in fp16: the reference rounds the
    # written float32 scales the same way, then computes in float64 (the layers' float32 arithmetic: ~1e-6)
    with np.load(served_model["export"] / "model.npz") as arrays:
        scales = [arrays[f"layers.{index}.scale"].astype(np.float64) for index in (0, 2)]
    fp16 = [(W * (s.astype(np.float16).astype(np.float64) / s), b) for (W, b), s in zip(served_model["real"], scales)]
    np.testing.assert_allclose(Y, reference(fp16, X), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, Y[0], rtol=1e-6)  # float32 BLAS may round one row and a batch apart


def test_keys_uploaded_once_for_several_inferences(served_model):
    rng = np.random.default_rng(3)
    with Client(served_model["url"], TOKENS["bob"], progress=False) as bob:
        before = len(bob.http.request("GET", "/jobs").json())
    with EncryptedModel(served_model["url"], "tiny", token=TOKENS["bob"], progress=False) as model:
        model.prepare()
        assert len(model.client.http.request("GET", "/keysets").json()) == 2
        for x in (rng.uniform(-1, 1, 8), rng.uniform(-1, 1, (3, 8)), rng.uniform(-1, 1, 8), rng.uniform(-1, 1, (2, 8))):
            model.infer(x)
        keysets = model.client.http.request("GET", "/keysets").json()
        jobs = model.client.http.request("GET", "/jobs").json()
    # one upload per parameter set (the two programs have different depths), none after
    programs = served_model["info"]["programs"].values()
    assert sorted(k["fingerprint"] for k in keysets) == sorted(p["fingerprint"] for p in programs)
    assert len(jobs) - before == 4
    assert {job["plan_id"].split(".")[-1] for job in jobs[before:]} == {"single", "batch"}


def test_tenants_cannot_register_models(served_model):
    with Client(served_model["url"], TOKENS["alice"], progress=False) as client:
        with pytest.raises(Forbidden) as info:
            client.register_model("mine", served_model["export"], slots=SLOTS, insecure_test_params=True)
    assert info.value.code == "forbidden"


def test_wrongly_encrypted_input_is_refused(served_model):
    model_id = served_model["info"]["id"]
    with EncryptedModel(served_model["url"], model_id, token=TOKENS["alice"], progress=False) as model:
        model.infer(np.zeros(8))  # keys made and uploaded
        ctx, keyset_id = model.client.context_for(model._program("single")[1])
        wrong = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, np.zeros(8)))  # natural layout, not the plan's
        with pytest.raises(BadRequest) as info:
            model.client.http.request("POST", f"/models/{model_id}/jobs", params={"keyset_id": keyset_id},
                                      content=wrong, headers={"Content-Type": "application/octet-stream"})
    assert info.value.code == "malformed_blob"
