"""einfhe's client: encrypted einsums on an einfhe server, with keys that never leave this process.

    from client import Client
    with Client("http://127.0.0.1:8000", token) as c:
        c.register_operand("W", W)
        y = c.einsum("ij,j->i", "W", x)
"""

from __future__ import annotations

import einfhe as _einfhe  # noqa: F401  -- loads openfhe before any other extension module

from .client import Client, PlanInfo
from .errors import (
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    InternalServerError,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
)

__all__ = [
    "BadRequest", "Client", "ClientError", "Conflict", "ConnectionFailed", "InternalServerError", "JobFailed",
    "NotFound", "PayloadTooLarge", "PlanInfo", "ServerError", "Unauthorized",
]
