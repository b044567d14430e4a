"""einfhe's client: encrypted einsums and model inference on an einfhe server, with keys that never leave this process.

    from client import Client, EncryptedModel
    with Client("http://127.0.0.1:8000", token) as c:
        c.register_operand("W", W)
        y = c.einsum("ij,j->i", "W", x)
    with EncryptedModel("http://127.0.0.1:8000", "digits", token=token) as model:
        labels = model.infer(X).argmax(axis=1)
"""

from __future__ import annotations

import einfhe as _einfhe  # noqa: F401  -- loads openfhe before any other extension module

from .client import Client, PlanInfo
from .key_store import KeyStore
from .model import EncryptedModel
from .errors import (
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InternalServerError,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
    WorkerStartFailed,
)

__all__ = [
    "BadRequest", "Client", "ClientError", "Conflict", "ConnectionFailed", "EncryptedModel", "Forbidden",
    "InternalServerError", "JobFailed", "KeyStore", "NotFound", "PayloadTooLarge", "PlanInfo", "ServerError", "Unauthorized",
    "WorkerStartFailed",
]
