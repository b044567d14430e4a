"""Helpers for service tests: test tenants, auth headers, .npy and evaluation-key bodies, `einfhe serve` processes,
a tenant's objects created in one call."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgpack
import numpy as np

import einfhe
from einfhe.crypto.blobs import pack_blob, pack_parts

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
SLOTS = 32


def auth(tenant: str) -> dict:
    """Authorization header for a test tenant."""
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


async def call(app, method: str, path: str, tenant: str | None = "alice", **kwargs) -> httpx.Response:
    """One request to `app` in-process (httpx.ASGITransport) with the tenant's token (None: no token)."""
    headers = {**(auth(tenant) if tenant else {}), **kwargs.pop("headers", {})}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://einfhe") as http:
        return await http.request(method, path, headers=headers, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The response is an error with this status and JSON code."""
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def npy(array) -> bytes:
    """An array as .npy bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def keyset_body(ctx, **replaced_parts) -> bytes:
    """An evaluation-key upload for a context, built like einfhe.evaluation_keys_to_bytes, with parts replaced."""
    parts = {**ctx.backend.export_evaluation_keys(), **replaced_parts}
    meta = {"params": ctx.params.to_json(), "rotations": list(ctx.rotations), "parts": list(parts)}
    return pack_blob("evaluation_keys", ctx.params.fingerprint(), pack_parts(meta, list(parts.values())))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, data_dir: Path, token_file: Path, *args: str, env: dict | None = None):
    """The command line and environment of `python -m server.cli` (what `einfhe serve` runs) for this tree."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **(env or {})}
    command = [sys.executable, "-m", "server.cli", "--port", str(port), "--data-dir", str(data_dir),
               "--token-file", str(token_file), *args]
    return command, env


def start_server(port: int, data_dir: Path, token_file: Path, *args: str, env: dict | None = None,
                 output=subprocess.PIPE, timeout: float = 30) -> subprocess.Popen:
    """`python -m server.cli` as a subprocess, returned once it answers requests."""
    command, env = serve_command(port, data_dir, token_file, *args, env=env)
    process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/keysets", timeout=1)
            return process
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                output_text = process.communicate()[0] if output is subprocess.PIPE else ""
                raise RuntimeError(f"einfhe serve did not start: {output_text}")
            time.sleep(0.1)


def finished_job(http, response) -> str:
    """The id of the job a POST answered (200 inline, or 202 then polled until it ends); it must succeed."""
    if response.status_code == 200:
        return response.headers["X-Einfhe-Job"]
    assert response.status_code == 202, response.text
    job = response.json()
    while job["status"] in ("queued", "running"):
        job = http.get(f"/jobs/{job['id']}", params={"wait": 5}).json()
    assert job["status"] == "succeeded", job
    return job["id"]


def seed_objects(http, matvec: dict, ctx=None, model_files: dict | None = None) -> dict[str, str]:
    """Create a tenant's operand W, a matvec plan over it, the evaluation keys of `ctx` (default: matvec's) and a
    finished job through `http` (a synchronous client carrying the tenant's token), and a model from
    `model_files` when given (the tenant must be an operator). Returns their ids by parameter name."""
    ctx = ctx or matvec["ctx"]
    assert http.put("/operands/W", content=npy(matvec["W"])).status_code == 200
    plan = http.post("/plans", json={"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}],
                                     "slots": SLOTS, "params": matvec["params"].to_json()})
    assert plan.status_code == 201, plan.text
    keyset = http.post("/keysets", content=keyset_body(ctx), headers={"Content-Type": "application/octet-stream"})
    assert keyset.status_code == 201, keyset.text
    ids = {"name": "W", "plan_id": plan.json()["id"], "keyset_id": keyset.json()["id"]}
    tensor = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, matvec["x"], matvec["plan"].input_layout(1)))
    job = http.post("/jobs", content=tensor, headers={"Content-Type": "application/octet-stream"},
                    params={"plan_id": ids["plan_id"], "keyset_id": ids["keyset_id"], "wait": 30})
    ids["job_id"] = finished_job(http, job)
    if model_files is not None:
        model = http.post("/models", content=msgpack.packb(model_files, use_bin_type=True),
                          headers={"Content-Type": "application/msgpack"},
                          params={"name": "mlp", "slots": SLOTS, "insecure_test_params": True})
        assert model.status_code == 201, model.text
        ids["model_id"] = model.json()["id"]
    return ids
