"""Admission and decoder bounds (issue 18): refusals from headers alone, and decoders that refuse before allocating.

The ASGI-level tests call the app with a `receive` that fails the test if called: a refusal must come before a
single body byte is read. Decoder tests measure the peak of Python allocations (tracemalloc) while refusing.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import bz2
import gzip
import io
import json
import tarfile
import tracemalloc
import zipfile

import httpx
import msgpack
import numpy as np
import pytest
from server_helpers import SLOTS, TOKENS, assert_error, auth, call, keyset_body, npy

from server.codecs import decode_tensor_list
from server.errors import CODES, ServiceError
from server.model_archive import read_model_upload

pytestmark = pytest.mark.anyio

_MIB = 1 << 20


async def asgi_status(app, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    """Send a request straight to the ASGI app, with a body that must never be read; its status and JSON body."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("einfhe", 80), "client": ("127.0.0.1", 1),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    sent = []

    async def receive():
        raise AssertionError("the body was read before the request was refused")

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.mark.parametrize("method, path, headers, status, code", [
    # no token: 401 before a 256 MiB text body is read (it was read whole, RSS 80 -> 850 MiB)
    ("POST", "/plans", {"content-type": "text/plain", "content-length": str(256 * _MIB)}, 401, "unauthorized"),
    ("POST", "/jobs", {"content-type": "application/octet-stream", "content-length": str(_MIB),
                       "authorization": "Bearer not-a-token-0123456789"}, 401, "unauthorized"),
    ("PUT", "/operands/W", {"content-length": "10", "authorization": "Bearer " + "x" * 20_000}, 431,
     "headers_too_large"),
    ("POST", "/plans", {"content-type": "text/plain", "content-length": "100", "authorization": "Bearer alice"},
     415, "unsupported_media_type"),
    ("POST", "/plans", {"content-type": "application/json", "content-length": str(2 * _MIB),
                        "authorization": "Bearer alice"}, 413, "payload_too_large"),
    ("PUT", "/operands/W", {"content-type": "application/octet-stream", "content-length": str(65 * _MIB),
                            "authorization": "Bearer alice"}, 413, "payload_too_large"),
    ("POST", "/models", {"content-type": "application/msgpack", "content-length": str(65 * _MIB),
                         "authorization": "Bearer alice"}, 413, "payload_too_large"),
    ("POST", "/models/x/infer", {"content-type": "application/zip", "content-length": "100",
                                 "authorization": "Bearer alice"}, 415, "unsupported_media_type"),
    ("POST", "/nowhere", {"content-type": "application/octet-stream", "content-length": str(2 * _MIB),
                          "authorization": "Bearer alice"}, 413, "payload_too_large"),
])
async def test_refused_from_headers_before_the_body_is_read(app, method, path, headers, status, code):
    headers = {k: v.replace("Bearer alice", f"Bearer {TOKENS['alice']}") for k, v in headers.items()}
    got, body = await asgi_status(app, method, path, headers)
    assert (got, body["error"]["code"]) == (status, code), body
    assert CODES[code] == status


def test_msgpack_job_body_of_many_tiny_parts_is_refused_before_allocating_them():
    body = msgpack.packb([b"ab"] * 1_000_000)  # 4 MB; unpacked whole it made a million bytes objects (~60 MB)
    tracemalloc.start()
    with pytest.raises(ServiceError) as refused:
        decode_tensor_list(body, "application/msgpack")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert refused.value.code == "malformed_blob"
    assert peak < _MIB, peak


def test_msgpack_model_upload_of_many_entries_is_refused_before_allocating_them():
    body = msgpack.packb({f"k{i}": b"" for i in range(200_000)})
    tracemalloc.start()
    with pytest.raises(ServiceError) as refused:
        read_model_upload(body, "application/msgpack", 64 * _MIB)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert refused.value.code == "malformed_blob"  # what every upload that is no valid msgpack gets
    assert peak < _MIB, peak


def _tar_header(name: bytes, size: int, kind: bytes) -> bytes:
    """One 512-byte ustar header block declaring `size` bytes of type `kind`, with its checksum."""
    info = tarfile.TarInfo(name.decode())
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.USTAR_FORMAT)


@pytest.mark.parametrize("kind, compress", [(tarfile.GNUTYPE_LONGNAME, bz2.compress),
                                            (tarfile.XHDTYPE, gzip.compress),
                                            (tarfile.GNUTYPE_LONGNAME, lambda b: b)])
def test_tar_with_a_huge_long_name_or_pax_record_is_refused_at_its_header(kind, compress):
    # the header declares a 1 GiB record; 1 MiB of it follows (tarfile would read the whole declared size)
    body = compress(_tar_header(b"././@LongLink", 1 << 30, kind) + bytes(_MIB))
    tracemalloc.start()
    with pytest.raises(ServiceError) as refused:
        read_model_upload(body, "application/x-tar", 64 * _MIB)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert refused.value.code == "malformed_model" and "long name or pax" in refused.value.message
    assert peak < 4 * _MIB, peak


def test_a_compressed_tar_unpacking_past_the_cap_is_refused():
    body = gzip.compress(_tar_header(b"model.npz", 3 * _MIB, tarfile.REGTYPE) + bytes(3 * _MIB))
    with pytest.raises(ServiceError) as refused:
        read_model_upload(body, "application/gzip", _MIB)
    assert refused.value.code == "payload_too_large"


def test_zip_with_too_many_members_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(200):
            archive.writestr(f"m{i}", b"")
    with pytest.raises(ServiceError) as refused:
        read_model_upload(buffer.getvalue(), "application/zip", _MIB)
    assert refused.value.code == "malformed_model" and "members" in refused.value.message


def _npy_declaring(shape: tuple[int, ...], dtype: str = "<f8", data: bytes = b"\x00" * 64) -> bytes:
    """A .npy version 1.0 body whose header declares `shape` over `data`."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


@pytest.mark.parametrize("shape", [(10**6, 10**6), (8,), (3, 3)])
async def test_npy_declaring_another_size_than_it_holds_is_malformed(app, shape):
    # np.load allocated the declared 10^6 x 10^6 float64 (a 500); 8 float64 are exactly the 64 bytes sent
    body = _npy_declaring(shape)
    response = await call(app, "PUT", "/operands/big", content=body,
                          headers={"Content-Type": "application/octet-stream"})
    if shape == (8,):  # exactly 64 bytes of float64: accepted
        assert response.status_code == 200, response.text
    else:
        assert_error(response, 400, "malformed_blob")


async def test_operands_keep_their_dtype_and_deleting_removes_the_blob(app, matvec):
    store = app.state.service.store
    W8 = np.random.default_rng(1).integers(-128, 127, size=(4, 8), dtype=np.int8)
    response = await call(app, "PUT", "/operands/W", content=npy(W8))
    assert response.status_code == 200, response.text
    row = response.json()
    assert row["dtype"] == "int8" and row["size"] < W8.size + 200  # one byte a value, plus the .npy header
    blob = store.blob_path("operands", f"{store.get('operands', 'alice', name='W')['digest']}.npy")
    assert np.array_equal(np.load(blob), W8)
    # bob registers the same values (one shared blob): alice's delete keeps it, bob's removes it
    assert (await call(app, "PUT", "/operands/V", "bob", content=npy(W8))).status_code == 200
    assert (await call(app, "DELETE", "/operands/W")).status_code == 204
    assert blob.exists()
    assert (await call(app, "DELETE", "/operands/V", "bob")).status_code == 204
    assert not blob.exists()
    # replacing an operand's values removes the old blob
    await call(app, "PUT", "/operands/W", content=npy(W8))
    assert (await call(app, "PUT", "/operands/W", content=npy(W8 + 1))).status_code == 200
    assert not blob.exists()


async def test_an_int8_operand_computes_as_its_values(app, matvec):
    """int8 weights are stored as int8 and the worker computes with their float values (no int8 overflow)."""
    ctx = matvec["ctx"]
    W8 = np.full((4, 8), 100, dtype=np.int8)  # products and sums overflow int8 many times over
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe",
                                 headers=auth("alice"), timeout=60) as http:
        assert (await http.put("/operands/W", content=npy(W8))).status_code == 200
        plan = await http.post("/plans", json={"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}],
                                               "slots": SLOTS, "params": matvec["params"].to_json()})
        keys = await http.post("/keysets", content=keyset_body(ctx),
                               headers={"Content-Type": "application/octet-stream"})
        tensor = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matvec["x"], matvec["plan"].input_layout(1)))
        job = await http.post("/jobs", content=tensor, headers={"Content-Type": "application/octet-stream"},
                              params={"plan_id": plan.json()["id"], "keyset_id": keys.json()["id"], "wait": 30})
        assert job.status_code == 200, job.text
    y = einfhe.decrypt(ctx, einfhe.tensor_from_bytes(ctx, job.content))
    expected = W8.astype(np.float64) @ matvec["x"]
    np.testing.assert_allclose(y, expected, atol=1e-6 * np.abs(expected).max())
