"""The API's documentation works offline and says what a client needs (issue 18): /docs and /redoc load their
scripts from this server, the document declares the bearer scheme and the error-code enums, and every binary
body points at docs/wire-format.md."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import re

import pytest
from server_helpers import call

from server.errors import CODES, JOB_CODES

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_load_every_asset_from_this_server(app, page):
    html = await call(app, "GET", page, None)
    assert html.status_code == 200, html.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(r"url: '([^']+)'", html.text)
    assert assets and all(a.startswith("/") for a in assets), assets  # no CDN, no fonts from the internet
    for asset in assets:
        response = await call(app, "GET", asset, None)
        assert response.status_code == 200 and len(response.content) > 100, asset


async def test_openapi_declares_the_bearer_scheme_and_the_error_codes(app):
    spec = (await call(app, "GET", "/openapi.json", None)).json()
    assert spec["components"]["securitySchemes"]["apiToken"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["apiToken"]["description"]}
    operations = [(path, op) for path, item in spec["paths"].items() for op in item.values()]
    for path, operation in operations:
        headers = [p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"]
        assert "authorization" not in headers, path  # the scheme, not a free header, carries the token
        if path != "/health":
            assert operation["security"] == [{"apiToken": []}] and "401" in operation["responses"], path
    assert "security" not in spec["paths"]["/health"]["get"]
    schemas = spec["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == set(CODES)
    assert set(schemas["JobErrorCode"]["enum"]) == set(JOB_CODES)
    binary = [content for _, op in operations for content in op.get("requestBody", {}).get("content", {}).values()
              if content["schema"].get("format") == "binary"]
    assert binary and all("docs/wire-format.md" in c["schema"]["description"] for c in binary)
