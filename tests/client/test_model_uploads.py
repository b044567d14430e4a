"""Model uploads over a real server: tar, zip and msgpack accepted; malformed, unsafe or oversize ones answered 4xx."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import io
import itertools
import json
import tarfile
import zipfile

import msgpack
import numpy as np
import pytest
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


def _tar(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


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
    (lambda f: _tar(f), "application/gzip"),
    (lambda f: _tar({f"export/{k}": v for k, v in f.items()}), "application/x-tar"),
    (lambda f: _zip(f), "application/zip"),
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
    return _tar({**files, "manifest.json": json.dumps(manifest).encode()})


def _missing_array(files):
    manifest = json.loads(files["manifest.json"])
    manifest["layers"][0]["arrays"]["weight"] = "nowhere"
    return _tar({**files, "manifest.json": json.dumps(manifest).encode()})


@pytest.mark.parametrize("archive, media, status, code", [
    (lambda f: b"\x1f\x8b not really gzip", "application/gzip", 400, "malformed_model"),
    (lambda f: _tar({"../manifest.json": f["manifest.json"], "model.npz": f["model.npz"]}), "application/gzip",
     400, "malformed_model"),
    (lambda f: _tar({"manifest.json": f["manifest.json"]}, links=("model.npz",)), "application/gzip",
     400, "malformed_model"),
    (lambda f: _tar({"manifest.json": f["manifest.json"]}), "application/gzip", 400, "malformed_model"),
    (lambda f: _tar({**f, "run_me.py": b"import os"}), "application/gzip", 400, "malformed_model"),
    (lambda f: _zip({**f, "a/b/model.npz": f["model.npz"]}), "application/zip", 400, "malformed_model"),
    (lambda f: _tar({**f, "manifest.json": b"{not json"}), "application/gzip", 400, "malformed_model"),
    (lambda f: _tar({**f, "manifest.json": _manifest(f, format="pickle")}), "application/gzip",
     400, "malformed_model"),
    (lambda f: _tar({**f, "manifest.json": _manifest(f, layers="linear")}), "application/gzip",
     400, "malformed_model"),
    (lambda f: _tar({**f, "model.npz": _npz(x=np.array([{"a": 1}], dtype=object))}), "application/gzip",
     400, "malformed_model"),
    (lambda f: _tar({**f, "model.npz": b"PK not a zip"}), "application/gzip", 400, "malformed_model"),
    (_missing_array, "application/gzip", 400, "malformed_model"),
    (_per_token_activations, "application/gzip", 400, "unsupported_model"),
    (lambda f: msgpack.packb({"manifest.json": f["manifest.json"]}), "application/msgpack", 400, "malformed_model"),
    (lambda f: msgpack.packb([1, 2]), "application/msgpack", 400, "malformed_model"),
    (lambda f: _tar(f), "text/plain", 415, "unsupported_media_type"),
    (lambda f: b"\0" * (LIMIT + 1), "application/x-tar", 413, "payload_too_large"),
    (lambda f: _tar({**f, "model.npz": _npz(x=np.zeros(LIMIT))}), "application/gzip", 413, "payload_too_large"),
])
def test_bad_uploads_are_refused(operator, files, archive, media, status, code):
    registered = len(operator.http.request("GET", "/models").json())
    with pytest.raises(ServerError) as info:
        _post(operator, archive(files), media)
    assert (info.value.status, info.value.code) == (status, code)
    assert len(operator.http.request("GET", "/models").json()) == registered


def test_slots_must_be_a_power_of_two(operator, files):
    with pytest.raises(ServerError) as info:
        _post(operator, _tar(files), "application/gzip", slots=48)
    assert (info.value.status, info.value.code) == (400, "invalid_parameters")


def test_insecure_parameters_refused_unless_allowed(tmp_path, files):
    token_file = tmp_path / "tokens.txt"
    token_file.write_text(f"operator:{TOKENS['operator']}\n")
    with LocalServer(Settings(data_dir=tmp_path / "data", token_file=token_file, workers=1)) as url:
        with Client(url, TOKENS["operator"], progress=False) as client:
            with pytest.raises(ServerError) as info:
                _post(client, _tar(files), "application/gzip")
            assert client.http.request("GET", "/models").json() == []
    assert (info.value.status, info.value.code) == (400, "insecure_parameters")
