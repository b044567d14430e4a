"""No secret key on the server (issue 8): a full encrypted einsum through a real uvicorn server (LocalServer) with
every logger at DEBUG, plus the client's secret key pushed at every endpoint that takes a body; then every log
line (in-process records and whatever the server and its worker processes wrote to stdout/stderr), every file
under the data directory and every response body is scanned for the client's serialized secret key and for a
distinctive piece of it (raw, hex, base64 at each alignment, Python's bytes repr).

The piece is checked to be absent from the evaluation keys the client uploads (so a hit can only be the secret
key), and the scanner is checked to find it in the client's own saved context file (so a miss means absence).
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import base64
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgpack
import numpy as np
import openfhe
from archives import tar_of
from server_helpers import SLOTS, TOKENS, auth, keyset_body

from client import Client
from server import LocalServer

PIECE = 48  # bytes of the secret key's serialized polynomial, from its middle


class RecordingTransport(httpx.HTTPTransport):
    """An HTTP transport that keeps every response body."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send the request and keep a copy of the whole response body."""
        response = super().handle_request(request)
        self.bodies.append(response.read())
        return response


def encodings(data: bytes) -> list[bytes]:
    """`data` as it could appear in a file, a body or a log line: raw, hex, base64 (its middle, at each of the
    three alignments) and the inside of Python's bytes repr."""
    forms = [data, data.hex().encode(), data.hex().upper().encode(), repr(data)[2:-1].encode()]
    for shift in range(3):
        forms.append(base64.b64encode(data[shift:])[4:-4])
    return forms


def found(haystack: bytes, needles: list[bytes]) -> bool:
    """True when any needle occurs in `haystack`."""
    return any(needle in haystack for needle in needles)


@contextmanager
def every_logger_at_debug():
    """Every logger that exists now (uvicorn's and the service's included) at DEBUG, restored afterwards."""
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _secret_uploads(ctx, secret: bytes, saved: bytes) -> list[tuple[str, str, dict, bytes, str]]:
    """(method, path, query, body, content type) for the secret key and the saved context at every body route."""
    octet, packed = "application/octet-stream", "application/msgpack"
    tar = tar_of({name: secret for name in ("manifest.json", "model.npz", "secret_key")})
    uploads = []
    for blob in (secret, saved):
        uploads += [("POST", "/keysets", {}, blob, octet), ("PUT", "/operands/s", {}, blob, octet),
                    ("POST", "/jobs", {"plan_id": "{plan}", "keyset_id": "{keyset}"}, blob, octet),
                    ("POST", "/jobs", {"plan_id": "{plan}", "keyset_id": "{keyset}"}, msgpack.packb([blob]), packed),
                    ("POST", "/models/{model}/jobs", {"keyset_id": "{keyset}"}, blob, octet),
                    ("POST", "/models/{model}/infer", {}, blob, octet),
                    ("POST", "/models", {"name": "s", "slots": SLOTS, "insecure_test_params": True}, blob,
                     "application/x-tar")]
    uploads += [("POST", "/keysets", {}, keyset_body(ctx, **{part: secret}), octet)
                for part in ("secret_key", "public_key", "mult_key", "rotation_keys", "context")]
    uploads += [("POST", "/models", {"name": "s", "slots": SLOTS, "insecure_test_params": True}, tar,
                 "application/x-tar"),
                ("POST", "/models", {"name": "s", "slots": SLOTS, "insecure_test_params": True},
                 msgpack.packb({"manifest.json": secret, "model.npz": saved}), packed),
                ("POST", "/plans", {}, json.dumps({"spec": "ij,j->i", "operands": [{"plain": "W"}, {"cipher": [8]}],
                                                    "params": {"secret_key": secret.hex()}}).encode(),
                 "application/json")]
    return uploads


def test_no_secret_key_in_logs_files_or_responses(settings, matvec, mlp_export, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    recorders = [RecordingTransport(), RecordingTransport()]
    W, x = matvec["W"], matvec["x"]
    with LocalServer(settings.model_copy(update={"operators": ["alice"]})) as url, every_logger_at_debug(), \
            Client(url, TOKENS["alice"], progress=False, transport=recorders[0]) as client, \
            httpx.Client(base_url=url, headers=auth("alice"), transport=recorders[1], timeout=60) as raw:
        model = client.register_model("mlp", mlp_export["dir"], slots=SLOTS, insecure_test_params=True)
        client.register_operand("W", W)
        y = client.einsum("ij,j->i", "W", x, slots=SLOTS, params=matvec["params"])
        np.testing.assert_allclose(y, W @ x, atol=1e-6)
        plan = client.plan("ij,j->i", "W", x, slots=SLOTS, params=matvec["params"])
        ctx, keyset_id = client.context_for(plan)
        secret = openfhe.Serialize(ctx.backend.secret_key, openfhe.BINARY)
        einfhe.save_context(ctx, tmp_path / "client-context.bin")  # the client's own file, outside the server
        saved = (tmp_path / "client-context.bin").read_bytes()
        ids = {"plan": plan.id, "keyset": keyset_id, "model": model["id"]}
        for method, path, query, body, media in _secret_uploads(ctx, secret, saved):
            response = raw.request(method, path.format(**ids),
                                   params={k: str(v).format(**ids) for k, v in query.items()},
                                   content=body, headers={"Content-Type": media})
            assert 400 <= response.status_code < 500, (method, path, media, response.text)
            assert response.json()["error"]["code"], response.text
        assert len(raw.get("/keysets").json()) == 1  # only the evaluation keys the client uploaded
    data_dir = Path(settings.data_dir)

    middle = len(secret) // 2
    piece = secret[middle:middle + PIECE]
    needles = [secret] + encodings(piece)
    assert not found(einfhe.evaluation_keys_to_bytes(ctx), needles)  # the piece is the secret key's own
    assert found(saved, needles)  # and the scanner finds it where it is
    logs = "\n".join(record.getMessage() for record in caplog.records).encode()
    output = capfd.readouterr()
    assert logs and "POST /jobs" in logs.decode()  # the access log was captured
    assert not found(logs, needles) and not found((output.out + output.err).encode(), needles)
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert any(path.name.endswith(".sqlite3") for path in files) and len(files) > 5
    for path in files:
        assert not found(path.read_bytes(), needles), path
    bodies = recorders[0].bodies + recorders[1].bodies
    assert len(bodies) > 25
    for body in bodies:
        assert not found(body, needles)
