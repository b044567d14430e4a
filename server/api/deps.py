"""Shared checks as FastAPI dependencies: the service, the tenant behind the API token, ownership, body caps.

    ServiceDep      the app's Service
    TenantDep       the tenant named by ``Authorization: Bearer TOKEN`` (401 otherwise)
    OperatorDep     the tenant, who must be one of the operators (403 otherwise): they register models
    KeySetDep, PlanDep, JobDep, OperandDep
                    the tenant's object named in the path (404 when missing or another tenant's)
    ModelDep        a registered model (every tenant may use the operator's models)
    KeySetBody, CiphertextBody, OperandBody, ModelBody
                    the raw request body, refused with 413 past its cap

The service, tenant and operator checks never block (an attribute, a SHA-256 and a dict lookup), so they are async:
FastAPI runs them on the event loop instead of one threadpool hop each (~0.1 ms per hop per request here). The row
lookups read SQLite and stay sync.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect

from ..errors import ServiceError
from ..service import Service
from ..tokens import token_digest
from .schemas import NAME_PATTERN

__all__ = [
    "CiphertextBody", "JobDep", "KeySetBody", "KeySetDep", "ModelBody", "ModelDep", "OperandBody", "OperandDep",
    "OperatorDep", "PlanDep", "ServiceDep", "TenantDep", "get_service", "get_tenant",
]


async def get_service(request: Request) -> Service:
    """The Service the app was made with."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


_BEARER = HTTPBearer(auto_error=False, scheme_name="apiToken",
                     description="a tenant's API token from the server's token file: 'Authorization: Bearer TOKEN'")


async def get_tenant(
    request: Request, service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None,
) -> str:
    """The tenant owning the bearer token (server.admission refuses a request without one first), or 401."""
    tenant = service.tenants.get(token_digest(credentials.credentials)) if credentials else None
    if tenant is None:
        raise ServiceError("unauthorized", "send a valid API token as 'Authorization: Bearer TOKEN'")
    request.state.tenant = tenant
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]


async def get_operator(tenant: TenantDep, service: ServiceDep) -> str:
    """The tenant, when it is one of the service's operators, or 403."""
    if tenant not in service.settings.operators:
        raise ServiceError("forbidden", "only an operator's token may register or delete models")
    return tenant


OperatorDep = Annotated[str, Depends(get_operator)]


def _owned(service: Service, table: str, tenant: str, what: str, **key) -> dict:
    row = service.store.get(table, tenant, **key)
    if row is None:
        raise ServiceError("not_found", f"no {what} {next(iter(key.values()))!r} for this token")
    return row


def get_keyset(keyset_id: Annotated[str, Path(max_length=64)], tenant: TenantDep, service: ServiceDep) -> dict:
    """The tenant's key set `keyset_id`."""
    return _owned(service, "keysets", tenant, "key set", id=keyset_id)


def get_plan(plan_id: Annotated[str, Path(max_length=64)], tenant: TenantDep, service: ServiceDep) -> dict:
    """The tenant's plan `plan_id`."""
    return _owned(service, "plans", tenant, "plan", id=plan_id)


def get_job(job_id: Annotated[str, Path(max_length=64)], tenant: TenantDep, service: ServiceDep) -> dict:
    """The tenant's job `job_id`."""
    return _owned(service, "jobs", tenant, "job", id=job_id)


def get_operand(name: Annotated[str, Path(pattern=NAME_PATTERN)], tenant: TenantDep, service: ServiceDep) -> dict:
    """The tenant's registered operand `name`."""
    return _owned(service, "operands", tenant, "operand", name=name)


def get_model(model_id: Annotated[str, Path(max_length=64)], _tenant: TenantDep, service: ServiceDep) -> dict:
    """The registered model `model_id` (any tenant may use it)."""
    row = service.store.get_shared("models", id=model_id)
    if row is None:
        raise ServiceError("not_found", f"no model {model_id!r} is registered")
    return row


KeySetDep = Annotated[dict, Depends(get_keyset)]
ModelDep = Annotated[dict, Depends(get_model)]
PlanDep = Annotated[dict, Depends(get_plan)]
JobDep = Annotated[dict, Depends(get_job)]
OperandDep = Annotated[dict, Depends(get_operand)]


def capped_body(setting: str):
    """A dependency reading the request body, refused with 413 past `Settings.<setting>` bytes."""

    async def read_body(request: Request, service: ServiceDep, _tenant: TenantDep) -> bytes:
        limit = getattr(service.settings, setting)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ServiceError("payload_too_large", f"the body is {declared} bytes; the limit here is {limit}")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ServiceError("payload_too_large", f"the body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect as exc:  # the client went, or server.http_protocol closed a stalled body
            raise ServiceError("request_timeout", "the connection closed before the body was complete") from exc
        return b"".join(chunks)

    read_body.__doc__ = f"The raw body, at most Settings.{setting} bytes."
    return read_body


KeySetBody = Annotated[bytes, Depends(capped_body("max_keyset_bytes"))]
CiphertextBody = Annotated[bytes, Depends(capped_body("max_ciphertext_bytes"))]
OperandBody = Annotated[bytes, Depends(capped_body("max_operand_bytes"))]
ModelBody = Annotated[bytes, Depends(capped_body("max_model_bytes"))]
