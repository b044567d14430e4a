"""Jobs: an einsum over uploaded ciphertexts and registered operands, answered with an id at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.concurrency import run_in_threadpool

from einfhe import Parameters, Plan
from einfhe.plan import PlainInput

from ...errors import ServiceError
from ...service import Service
from ..deps import CiphertextBody, JobDep, ServiceDep, TenantDep
from ..openapi import BINARY_SCHEMA, TENSORS_BODY
from ..schemas import ErrorResponse, JobPublic
from ..submission import INLINE_RESPONSES, answer_job, job_public, queue_job

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])


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


def _queue_einsum_job(service: Service, tenant: str, plan_id: str, keyset_id: str, body: bytes, content_type: str,
                      keep: bool):
    """Look the plan and its operands up and queue the job (the blocking half of create_job, in one thread)."""
    plan_row = service.store.get("plans", tenant, id=plan_id)
    if plan_row is None:
        raise ServiceError("not_found", f"no plan {plan_id!r} for this token")
    plan = Plan.from_json(plan_row["plan"])
    plains = _plain_paths(plan, plan_row["operands"], tenant, service)
    return queue_job(service, tenant, plan_id=plan_id, plan=plan, plan_json=plan_row["plan"],
                     params=Parameters.from_json(plan_row["params"]), keyset_id=keyset_id, body=body,
                     content_type=content_type, plains=plains, keep=keep)


@router.post("", status_code=202, response_class=Response, operation_id="create_job", openapi_extra=TENSORS_BODY,
             responses={**INLINE_RESPONSES, 400: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                        409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}})
async def create_job(
    plan_id: Annotated[str, Query(max_length=64)],
    keyset_id: Annotated[str, Query(max_length=64)],
    body: CiphertextBody,
    tenant: TenantDep,
    service: ServiceDep,
    content_type: Annotated[str, Header()] = "application/octet-stream",
    wait: Annotated[float, Query(ge=0, description="seconds to wait for the result, answered inline")] = 0,
    keep: Annotated[bool, Query(description="false: a result answered inline is not stored on the server (GET "
                                            "/jobs/{id}/result then answers 410 result_not_kept); one the wait "
                                            "did not cover is stored as usual")] = True,
) -> Response:
    """Queue the plan's einsum on the uploaded ciphertexts with the key set's evaluation keys."""
    row, done = await run_in_threadpool(_queue_einsum_job, service, tenant, plan_id, keyset_id, body, content_type,
                                        keep)
    return await answer_job(service, tenant, row, done, wait)


@router.get("", response_model=list[JobPublic], operation_id="list_jobs")
def list_jobs(tenant: TenantDep, service: ServiceDep) -> list[JobPublic]:
    """The tenant's jobs."""
    return [job_public(r, service) for r in service.store.list("jobs", tenant)]


@router.get("/{job_id}", response_model=JobPublic, operation_id="get_job", responses={404: {"model": ErrorResponse}})
async def get_job(job: JobDep, tenant: TenantDep, service: ServiceDep,
                  wait: Annotated[float, Query(ge=0, description="seconds to wait for the job to finish")] = 0
                  ) -> JobPublic:
    """A job's state, optionally waiting (long poll, capped by the server, holding no thread) until it finishes."""
    if job["status"] == "queued" and wait > 0:
        await service.jobs.wait(job["id"], min(wait, service.settings.max_wait_seconds))
        job = await run_in_threadpool(service.store.get, "jobs", tenant, id=job["id"])
    return job_public(job, service)


@router.delete("/{job_id}", status_code=204, operation_id="delete_job",
               responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
def delete_job(job: JobDep, tenant: TenantDep, service: ServiceDep) -> Response:
    """Delete one of the tenant's finished jobs and its stored result (refused while the job is queued or running)."""
    if service.jobs.in_flight(job["id"]):
        raise ServiceError("job_not_finished", "the job is queued or running: delete it once it has finished")
    service.store.delete_with_blob("jobs", "results", tenant, job["id"])
    return Response(status_code=204)


@router.get("/{job_id}/result", operation_id="get_job_result", response_class=Response,
            responses={200: {"content": {"application/octet-stream": BINARY_SCHEMA},
                             "description": "the result tensor blob (decrypt with einfhe.tensor_from_bytes)"},
                       404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 410: {"model": ErrorResponse}})
def get_job_result(job: JobDep, service: ServiceDep) -> Response:
    """The encrypted result of a finished job."""
    if job["status"] == "failed":
        raise ServiceError("job_failed", f"the job failed ({job['error_code']}): {job['error_message']}")
    if job["status"] != "succeeded":
        raise ServiceError("job_not_finished", "the job has not finished: poll GET /jobs/{id}?wait=...")
    try:
        data = service.store.blob_path("results", job["id"]).read_bytes()
    except FileNotFoundError:
        raise ServiceError("result_not_kept", "the result was answered inline when the job was submitted and, as "
                                              "asked (keep=false), not kept on the server") from None
    return Response(content=data, media_type="application/octet-stream")
