"""Queue an encrypted job (an einsum plan or a model program): check the key set and the ciphertexts, store, submit;
and answer it inline when the client asked to wait and the job finished in time (one round trip instead of three).
"""

from __future__ import annotations

import uuid
from concurrent.futures import Future

from fastapi import Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from einfhe import Parameters, Plan

from ..codecs import decode_tensor_list, inspect_tensor
from ..errors import ServiceError
from ..job_messages import JobTask
from ..service import Service
from .openapi import BINARY_SCHEMA
from .schemas import ErrorResponse, JobError, JobPublic

__all__ = ["INLINE_RESPONSES", "answer_job", "job_public", "queue_job"]

INLINE_RESPONSES = {
    200: {"content": {"application/octet-stream": BINARY_SCHEMA},
          "description": "the job finished within `wait` seconds: its result tensor blob (the job's id is in the "
                         "X-Einfhe-Job header; the result stays readable at /jobs/{id}/result)"},
    202: {"model": JobPublic, "description": "the job is queued or running (or failed): poll GET /jobs/{id}"},
    503: {"model": ErrorResponse, "description": "server_busy: queued jobs hold as many input bytes as the server "
                                                 "allows (Settings.max_queued_input_bytes); submit again later"},
}


def job_public(row: dict, service: Service) -> JobPublic:
    """The public state of a stored job (queued jobs a worker has picked up read as running)."""
    status = row["status"]
    if status == "queued" and service.jobs.is_running(row["id"]):
        status = "running"
    error = JobError(code=row["error_code"], message=row["error_message"] or "") if row["error_code"] else None
    return JobPublic(id=row["id"], plan_id=row["plan_id"], keyset_id=row["keyset_id"], status=status, error=error,
                     created=row["created"], finished=row["finished"], seconds=row["seconds"],
                     result_size=row["result_size"])


def queue_job(service: Service, tenant: str, *, plan_id: str, plan: Plan, plan_json: str, params: Parameters,
              keyset_id: str, body: bytes, content_type: str, plains: list[tuple[int, str]],
              keep: bool = True, arrays: tuple = ()) -> tuple[dict, Future]:
    """Check the tenant's key set and the uploaded tensors against `plan`, record the job and queue it with its
    inputs (they travel to the worker in memory: a job interrupted by a restart fails, so they are never read
    back); return its row and the future of its result (JobRunner.submit; `keep=False`: a result answered inline
    is not stored). `arrays`: (position, array) plain operands made for this job, in place of stored ones."""
    store = service.store
    keyset = store.get("keysets", tenant, id=keyset_id)
    if keyset is None:
        raise ServiceError("not_found", f"no key set {keyset_id!r} for this token (a key set unused for "
                                        f"{service.settings.keyset_idle_seconds:.0f} s is deleted: upload the keys again)")
    if keyset["fingerprint"] != params.fingerprint().hex():
        raise ServiceError("keyset_mismatch", "the key set was made for other parameters than the plan's")
    missing = sorted(set(plan.rotations) - set(keyset["rotations"]))
    if missing:
        raise ServiceError("keyset_mismatch", f"the key set lacks rotation keys for offsets {missing}")
    blobs = decode_tensor_list(body, content_type)
    if len(blobs) != len(plan.cipher_inputs):
        raise ServiceError("malformed_blob",
                           f"the plan takes {len(plan.cipher_inputs)} cipher operand(s), got {len(blobs)}")
    for op, blob in zip(plan.cipher_inputs, blobs):
        tensor = inspect_tensor(blob, params, service.settings.max_cts)
        if tensor.layout != op.layout:
            raise ServiceError("malformed_blob", f"operand {op.operand} is encrypted in {tensor.layout}; the plan "
                                                 f"needs {op.layout} (encrypt with plan.input_layout({op.operand}))")
    job_id = uuid.uuid4().hex
    row = dict(id=job_id, tenant=tenant, plan_id=plan_id, keyset_id=keyset_id, inputs=[len(blob) for blob in blobs],
               plains=plains, status="queued", error_code=None, error_message=None, finished=None, seconds=None,
               result_size=None)
    task = JobTask(job_id=job_id, keyset_id=keyset_id, keyset_path=str(store.blob_path("keysets", keyset_id)),
                   params=params.to_json(), plan_json=plan_json, inputs=tuple(blobs), plains=tuple(plains),
                   max_cts=service.settings.max_cts, tenant=tenant, arrays=tuple(arrays))
    done = service.jobs.submit(task, lambda: row.update(store.insert("jobs", **row)), keep=keep)
    return row, done


async def answer_job(service: Service, tenant: str, row: dict, done: Future, wait: float) -> Response:
    """The finished job's result bytes (200) if it ends within `wait` seconds, else its state as JSON (202).

    The wait is on the event loop (no thread is held), and a result comes straight from the job's outcome: it is
    already recorded by then (JobRunner records it before `done` resolves; stored unless the job was submitted
    with keep=false), so nothing is read back.
    """
    if wait > 0:
        result = await service.jobs.inline_result(row["id"], done, min(wait, service.settings.max_wait_seconds))
        if result is not None:
            return Response(content=result, media_type="application/octet-stream", headers={"X-Einfhe-Job": row["id"]})
    row = await run_in_threadpool(service.store.get, "jobs", tenant, id=row["id"])
    return JSONResponse(job_public(row, service).model_dump(), status_code=202)
