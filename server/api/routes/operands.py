"""Plaintext operands (e.g. weights) a tenant registers by name as .npy and names in einsums."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from fastapi import APIRouter, Path, Response
from typing import Annotated

from ...codecs import decode_npy
from ...service import Service
from ..deps import OperandBody, OperandDep, ServiceDep, TenantDep
from ..schemas import NAME_PATTERN, ErrorResponse, OperandPublic

__all__ = ["router"]

router = APIRouter(prefix="/operands", tags=["operands"])

_BODY = {
    "requestBody": {
        "required": True,
        "description": "a numeric array in numpy's .npy format (numpy.save); pickled objects are refused",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _remove_unused_blob(service: Service, digest: str) -> None:
    """Delete the blob of `digest` unless another operand row (any tenant's: equal arrays share one blob) or a job
    in flight still reads it (such a blob is removed as an orphan at the next start)."""
    path = service.store.blob_path("operands", f"{digest}.npy")
    if digest not in service.store.names("operands", "digest") and not service.jobs.plain_in_use(str(path)):
        path.unlink(missing_ok=True)


def _public(row: dict) -> OperandPublic:
    return OperandPublic(**{k: row[k] for k in OperandPublic.model_fields})


@router.put("/{name}", response_model=OperandPublic, operation_id="put_operand", openapi_extra=_BODY,
            responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}})
def put_operand(name: Annotated[str, Path(pattern=NAME_PATTERN)], body: OperandBody, tenant: TenantDep,
                service: ServiceDep) -> OperandPublic:
    """Register (or replace) the plaintext operand `name`; jobs already submitted keep the old value."""
    array = decode_npy(body, as_float=False)  # stored in its own dtype: an int8 operand stays one byte a value
    replaced = service.store.get("operands", tenant, name=name)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    service.store.write_blob("operands", f"{digest}.npy", data)
    row = service.store.insert("operands", tenant=tenant, name=name, digest=digest, shape=list(array.shape),
                               dtype=str(array.dtype), size=len(data))
    if replaced is not None and replaced["digest"] != digest:
        _remove_unused_blob(service, replaced["digest"])
    return _public(row)


@router.get("", response_model=list[OperandPublic], operation_id="list_operands")
def list_operands(tenant: TenantDep, service: ServiceDep) -> list[OperandPublic]:
    """The tenant's registered operands."""
    return [_public(r) for r in service.store.list("operands", tenant)]


@router.get("/{name}", response_model=OperandPublic, operation_id="get_operand",
            responses={404: {"model": ErrorResponse}})
def get_operand(operand: OperandDep) -> OperandPublic:
    """One operand's description (its values are never sent back)."""
    return _public(operand)


@router.delete("/{name}", status_code=204, operation_id="delete_operand", responses={404: {"model": ErrorResponse}})
def delete_operand(operand: OperandDep, tenant: TenantDep, service: ServiceDep) -> Response:
    """Forget the operand and delete its values (jobs already submitted still run with them)."""
    service.store.delete("operands", tenant, name=operand["name"])
    _remove_unused_blob(service, operand["digest"])
    return Response(status_code=204)
