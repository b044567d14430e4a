"""docs/wire-format.md is enough to build an upload: an encoder written from the document alone (struct, zlib,
json; no einfhe serialization code) wraps OpenFHE's own ciphertext and key serializations, and the server accepts
and computes on them; the result it sends back is read with the same document."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import hashlib
import json
import struct
import zlib

import httpx
import numpy as np
import openfhe
import pytest
from server_helpers import SLOTS, auth, npy

pytestmark = pytest.mark.anyio

KIND = {"tensor": 2, "evaluation_keys": 3}


def fingerprint(params: dict) -> bytes:
    """Section 1.1: the first 16 bytes of the SHA-256 of the parameters' JSON with sorted keys."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).digest()[:16]


def envelope(kind: str, fp: bytes, header: dict, parts: list[bytes]) -> bytes:
    """Sections 1 and 2: the 36-byte header with its CRC-32, over a JSON header and length-prefixed parts."""
    head = json.dumps(header).encode()
    payload = struct.pack("<II", len(head), len(parts)) + head
    payload += b"".join(struct.pack("<Q", len(part)) + part for part in parts)
    fields = b"EINFHE" + bytes([2, KIND[kind]]) + fp + struct.pack("<Q", len(payload))
    return fields + struct.pack("<I", zlib.crc32(fields + payload)) + payload


def opened(blob: bytes, kind: str) -> tuple[dict, list[bytes]]:
    """Sections 1 and 2 read back: check the header and the CRC-32, split the JSON header and the parts."""
    assert blob[:6] == b"EINFHE" and blob[6] == 2 and blob[7] == KIND[kind]
    (length,), (crc,) = struct.unpack_from("<Q", blob, 24), struct.unpack_from("<I", blob, 32)
    payload = blob[36:]
    assert len(payload) == length and zlib.crc32(blob[:32] + payload) == crc
    head_len, count = struct.unpack_from("<II", payload, 0)
    header, offset, parts = json.loads(payload[8:8 + head_len]), 8 + head_len, []
    for _ in range(count):
        (size,) = struct.unpack_from("<Q", payload, offset)
        parts.append(payload[offset + 8:offset + 8 + size])
        offset += 8 + size
    assert offset == len(payload)
    return header, parts


async def test_a_ciphertext_upload_built_from_the_wire_format_document_is_accepted(app, matvec):
    ctx, W, x = matvec["ctx"], matvec["W"], matvec["x"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe",
                                 headers=auth("alice"), timeout=60) as http:
        assert (await http.put("/operands/W", content=npy(W),
                               headers={"Content-Type": "application/octet-stream"})).status_code == 200
        plan = (await http.post("/plans", json={"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}],
                                                "slots": SLOTS, "params": matvec["params"].to_json()})).json()
        fp = fingerprint(plan["params"])
        assert fp.hex() == plan["fingerprint"]

        backend = ctx.backend  # OpenFHE objects; their bytes come from OpenFHE's own Serialize
        key_parts = {"context": openfhe.Serialize(backend.cc, openfhe.BINARY),
                     "public_key": openfhe.Serialize(backend.public_key, openfhe.BINARY),
                     "mult_key": openfhe.SerializeEvalMultKeyString(openfhe.BINARY, backend.key_tag),
                     "rotation_keys": openfhe.SerializeEvalAutomorphismKeyString(openfhe.BINARY, backend.key_tag)}
        keys = envelope("evaluation_keys", fp, {"params": plan["params"], "rotations": plan["rotations"],
                                                "parts": list(key_parts)}, list(key_parts.values()))
        response = await http.post("/keysets", content=keys, headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 201, response.text

        layout = plan["input_layouts"]["1"]
        encrypted = einfhe.encrypt(ctx, x, einfhe.Layout.from_json(layout))  # packing and encryption: the client's
        tensor = envelope("tensor", fp, {"layout": layout},
                          [openfhe.Serialize(ct, openfhe.BINARY) for ct in encrypted.cts])
        job = await http.post("/jobs", content=tensor, headers={"Content-Type": "application/octet-stream"},
                              params={"plan_id": plan["id"], "keyset_id": response.json()["id"], "wait": 30})
        assert job.status_code == 200, job.text

    header, parts = opened(job.content, "tensor")  # the answer follows the document too
    assert header["layout"] == plan["output_layout"] and len(parts) == plan["cts_out"]
    result = einfhe.tensor_from_bytes(ctx, job.content, for_arithmetic=False)  # decryption is the client's own
    np.testing.assert_allclose(einfhe.decrypt(ctx, result), W @ x, atol=1e-6)
