"""Model uploads over a real server: tar, zip and msgpack accepted; malformed, unsafe or oversize ones answered 4xx."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import io
import itertools
import json

import msgpack
import numpy as np
import pytest
from archives import tar_of, zip_of
from client_helpers import SLOTS, TOKENS, write_integer_model

from client import Client, ServerError
from server import LocalServer, Settings

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """A valid export's two files."""
    directory = tmp_path_factory.mktemp("export")
    write_integer_model(directory, np.random.default_rng(0))
    return {name: (directory / name).read_bytes() for name in ("manifest.json", "model.npz")}


@pytest.fixture(scope="module")
def operator(tmp_path_factory):
    """The operator's client on a server that caps model uploads at LIMIT bytes."""
    tmp = tmp_path_factory.mktemp("uploads")
    token_file = tmp / "tokens.txt"
    token_file.write_text("".join(f"{t}:{k}\n" for t, k in TOKENS.items()))
    settings = Settings(data_dir=tmp / "data", token_file=token_file, workers=1, allow_insecure_test_params=True,
                        max_model_bytes=LIMIT)
    with LocalServer(settings) as url, Client(url, TOKENS["operator"], progress=False, retries=0) as client:
        yield client


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _manifest(files: dict[str, bytes], **changes) -> bytes:
    manifest = json.loads(files["manifest.json"])
    manifest.update(changes)
    return json.dumps(manifest).encode()


_NAMES = itertools.count()  # a model name names one model: every upload here gets its own


def _post(client: Client, body: bytes, media: str, **params):
    query = {"name": f"m{next(_NAMES)}", "slots": SLOTS, "insecure_test_params": True, **params}
    return client.http.request("POST", "/models", params=query, content=body, headers={"Content-Type": media})


@pytest.mark.parametrize("archive, media", [
    (lambda f: tar_of(f, "gz"), "application/gzip"),
    (lambda f: tar_of({f"export/{k}": v for k, v in f.items()}, "gz"), "application/x-tar"),
    (lambda f: zip_of(f), "application/zip"),
    (lambda f: msgpack.packb({"manifest.json": f["manifest.json"].decode(), "model.npz": f["model.npz"]}),
     "application/msgpack"),
])
def test_valid_uploads_are_registered(operator, files, archive, media):
    model = _post(operator, archive(files), media).json()
    assert model["n_features"] == 8 and set(model["programs"]) == {"single", "batch"}


def _per_token_activations(files):
    """A valid W4A8-style layer: activations rounded per token, which no CKKS circuit computes."""
    manifest = json.loads(files["manifest.json"])
    manifest["layers"][0]["activation"].update(bits=8, scheme="per_token_symmetric")
    return tar_of({**files, "manifest.json": json.dumps(manifest).encode()}, "gz")


def _missing_array(files):
    manifest = json.loads(files["manifest.json"])
    manifest["layers"][0]["arrays"]["weight"] = "nowhere"
    return tar_of({**files, "manifest.json": json.dumps(manifest).encode()}, "gz")


@pytest.mark.parametrize("archive, media, status, code", [
    (lambda f: b"\x1f\x8b not really gzip", "application/gzip", 400, "malformed_model"),
    (lambda f: tar_of({"../manifest.json": f["manifest.json"], "model.npz": f["model.npz"]}, "gz"), "application/gzip",
     400, "malformed_model"),
    (lambda f: tar_of({"manifest.json": f["manifest.json"]}, "gz", links=("model.npz",)), "application/gzip",
     400, "malformed_model"),
    (lambda f: tar_of({"manifest.json": f["manifest.json"]}, "gz"), "application/gzip", 400, "malformed_model"),
    (lambda f: tar_of({**f, "run_me.py": b"import os"}, "gz"), "application/gzip", 400, "malformed_model"),
    (lambda f: zip_of({**f, "a/b/model.npz": f["model.npz"]}), "application/zip", 400, "malformed_model"),
    (lambda f: tar_of({**f, "manifest.json": b"{not json"}, "gz"), "application/gzip", 400, "malformed_model"),
    (lambda f: tar_of({**f, "manifest.json": _manifest(f, format="pickle")}, "gz"), "application/gzip",
     400, "malformed_model"),
    (lambda f: tar_of({**f, "manifest.json": _manifest(f, layers="linear")}, "gz"), "application/gzip",
     400, "malformed_model"),
    (lambda f: tar_of({**f, "model.npz": _npz(x=np.array([{"a": 1}], dtype=object))}, "gz"), "application/gzip",
     400, "malformed_model"),
    (lambda f: tar_of({**f, "model.npz": b"PK not a zip"}, "gz"), "application/gzip", 400, "malformed_model"),
    (_missing_array, "application/gzip", 400, "malformed_model"),
    (_per_token_activations, "application/gzip", 400, "unsupported_model"),
    (lambda f: msgpack.packb({"manifest.json": f["manifest.json"]}), "application/msgpack", 400, "malformed_model"),
    (lambda f: msgpack.packb([1, 2]), "application/msgpack", 400, "malformed_model"),
    (lambda f: tar_of(f, "gz"), "text/plain", 415, "unsupported_media_type"),
    (lambda f: b"\0" * (LIMIT + 1), "application/x-tar", 413, "payload_too_large"),
    (lambda f: tar_of({**f, "model.npz": _npz(x=np.zeros(LIMIT))}, "gz"), "application/gzip", 413, "payload_too_large"),
])
def test_bad_uploads_are_refused(operator, files, archive, media, status, code):
    registered = len(operator.http.request("GET", "/models").json())
    with pytest.raises(ServerError) as info:
        _post(operator, archive(files), media)
    assert (info.value.status, info.value.code) == (status, code)
    assert len(operator.http.request("GET", "/models").json()) == registered


def test_slots_must_be_a_power_of_two(operator, files):
    with pytest.raises(ServerError) as info:
        _post(operator, tar_of(files, "gz"), "application/gzip", slots=48)
    assert (info.value.status, info.value.code) == (400, "invalid_parameters")


def test_insecure_parameters_refused_unless_allowed(tmp_path, files):
    token_file = tmp_path / "tokens.txt"
    token_file.write_text(f"operator:{TOKENS['operator']}\n")
    with LocalServer(Settings(data_dir=tmp_path / "data", token_file=token_file, workers=1)) as url:
        with Client(url, TOKENS["operator"], progress=False) as client:
            with pytest.raises(ServerError) as info:
                _post(client, tar_of(files, "gz"), "application/gzip")
            assert client.http.request("GET", "/models").json() == []
    assert (info.value.status, info.value.code) == (400, "insecure_parameters")
