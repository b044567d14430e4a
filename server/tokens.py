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
    """Map token digest -> tenant from a file of ``tenant:token`` lines (``#`` starts a comment); a tenant is
    1-64 of ``A-Za-z0-9_.-`` and a token at least 16 characters. A missing file or a bad line raises ValueError."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    tenants: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tenant, sep, token = line.partition(":")
        tenant, token = tenant.strip(), token.strip()
        if not sep or not _TENANT.match(tenant) or len(token) < 16:
            raise ValueError(f"{path}:{number}: expected 'tenant:token' with a token of at least 16 characters")
        tenants[token_digest(token)] = tenant
    return tenants
