"""Jobs: an einsum over uploaded ciphertexts and registered operands, answered with an id at once."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from einfhe import Parameters, Plan
from einfhe.plan import PlainInput

from ...codecs import MSGPACK_TYPES, decode_tensor_list, inspect_tensor
from ...errors import ServiceError
from ...executor import JobTask
from ...service import Service
from ..deps import CiphertextBody, JobDep, ServiceDep, TenantDep
from ..schemas import ErrorDetail, ErrorResponse, JobPublic

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_BODY = {
    "requestBody": {
        "required": True,
        "description": "the cipher operands as einfhe tensor blobs (einfhe.tensor_to_bytes), in operand order: "
                       "one blob as application/octet-stream, or a msgpack array of blobs",
        "content": {"application/octet-stream": _BINARY, MSGPACK_TYPES[0]: _BINARY},
    }
}


def job_public(row: dict, service: Service) -> JobPublic:
    """The public state of a stored job (queued jobs a worker has picked up read as running)."""
    status = row["status"]
    if status == "queued" and service.jobs.is_running(row["id"]):
        status = "running"
    error = ErrorDetail(code=row["error_code"], message=row["error_message"] or "") if row["error_code"] else None
    return JobPublic(id=row["id"], plan_id=row["plan_id"], keyset_id=row["keyset_id"], status=status, error=error,
                     created=row["created"], finished=row["finished"], seconds=row["seconds"],
                     result_size=row["result_size"])


def _plain_paths(plan: Plan, refs: list[dict], tenant: str, service: Service) -> list[tuple[int, str]]:
    """The .npy blob of each plain operand as registered now (the job keeps these even if they are replaced)."""
    paths = []
    for op in plan.operands:
        if not isinstance(op, PlainInput):
            continue
        name = refs[op.operand]["plain"]
        row = service.store.get("operands", tenant, name=name)
        if row is None:
            raise ServiceError("not_found", f"the plan's operand {name!r} is no longer registered")
        if tuple(row["shape"]) != op.shape:
            raise ServiceError("invalid_einsum",
                               f"operand {name!r} now has shape {tuple(row['shape'])}, the plan needs {op.shape}")
        paths.append((op.operand, str(service.store.blob_path("operands", f"{row['digest']}.npy"))))
    return paths


@router.post("", status_code=202, response_model=JobPublic, operation_id="create_job", openapi_extra=_BODY,
             responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                        409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}})
def create_job(
    plan_id: Annotated[str, Query(max_length=64)],
    keyset_id: Annotated[str, Query(max_length=64)],
    body: CiphertextBody,
    tenant: TenantDep,
    service: ServiceDep,
    content_type: Annotated[str, Header()] = "application/octet-stream",
) -> JobPublic:
    """Queue the plan's einsum on the uploaded ciphertexts with the key set's evaluation keys."""
    store = service.store
    plan_row = store.get("plans", tenant, id=plan_id)
    keyset = store.get("keysets", tenant, id=keyset_id)
    if plan_row is None or keyset is None:
        missing = f"plan {plan_id!r}" if plan_row is None else f"key set {keyset_id!r}"
        raise ServiceError("not_found", f"no {missing} for this token")
    plan = Plan.from_json(plan_row["plan"])
    params = Parameters.from_json(plan_row["params"])
    if keyset["fingerprint"] != params.fingerprint().hex():
        raise ServiceError("keyset_mismatch", "the key set was made for other parameters than the plan's")
    missing = sorted(set(plan.rotations) - set(keyset["rotations"]))
    if missing:
        raise ServiceError("keyset_mismatch", f"the key set lacks rotation keys for offsets {missing}")
    blobs = decode_tensor_list(body, content_type)
    if len(blobs) != len(plan.cipher_inputs):
        raise ServiceError("malformed_blob", f"the plan takes {len(plan.cipher_inputs)} cipher operand(s), got {len(blobs)}")
    for op, blob in zip(plan.cipher_inputs, blobs):
        tensor = inspect_tensor(blob, params, service.settings.max_cts)
        if tensor.layout != op.layout:
            raise ServiceError("malformed_blob", f"operand {op.operand} is encrypted in {tensor.layout}; the plan "
                                                 f"needs {op.layout} (encrypt with plan.input_layout({op.operand}))")
    plains = _plain_paths(plan, plan_row["operands"], tenant, service)
    job_id = uuid.uuid4().hex
    inputs = [str(store.write_blob("inputs", f"{job_id}.{i}", blob)) for i, blob in enumerate(blobs)]
    row = store.insert("jobs", id=job_id, tenant=tenant, plan_id=plan_id, keyset_id=keyset_id, inputs=inputs,
                       plains=plains, status="queued", error_code=None, error_message=None, finished=None,
                       seconds=None, result_size=None)
    service.jobs.submit(JobTask(
        job_id=job_id, keyset_id=keyset_id, keyset_path=str(store.blob_path("keysets", keyset_id)),
        params=params.to_json(), plan_json=plan_row["plan"],
        inputs=tuple(inputs), plains=tuple(plains), max_cts=service.settings.max_cts,
    ))
    return job_public(row, service)


@router.get("", response_model=list[JobPublic], operation_id="list_jobs")
def list_jobs(tenant: TenantDep, service: ServiceDep) -> list[JobPublic]:
    """The tenant's jobs."""
    return [job_public(r, service) for r in service.store.list("jobs", tenant)]


@router.get("/{job_id}", response_model=JobPublic, operation_id="get_job", responses={404: {"model": ErrorResponse}})
def get_job(job: JobDep, tenant: TenantDep, service: ServiceDep,
            wait: Annotated[float, Query(ge=0, description="seconds to wait for the job to finish")] = 0) -> JobPublic:
    """A job's state, optionally waiting (long poll, capped by the server) until it finishes."""
    if job["status"] == "queued" and wait > 0:
        service.jobs.wait(job["id"], min(wait, service.settings.max_wait_seconds))
        job = service.store.get("jobs", tenant, id=job["id"])
    return job_public(job, service)


@router.get("/{job_id}/result", operation_id="get_job_result", response_class=Response,
            responses={200: {"content": {"application/octet-stream": _BINARY},
                             "description": "the result tensor blob (decrypt with einfhe.tensor_from_bytes)"},
                       404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
def get_job_result(job: JobDep, service: ServiceDep) -> Response:
    """The encrypted result of a finished job."""
    if job["status"] == "failed":
        raise ServiceError("job_failed", f"the job failed ({job['error_code']}): {job['error_message']}")
    if job["status"] != "succeeded":
        raise ServiceError("job_not_finished", "the job has not finished: poll GET /jobs/{id}?wait=...")
    data = service.store.blob_path("results", job["id"]).read_bytes()
    return Response(content=data, media_type="application/octet-stream")
