"""Key sets and model names (issue 18): a per-tenant key-set quota, idle key sets expired, model names unique."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import time

import msgpack
import pytest
from server_helpers import SLOTS, assert_error, call, keyset_body

from server import create_app

pytestmark = pytest.mark.anyio

_OCTET = {"Content-Type": "application/octet-stream"}


async def test_key_set_quota_and_idle_expiry(settings, matvec):
    app = create_app(settings.model_copy(update={"max_keysets_per_tenant": 2, "keyset_idle_seconds": 1.5}))
    store = app.state.service.store
    body = keyset_body(matvec["ctx"])
    try:
        first = (await call(app, "POST", "/keysets", content=body, headers=_OCTET)).json()["id"]
        second = (await call(app, "POST", "/keysets", content=body, headers=_OCTET)).json()["id"]
        assert_error(await call(app, "POST", "/keysets", content=body, headers=_OCTET), 409, "keyset_quota")
        assert (await call(app, "POST", "/keysets", "bob", content=body, headers=_OCTET)).status_code == 201
        assert (await call(app, "DELETE", f"/keysets/{second}")).status_code == 204
        third = await call(app, "POST", "/keysets", content=body, headers=_OCTET)
        assert third.status_code == 201, third.text
        time.sleep(1.6)  # both of alice's are idle now: the next upload deletes them
        fourth = await call(app, "POST", "/keysets", content=body, headers=_OCTET)
        assert fourth.status_code == 201, fourth.text
        for gone in (first, third.json()["id"]):
            assert_error(await call(app, "GET", f"/keysets/{gone}"), 404, "not_found")
            assert not store.blob_path("keysets", gone).exists()
        assert (await call(app, "GET", f"/keysets/{fourth.json()['id']}")).status_code == 200
    finally:
        app.state.service.close()


async def test_a_model_name_is_registered_once(settings, model_files):
    app = create_app(settings.model_copy(update={"operators": ["alice"]}))
    upload = {"content": msgpack.packb(model_files, use_bin_type=True), "headers": {"Content-Type": "application/msgpack"},
              "params": {"name": "mlp", "slots": SLOTS, "insecure_test_params": True}}
    try:
        first = await call(app, "POST", "/models", **upload)
        assert first.status_code == 201, first.text
        again = await call(app, "POST", "/models", **upload)
        assert_error(again, 409, "name_taken")
        assert first.json()["id"] in again.json()["error"]["message"]
        assert len((await call(app, "GET", "/models")).json()) == 1
    finally:
        app.state.service.close()
