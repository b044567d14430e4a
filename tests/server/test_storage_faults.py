"""Storage faults (issue 8): an unusable data directory or a full disk at start is one clear line and a non-zero
exit; a disk that fills during a request answers 507 `storage_full` and leaves no partial blob; a blob damaged in an
upload or on disk is refused as `corrupt_blob` before OpenFHE reads it.

A read-only directory made with chmod does not stop root (tests may run as root in CI), so "unwritable" here is a
data directory below a regular file, which refuses every user; a full disk is ENOSPC raised by the OS calls the
store makes (os.write / os.fsync) in this process.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import errno
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from server_helpers import auth, free_port, keyset_body, npy, serve_command

import server.cli
import server.store
from server import create_app

pytestmark = pytest.mark.anyio


def _enospc(*_args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_under(monkeypatch, directory: Path) -> None:
    """Make writes to files under `directory` fill the disk: half the bytes go in, then ENOSPC."""
    real_write = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(directory)):
            if len(data) > 1:
                return real_write(fd, bytes(data[:len(data) // 2]))
            _enospc()
        return real_write(fd, data)

    monkeypatch.setattr(server.store.os, "write", write)


def test_einfhe_serve_on_a_data_dir_below_a_file_says_so_in_one_line_and_exits_1(tmp_path, token_file):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file")
    command, env = serve_command(free_port(), blocker / "data", token_file)
    process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 1 and process.stdout == "", process
    assert len(lines) == 1 and lines[0].startswith("einfhe serve: error: "), lines
    assert str(blocker / "data") in lines[0] and "Not a directory" in lines[0], lines


def test_unusable_data_dirs_and_a_full_disk_at_start(tmp_path, token_file, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    port = str(free_port())
    cases = {"a file": blocker, "below a file": blocker / "data"}
    for what, data_dir in cases.items():
        assert server.cli.main(["--port", port, "--data-dir", str(data_dir), "--token-file", str(token_file)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "storage refused" in err[0] and str(data_dir) in err[0], (what, err)
    monkeypatch.setattr(server.store.os, "fsync", _enospc)  # the start-up probe syncs what it wrote
    assert server.cli.main(["--port", port, "--data-dir", str(tmp_path / "full"), "--token-file", str(token_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "storage is full" in err[0] and "No space left on device" in err[0], err
    assert [p.name for p in (tmp_path / "full" / "blobs" / "inputs").iterdir()] == []  # the probe left nothing


async def test_a_disk_filling_mid_request_answers_507_and_leaves_no_partial_blob(settings, matvec, monkeypatch):
    app = create_app(settings)
    store = app.state.service.store
    blobs = store.data_dir / "blobs"
    keys = keyset_body(matvec["ctx"])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe",
                                     headers=auth("alice")) as http:
            with monkeypatch.context() as patch:
                _full_under(patch, blobs)
                responses = [await http.post("/keysets", content=keys,
                                             headers={"Content-Type": "application/octet-stream"}),
                             await http.put("/operands/W", content=npy(matvec["W"]))]
            for response in responses:
                assert response.status_code == 507, response.text
                assert response.json()["error"]["code"] == "storage_full", response.text
            assert [p for p in blobs.rglob("*") if p.is_file()] == []  # no partial blob, no temporary file
            assert (await http.get("/keysets")).json() == []
            # with room again, the same uploads succeed; a job whose result cannot be written fails storage_full
            response = await http.post("/keysets", content=keys, headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 201, response.text
            assert (await http.put("/operands/W", content=npy(matvec["W"]))).status_code == 200
            plan = (await http.post("/plans", json={"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}],
                                                    "slots": 32, "params": matvec["params"].to_json()})).json()
            ctx = matvec["ctx"]
            tensor = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matvec["x"], matvec["plan"].input_layout(1)))
            with monkeypatch.context() as patch:
                _full_under(patch, blobs / "results")
                response = await http.post("/jobs", content=tensor, params={"plan_id": plan["id"], "wait": 30,
                                                                            "keyset_id": response.json()["id"]},
                                           headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 202, response.text
            job = response.json()
            assert (job["status"], job["error"]["code"]) == ("failed", "storage_full"), job
            assert list((blobs / "results").iterdir()) == []
            assert (await http.get(f"/jobs/{job['id']}/result")).json()["error"]["code"] == "job_failed"
    finally:
        app.state.service.close()


def _flip(blob: bytes, position: int) -> bytes:
    damaged = bytearray(blob)
    damaged[position] ^= 0x10
    return bytes(damaged)


async def test_damaged_uploads_and_blobs_damaged_on_disk_are_corrupt_blob(settings, matvec):
    """One flipped bit in key material or a ciphertext is refused before OpenFHE parses it (einfhe's CRC-32): at
    upload (400 corrupt_blob), and when a stored key set was damaged on disk (the job fails corrupt_blob)."""
    ctx = matvec["ctx"]
    keys = keyset_body(ctx)
    tensor = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matvec["x"], matvec["plan"].input_layout(1)))
    app = create_app(settings)
    octet = {"Content-Type": "application/octet-stream"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe",
                                     headers=auth("alice")) as http:
            response = await http.post("/keysets", content=_flip(keys, len(keys) // 2), headers=octet)
            assert (response.status_code, response.json()["error"]["code"]) == (400, "corrupt_blob"), response.text
            keyset = (await http.post("/keysets", content=keys, headers=octet)).json()
            assert (await http.put("/operands/W", content=npy(matvec["W"]))).status_code == 200
            plan = (await http.post("/plans", json={"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}],
                                                    "slots": 32, "params": matvec["params"].to_json()})).json()
            query = {"plan_id": plan["id"], "keyset_id": keyset["id"], "wait": 30}
            response = await http.post("/jobs", content=_flip(tensor, len(tensor) - 100), params=query, headers=octet)
            assert (response.status_code, response.json()["error"]["code"]) == (400, "corrupt_blob"), response.text
            stored = app.state.service.store.blob_path("keysets", keyset["id"])
            stored.write_bytes(_flip(stored.read_bytes(), stored.stat().st_size // 3))  # the disk damages it
            job = (await http.post("/jobs", content=tensor, params=query, headers=octet)).json()
            assert (job["status"], job["error"]["code"]) == ("failed", "corrupt_blob"), job
    finally:
        app.state.service.close()
