"""Clients that share their results: `noise_flooding=True` over a real server, for an einsum and a model."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import json

import numpy as np
from client_helpers import SLOTS, TOKENS, model_tolerance, reference, write_integer_model

from client import Client, EncryptedModel
from einfhe import NoiseFlooding
from einfhe.params.precision import error_bound


def _keysets(client: Client) -> int:
    return len(client.http.request("GET", "/keysets").json())


def test_flooded_einsum_measures_once_then_reuses_its_keys(live_server):
    rng = np.random.default_rng(5)
    W, xs = rng.standard_normal((4, 8)), rng.uniform(-1, 1, (3, 8))
    depth = einfhe.compile("ij,j->i", W, einfhe.cipher((8,)), slots=SLOTS).depth
    params = einfhe.Parameters.for_noise_flooding(depth, SLOTS, secure=False)
    with Client(live_server, TOKENS["alice"], progress=False, noise_flooding=True) as client:
        client.register_operand("W", W)
        first = client.einsum("ij,j->i", "W", xs[0], slots=SLOTS, params=params)
        assert _keysets(client) == 2  # the noise-measuring key set, then the flooding one
        later = [client.einsum("ij,j->i", "W", x, slots=SLOTS, params=params) for x in xs[1:]]
        assert _keysets(client) == 2
        plan = client.plan("ij,j->i", "W", xs[0], slots=SLOTS, params=params)
        ctx, _ = client._flooded[plan.id]
    flooding = ctx.backend.flooding
    assert isinstance(flooding, NoiseFlooding) and not flooding.measuring
    ckks = error_bound(params, float(np.abs(W).max()), W.shape[1], 1, plan.plan.keyswitches)
    for x, y in zip(xs, [first, *later]):
        np.testing.assert_allclose(y, W @ x, atol=ckks + flooding.slot_error(params.ring_dim), rtol=0)


def test_flooded_model_inference_on_a_model_registered_for_flooding(live_server, tmp_path):
    real = write_integer_model(tmp_path / "export", np.random.default_rng(6))
    x = np.random.default_rng(7).uniform(-1, 1, 8)
    with Client(live_server, TOKENS["operator"], progress=False) as operator:
        info = operator.register_model("tiny", tmp_path / "export", slots=SLOTS, insecure_test_params=True,
                                       noise_flooding=True)
    program = info["programs"]["single"]
    params = einfhe.Parameters.from_json(program["params"])
    assert (params.scale_bits, params.first_mod_bits, params.depth) == (59, 60, program["depth"] + 1)
    with EncryptedModel(live_server, "tiny", token=TOKENS["bob"], progress=False, noise_flooding=True) as model:
        y = model.infer(x)
        ctx, _ = next(iter(model.client._flooded.values()))
    plan = einfhe.Plan.from_json(json.dumps(program["plan"]))
    # the flooding error of each decrypted slot, carried through the output scales the client applies after it
    flooded = ctx.backend.flooding.slot_error(params.ring_dim) * np.abs(program["output_scale"]).max()
    np.testing.assert_allclose(y, reference(real, x), atol=model_tolerance(params, real, x, plan.keyswitches) + flooded,
                               rtol=0)
