"""Hostile input (issue 8): over 1,000 mutated and random blobs sent to every endpoint that takes a body.

Bit flips, truncations, extensions, random bytes, wrong content types, a valid header over a garbage payload and
another endpoint's blob kind go to key sets, operands, plans, jobs, models, model jobs and plaintext inference,
in-process over httpx.ASGITransport with a fixed seed. Every refusal is a 4xx with a JSON error code and nothing
answers 5xx. Key and tensor blobs carry a CRC-32 (einfhe.crypto.blobs), so no damaged key set or ciphertext is accepted
and none reaches OpenFHE: no worker crashes. A sender who forges blobs can recompute the checksum; such forged
key sets and ciphertexts are sent too (50), and may be accepted (201/202): every job queued, forged or not, must end,
succeeded or failed with a job error code. Afterwards a correct encrypted einsum still runs and decrypts right.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import asyncio
import json
import random
import time

import httpx
import msgpack
import numpy as np
import pytest
from archives import tar_of, zip_of
from server_helpers import SLOTS, auth, keyset_body, npy

from einfhe.crypto.blobs import HEADER_SIZE, pack_blob, pack_parts
from server import create_app
from server.errors import CODES, JOB_CODES

pytestmark = pytest.mark.anyio

SEED = 8
CONTENT_TYPES = ("application/octet-stream", "application/msgpack", "application/x-tar", "application/zip",
                 "application/json", "text/plain", "multipart/form-data; boundary=x", "", "application/gzip",
                 "image/png", "application/x-msgpack; charset=utf-8")


def mutations(rng: random.Random, good: bytes, others: list[bytes], n: int):
    """`n` hostile variants of the valid blob `good` (others: valid blobs of other kinds)."""
    header = good[:min(len(good), 48)]
    for i in range(n):
        kind = i % 8
        data = bytearray(good)
        if kind == 0:  # one to eight bit flips anywhere
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:  # bit flips in the header / envelope
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(min(len(data), 64))
                data[pos] ^= 1 << rng.randrange(8)
        elif kind == 2:  # truncation
            data = data[:rng.randrange(len(data))]
        elif kind == 3:  # extension with random bytes
            data += rng.randbytes(rng.randint(1, 256))
        elif kind == 4:  # random bytes
            data = bytearray(rng.randbytes(rng.choice((0, 1, 7, 64, 1000, 5000))))
        elif kind == 5:  # a valid header over a garbage payload
            data = bytearray(header + rng.randbytes(rng.randint(0, 2000)))
        elif kind == 6:  # another endpoint's blob kind
            data = bytearray(rng.choice(others))
        else:  # a byte range overwritten with random bytes
            start = rng.randrange(len(data))
            end = min(len(data), start + rng.randint(1, 64))
            data[start:end] = rng.randbytes(end - start)
        yield bytes(data)


def forged(rng: random.Random, good: bytes, kind: str, n: int):
    """`n` copies of `good` with one to eight bits of the payload flipped and the checksum recomputed."""
    for _ in range(n):
        payload = bytearray(good[HEADER_SIZE:])
        for _ in range(rng.randint(1, 8)):
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        yield pack_blob(kind, good[8:24], bytes(payload))


async def test_hostile_blobs_get_4xx_and_the_service_still_computes(settings, matvec, model_files):
    app = create_app(settings.model_copy(update={"operators": ["alice"]}))
    rng = random.Random(SEED)
    ctx, W, x = matvec["ctx"], matvec["W"], matvec["x"]
    started = time.monotonic()
    statuses: dict[str, dict[int, int]] = {}
    outcomes: dict[str, int] = {}
    queued_jobs: list[str] = []
    damaged_accepted = {"keysets": 0, "jobs": 0}  # accepted bodies that are no valid blob
    sent = 0
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe",
                                     headers=auth("alice"), timeout=30) as http:

            async def send(method, path, content, content_type, accept=(), **kwargs):
                nonlocal sent
                headers = {"Content-Type": content_type} if content_type else {}
                response = await http.request(method, path, content=content, headers=headers, **kwargs)
                sent += 1
                route = path if path.startswith(("/jobs", "/keysets", "/plans")) else "/" + "/".join(
                    p for p in path.split("/")[1:] if p in ("models", "operands", "jobs", "infer"))
                counts = statuses.setdefault(f"{method} {route}", {})
                counts[response.status_code] = counts.get(response.status_code, 0) + 1
                detail = f"{method} {path} [{content_type}] {len(content)} bytes: {response.status_code} {response.text[:300]}"
                assert response.status_code < 500, detail
                if response.status_code in accept:
                    return response
                assert 400 <= response.status_code < 500, detail
                error = response.json()["error"]
                assert error["code"] in CODES and CODES[error["code"]] == response.status_code, detail
                assert isinstance(error["message"], str) and error["message"], detail
                return response

            # valid objects to aim at
            assert (await http.put("/operands/W", content=npy(W))).status_code == 200
            plan_body = {"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}], "slots": SLOTS,
                         "params": matvec["params"].to_json()}
            plan = (await http.post("/plans", json=plan_body)).json()
            keys = keyset_body(ctx)
            response = await http.post("/keysets", content=keys, headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 201, response.text
            keyset_id = response.json()["id"]
            tensor = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, x, matvec["plan"].input_layout(1)))
            model_tar = tar_of({f"export/{k}": v for k, v in model_files.items()})
            response = await http.post("/models", content=model_tar, headers={"Content-Type": "application/x-tar"},
                                       params={"name": "mlp", "slots": SLOTS, "insecure_test_params": True})
            assert response.status_code == 201, response.text
            model = response.json()
            operand = npy(np.random.default_rng(SEED).random((3, 5)))
            sample = npy(np.random.default_rng(SEED).random(6))
            model_zip = zip_of(model_files)
            model_msgpack = msgpack.packb(model_files, use_bin_type=True)
            garbage_payload = pack_blob("tensor", matvec["params"].fingerprint(),
                                        pack_parts({"layout": "nonsense"}, [b"\x00" * 64]))
            others = [keys, tensor, operand, model_tar, model_zip, model_msgpack, garbage_payload,
                      json.dumps(plan_body).encode(), msgpack.packb([tensor, tensor]), b"", b"\x00"]

            valid = set(others)
            # key sets: 150 (a blob whose envelope and checksum survive goes to a worker, which checks the keys)
            for blob in mutations(rng, keys, others, 150):
                response = await send("POST", "/keysets", blob, rng.choice(CONTENT_TYPES[:2]), accept=(201,))
                damaged_accepted["keysets"] += response.status_code == 201 and blob not in valid
            # plaintext operands: 200
            for i, blob in enumerate(mutations(rng, operand, others, 200)):
                await send("PUT", f"/operands/fuzz{i % 7}", blob, rng.choice(CONTENT_TYPES), accept=(200,))
            # plans (JSON bodies): 60, mutated JSON and other blobs
            plan_json = json.dumps(plan_body).encode()
            for blob in mutations(rng, plan_json, others, 60):
                await send("POST", "/plans", blob, rng.choice(("application/json", "application/octet-stream")),
                           accept=(201,))
            # ciphertexts for an einsum job: 250, single tensors and msgpack lists
            job_query = {"plan_id": plan["id"], "keyset_id": keyset_id}
            for i, blob in enumerate(mutations(rng, tensor, others, 250)):
                media, body = "application/octet-stream", blob
                if i % 5 == 4:
                    body, media = msgpack.packb([blob]), "application/msgpack"
                elif i % 11 == 10:
                    media = rng.choice(CONTENT_TYPES[2:])
                response = await send("POST", "/jobs", body, media, accept=(202,), params=job_query)
                if response.status_code == 202:
                    queued_jobs.append(response.json()["id"])
                    damaged_accepted["jobs"] += blob not in valid
            # models: 50 each of tar / zip / msgpack uploads mutated (each refused before any compile, or registered)
            for good, media in ((model_tar, "application/x-tar"), (model_zip, "application/zip"),
                                (model_msgpack, "application/msgpack")):
                for blob in mutations(rng, good, others, 50):
                    await send("POST", "/models", blob, rng.choice((media, media, media, rng.choice(CONTENT_TYPES))),
                               accept=(201,), params={"name": "fuzz", "slots": SLOTS, "insecure_test_params": True})
            # ciphertexts for a model job: 100, mutated from a valid input under the model program's own keys
            program = model["programs"]["single"]
            model_plan = einfhe.Plan.from_json(json.dumps(program["plan"]))
            model_ctx = einfhe.Context.for_plan(model_plan, params=einfhe.Parameters.from_json(program["params"]))
            response = await http.post("/keysets", content=keyset_body(model_ctx),
                                       headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 201, response.text
            model_keyset_id = response.json()["id"]
            model_op = model_plan.cipher_inputs[0]
            model_input = einfhe.tensor_to_bytes(model_ctx, einfhe.encrypt(model_ctx, np.zeros(model_op.layout.shape),
                                                                          model_op.layout))
            valid.add(model_input)
            for blob in mutations(rng, model_input, others + [tensor], 100):
                response = await send("POST", f"/models/{model['id']}/jobs", blob, "application/octet-stream",
                                      accept=(202,), params={"keyset_id": model_keyset_id})
                if response.status_code == 202:
                    queued_jobs.append(response.json()["id"])
                    damaged_accepted["jobs"] += blob not in valid
            # plaintext inference: 100
            for blob in mutations(rng, sample, others, 100):
                await send("POST", f"/models/{model['id']}/infer", blob, rng.choice(CONTENT_TYPES[:3]), accept=(200,))

            assert sent >= 1000, sent
            # forged: damaged, then resealed with a correct checksum (25 key sets, 25 ciphertexts)
            forged_jobs, forged_keysets = [], {}
            for blob in forged(rng, keys, "evaluation_keys", 25):
                response = await send("POST", "/keysets", blob, "application/octet-stream", accept=(201,))
                code = response.status_code if response.status_code == 201 else response.json()["error"]["code"]
                forged_keysets[code] = forged_keysets.get(code, 0) + 1
            for blob in forged(rng, tensor, "tensor", 25):
                response = await send("POST", "/jobs", blob, "application/octet-stream", accept=(202,),
                                      params=job_query)
                if response.status_code == 202:
                    forged_jobs.append(response.json()["id"])

            async def ending(job_id: str) -> str:
                """The job's final status, or its error code when it failed."""
                for _ in range(300):
                    job = (await http.get(f"/jobs/{job_id}", params={"wait": 0.5})).json()
                    if job["status"] in ("succeeded", "failed"):
                        break
                else:
                    raise AssertionError(f"job {job_id} never finished: {job}")
                if job["status"] == "failed":
                    assert job["error"]["code"] in JOB_CODES, job
                return job["error"]["code"] if job["status"] == "failed" else job["status"]

            # every job queued ends, with a job error code when it fails
            for job_id in queued_jobs:
                key = await ending(job_id)
                outcomes[key] = outcomes.get(key, 0) + 1
            forged_outcomes: dict[str, int] = {}
            for job_id in forged_jobs:
                key = await ending(job_id)
                forged_outcomes[key] = forged_outcomes.get(key, 0) + 1

            # and the service still computes correctly
            response = await http.post("/jobs", content=tensor, params={**job_query, "wait": 30},
                                       headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 200, response.text
            y = einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, response.content))
            np.testing.assert_allclose(y, W @ x, atol=1e-6)
    finally:
        app.state.service.close()
    elapsed = time.monotonic() - started
    print(f"\nhostile input: {sent} requests in {elapsed:.1f} s; {len(queued_jobs)} mutated jobs queued, ending {outcomes}; "
          f"damaged blobs accepted: {damaged_accepted}")
    print(f"  forged (checksum recomputed): key sets {forged_keysets}; {len(forged_jobs)} jobs queued, ending "
          f"{forged_outcomes}")
    for route, counts in statuses.items():
        print(f"  {route}: {dict(sorted(counts.items()))}")
    assert damaged_accepted == {"keysets": 0, "jobs": 0}, damaged_accepted
    assert "worker_crashed" not in outcomes, outcomes
    assert elapsed < 40, elapsed


async def test_torn_npy_header_is_malformed_blob(app):
    """A .npy whose header dict never closes made numpy's tokenizer raise TokenError: it was a 500."""
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (3, \n"
    body = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 24
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe") as http:
        response = await http.put("/operands/torn", content=body, headers=auth("alice"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed_blob"
