"""Evaluation-key sets: uploaded once (einfhe.evaluation_keys_to_bytes), checked in a worker, referenced by id."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures.process import BrokenProcessPool

from fastapi import APIRouter, Response

from ...codecs import decode_keyset
from ...errors import CODES, ServiceError
from ...job_messages import KeySetCheck
from ...service import Service
from ..deps import KeySetBody, KeySetDep, ServiceDep, TenantDep
from ..schemas import ErrorResponse, KeySetPublic

__all__ = ["router"]

router = APIRouter(prefix="/keysets", tags=["keysets"])

_BODY = {
    "requestBody": {
        "required": True,
        "description": "the blob einfhe.evaluation_keys_to_bytes(ctx) makes: parameters, rotation offsets, the "
                       "crypto context, public, relinearization and rotation keys. A secret key is refused.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _make_room(service: Service, tenant: str) -> None:
    """Delete the tenant's key sets idle past Settings.keyset_idle_seconds (unless a job in flight uses one); refuse
    the upload with keyset_quota when the tenant still holds Settings.max_keysets_per_tenant."""
    settings = service.settings
    for keyset_id in service.store.idle_keysets(tenant, time.time() - settings.keyset_idle_seconds):
        if not service.jobs.keyset_in_use(keyset_id):
            service.store.delete_with_blob("keysets", "keysets", tenant, keyset_id)
    held = len(service.store.list("keysets", tenant))
    if held >= settings.max_keysets_per_tenant:
        raise ServiceError("keyset_quota", f"this token holds {held} key sets, the most this server keeps per tenant: "
                                           "delete one (DELETE /keysets/{id}) or reuse one (a client saves its key "
                                           "set's id with its keys)")


def _public(row: dict) -> KeySetPublic:
    return KeySetPublic(**{k: row[k] for k in KeySetPublic.model_fields})


@router.post("", status_code=201, response_model=KeySetPublic, operation_id="create_keyset",
             openapi_extra=_BODY, responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}})
async def create_keyset(body: KeySetBody, tenant: TenantDep, service: ServiceDep) -> KeySetPublic:
    """Accept a tenant's evaluation keys after a worker has checked them (no secret key, rotations present)."""
    _make_room(service, tenant)
    upload = decode_keyset(body)
    params = service.parameters(upload.params)
    rotations = sorted(set(upload.rotations))
    del upload  # its parts copy the keys: not kept while a worker checks them (16 uploads at once held ~3 copies)
    keyset_id = uuid.uuid4().hex
    path = service.store.write_blob("keysets", keyset_id, body)
    try:
        outcome = await asyncio.wrap_future(
            service.executor.check_keyset(KeySetCheck(str(path), params.to_json(), tuple(rotations), tenant))
        )
    except BrokenProcessPool as exc:
        path.unlink(missing_ok=True)
        service.jobs.crashed(tenant)
        raise ServiceError("malformed_blob", "the worker checking the key set died on it (malformed key data?)") from exc
    if not outcome.ok:
        path.unlink(missing_ok=True)
        code = outcome.code if outcome.code in CODES else "malformed_blob"
        raise ServiceError(code, f"key set refused: {outcome.message}")
    row = service.store.insert(
        "keysets", id=keyset_id, tenant=tenant, fingerprint=params.fingerprint().hex(), params=params.to_json(),
        rotations=rotations, key_tag=outcome.key_tag, size=len(body),
    )
    return _public(row)


@router.get("", response_model=list[KeySetPublic], operation_id="list_keysets")
def list_keysets(tenant: TenantDep, service: ServiceDep) -> list[KeySetPublic]:
    """The tenant's key sets."""
    return [_public(r) for r in service.store.list("keysets", tenant)]


@router.get("/{keyset_id}", response_model=KeySetPublic, operation_id="get_keyset",
            responses={404: {"model": ErrorResponse}})
def get_keyset(keyset: KeySetDep) -> KeySetPublic:
    """One key set's description."""
    return _public(keyset)


@router.delete("/{keyset_id}", status_code=204, operation_id="delete_keyset",
               responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
def delete_keyset(keyset: KeySetDep, tenant: TenantDep, service: ServiceDep) -> Response:
    """Delete one of the tenant's key sets and its keys (refused while a job of the tenant's runs with it)."""
    if service.jobs.keyset_in_use(keyset["id"]):
        raise ServiceError("keyset_in_use", "a job queued or running uses this key set: delete it once it finishes")
    service.store.delete_with_blob("keysets", "keysets", tenant, keyset["id"])
    return Response(status_code=204)
