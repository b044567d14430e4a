"""API tokens: a file of ``tenant:token`` lines, looked up by the token's SHA-256 so tokens are not kept."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["load_tokens", "tenant_for", "token_digest"]

_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def token_digest(token: str) -> str:
    """The hex SHA-256 of a token (the key tenants are looked up by)."""
    return hashlib.sha256(token.encode()).hexdigest()


def tenant_for(authorization: str | None, tenants: dict[str, str]) -> str | None:
    """The tenant an ``Authorization: Bearer TOKEN`` header names in `tenants` (digest -> tenant), or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return tenants.get(token_digest(token.strip())) if scheme.lower() == "bearer" else None


def load_tokens(path: Path | None) -> dict[str, str]:
    """Map token digest -> tenant from a file of ``tenant:token`` lines (``#`` starts a comment)."""
    if path is None:
        return {}
    tenants: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tenant, sep, token = line.partition(":")
        tenant, token = tenant.strip(), token.strip()
        if not sep or not _TENANT.match(tenant) or len(token) < 16:
            raise ValueError(f"{path}:{number}: expected 'tenant:token' with a token of at least 16 characters")
        tenants[token_digest(token)] = tenant
    return tenants
