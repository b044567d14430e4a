"""Models: the operator registers a quantized model's integer export; tenants run it encrypted or in plaintext."""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures.process import BrokenProcessPool
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from einfhe import Parameters
from einfhe.compiler import client_lookup

from ...codecs import decode_npy
from ...encoder_program import encoder_embeddings, key_mask_operands
from ...errors import ServiceError
from ...model_archive import MODEL_MEDIA_TYPES, read_model_upload
from ...plaintext_inputs import plaintext_inputs
from ...plaintext_worker import infer_plaintext as run_plaintext
from ...model_registry import model_directory, program_plan, register_model
from ...service import Service
from ..deps import CiphertextBody, ModelBody, ModelDep, OperandBody, OperatorDep, ServiceDep, TenantDep, get_model as registered_model
from ..openapi import BINARY_SCHEMA, TENSORS_BODY
from ..schemas import NAME_PATTERN, ErrorResponse, ModelProgram, ModelPublic
from ..submission import INLINE_RESPONSES, answer_job, queue_job

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"])

_MODEL_BODY = {
    "requestBody": {
        "required": True,
        "description": "quant.export's artifact directory (manifest.json, graph.json, weights.safetensors), or "
                       "quant.export_integer_model's (manifest.json and model.npz), as a tar (optionally gzipped) "
                       "or zip archive, or a msgpack map {'manifest.json': ..., 'graph.json': ..., ...}",
        "content": {media: BINARY_SCHEMA for media in MODEL_MEDIA_TYPES},
    }
}
_NPY_BODY = {
    "requestBody": {
        "required": True,
        "description": "plaintext samples as .npy (numpy.save): (batch, features) or one sample (features,), "
                       "either also in the model's input shape",
        "content": {"application/octet-stream": BINARY_SCHEMA},
    }
}
_ERRORS = {400: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
           413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


def model_public(row: dict, service: Service) -> ModelPublic:
    """The public description of a registered model, with each program's plan."""
    programs = {}
    for variant, info in row["programs"].items():
        plan_json = (model_directory(service, row["id"]) / f"{variant}.plan.json").read_text()
        fields = {k: v for k, v in info.items() if k not in ("plains", "key_masks")}
        programs[variant] = ModelProgram(**fields, plan=json.loads(plan_json))
    summary = row["summary"]
    return ModelPublic(id=row["id"], name=row["name"], input_shape=summary["input_shape"],
                       encrypted_blockers=summary.get("encrypted_blockers", []),
                       client_lookup=summary.get("client_lookup"), encoder=summary.get("encoder"),
                       n_features=summary["n_features"], n_outputs=summary["n_outputs"], layers=summary["layers"],
                       programs=programs, size=row["size"], created=row["created"])


@router.post("", status_code=201, response_model=ModelPublic, operation_id="register_model",
             openapi_extra=_MODEL_BODY, responses={**_ERRORS, 409: {"model": ErrorResponse}})
def create_model(
    name: Annotated[str, Query(pattern=NAME_PATTERN)],
    body: ModelBody,
    tenant: OperatorDep,
    service: ServiceDep,
    content_type: Annotated[str, Header()] = "application/x-tar",
    slots: Annotated[int, Query(ge=2, le=1 << 15, description="slots per ciphertext (ring >= 2 x slots)")] = 8192,
    insecure_test_params: Annotated[bool, Query(description="test-only tiny ring; refused unless the server "
                                                            "allows insecure test parameters")] = False,
    noise_flooding: Annotated[bool, Query(description="compile on 59-bit parameters with one spare level "
                                                      "(Parameters.for_noise_flooding), for clients whose decryptions "
                                                      "are noise-flooded because their results are shared")] = False,
    tokens: Annotated[int | None, Query(ge=1, le=1024, description="a transformer encoder: the token count its "
                                                                   "encrypted program takes (a power of two no "
                                                                   "larger than the head width; default 16 or the "
                                                                   "head width)")] = None,
) -> ModelPublic:
    """Register a quantized model (quant's artifact or integer export) and compile its encrypted programs."""
    if slots & (slots - 1):
        raise ServiceError("invalid_parameters", f"slots must be a power of two, not {slots}")
    files = read_model_upload(body, content_type, service.settings.max_model_bytes)
    row = register_model(service, tenant, name, files, slots=slots, insecure_test_params=insecure_test_params,
                         noise_flooding=noise_flooding, tokens=tokens)
    return model_public(row, service)


@router.get("", response_model=list[ModelPublic], operation_id="list_models")
def list_models(_tenant: TenantDep, service: ServiceDep) -> list[ModelPublic]:
    """Every registered model."""
    return [model_public(r, service) for r in service.store.list_shared("models")]


@router.get("/{model_id}", response_model=ModelPublic, operation_id="get_model",
            responses={404: {"model": ErrorResponse}})
def get_model(model: ModelDep, service: ServiceDep) -> ModelPublic:
    """A model's requirements: parameters, input layouts, rotation set, batch options (before any upload)."""
    return model_public(model, service)


@router.delete("/{model_id}", status_code=204, operation_id="delete_model",
               responses={403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
def delete_model(model: ModelDep, _operator: OperatorDep, service: ServiceDep) -> Response:
    """Unregister a model and delete its files (its jobs still queued fail; finished results stay readable)."""
    service.store.delete("models", model["tenant"], id=model["id"])
    shutil.rmtree(model_directory(service, model["id"]), ignore_errors=True)
    return Response(status_code=204)


def _queue_model_job(service: Service, tenant: str, model_id: str, variant: str, keyset_id: str, body: bytes,
                     content_type: str, keep: bool, length: int | None):
    """Look the model up and queue the job on its program (the blocking half of create_model_job, in one thread)."""
    model = registered_model(model_id, tenant, service)
    if variant not in model["programs"]:
        blockers = model["summary"].get("encrypted_blockers")
        raise ServiceError("unsupported_model", f"the model has no {variant!r} encrypted program" + (
            f": it is served in plaintext only ({', '.join(blockers)} cannot run encrypted yet)" if blockers else
            f"; it has {sorted(model['programs'])}"))
    arrays = key_mask_operands(model["programs"][variant], length)
    plan, plan_json, plains = program_plan(service, model, variant)
    params = Parameters.from_json(model["programs"][variant]["params"])
    return queue_job(service, tenant, plan_id=f"{model['id']}.{variant}", plan=plan, plan_json=plan_json,
                     params=params, keyset_id=keyset_id, body=body, content_type=content_type, plains=plains,
                     keep=keep, arrays=arrays)


@router.post("/{model_id}/jobs", status_code=202, response_class=Response, operation_id="create_model_job",
             openapi_extra=TENSORS_BODY, responses={**INLINE_RESPONSES, **_ERRORS, 409: {"model": ErrorResponse}})
async def create_model_job(
    model_id: Annotated[str, Path(max_length=64)],
    keyset_id: Annotated[str, Query(max_length=64)],
    body: CiphertextBody,
    tenant: TenantDep,
    service: ServiceDep,
    variant: Annotated[Literal["single", "batch", "tokens"], Query()] = "single",
    content_type: Annotated[str, Header()] = "application/octet-stream",
    wait: Annotated[float, Query(ge=0, description="seconds to wait for the result, answered inline")] = 0,
    keep: Annotated[bool, Query(description="false: a result answered inline is not stored on the server (GET "
                                            "/jobs/{id}/result then answers 410 result_not_kept); one the wait "
                                            "did not cover is stored as usual")] = True,
    length: Annotated[int | None, Query(ge=1, description=(
        "an encoder's 'tokens' program: how many of the sentence's token vectors are real (the first ones, 1 to the "
        "program's tokens; the rest padding, masked out of the attention as the plaintext path's attention mask "
        "does). The server learns each sentence's length, as the attention mask would tell it; the token ids and "
        "vectors stay encrypted. Omitted: every position is a real token"))] = None,
) -> Response:
    """Queue an encrypted inference: the input encrypted in the program's input layout, with the tenant's keys."""
    row, done = await run_in_threadpool(_queue_model_job, service, tenant, model_id, variant, keyset_id, body,
                                        content_type, keep, length)
    return await answer_job(service, tenant, row, done, wait)


@router.get("/{model_id}/lookup", operation_id="get_model_lookup", response_class=Response,
            responses={200: {"content": {"application/octet-stream": BINARY_SCHEMA},
                             "description": "the embedding table [vocab, dim] as float32 .npy"}, **_ERRORS})
def get_lookup(model: ModelDep, _tenant: TenantDep, service: ServiceDep) -> Response:
    """The embedding table a client looks its token ids up in before encrypting (a model with `client_lookup`)."""
    if not model["summary"].get("client_lookup"):
        raise ServiceError("not_found", "this model takes features: it has no client-side lookup table")
    table = client_lookup(model_directory(service, model["id"]))
    buffer = io.BytesIO()
    np.save(buffer, table.astype(np.float32), allow_pickle=False)
    return Response(content=buffer.getvalue(), media_type="application/octet-stream")


@router.get("/{model_id}/embeddings", operation_id="get_model_embeddings", response_class=Response,
            responses={200: {"content": {"application/octet-stream": BINARY_SCHEMA},
                             "description": "an .npz of float32 arrays: word, position, token_type (when the model "
                                            "has one), gamma, beta and eps"}, **_ERRORS})
def get_embeddings(model: ModelDep, _tenant: TenantDep, service: ServiceDep) -> Response:
    """A transformer encoder's embedding tables and LayerNorm, with which a client computes its sentence's token
    vectors before encrypting them (einfhe.compiler.transformer.TokenEmbeddings)."""
    if not model["summary"].get("encoder"):
        raise ServiceError("not_found", "this model is no transformer encoder: it has no embedding tables")
    buffer = io.BytesIO()
    np.savez(buffer, **encoder_embeddings(model_directory(service, model["id"])))
    return Response(content=buffer.getvalue(), media_type="application/octet-stream")


@router.post("/{model_id}/infer", operation_id="infer_plaintext", response_class=Response, openapi_extra=_NPY_BODY,
             responses={200: {"content": {"application/octet-stream": BINARY_SCHEMA},
                              "description": "the outputs as .npy: (batch, outputs), or (outputs,) for one sample"},
                        **_ERRORS})
def infer_plaintext(model: ModelDep, body: OperandBody, _tenant: TenantDep, service: ServiceDep,
                    content_type: Annotated[str, Header()] = "application/octet-stream") -> Response:
    """Run the model on plaintext samples in a worker process (quant's kernels) and answer inline."""
    inputs, single = plaintext_inputs(model["summary"], body, content_type, service.settings.max_infer_rows)
    try:
        y = service.executor.submit_call(run_plaintext, str(model_directory(service, model["id"])), *inputs).result()
    except BrokenProcessPool as exc:
        raise ServiceError("internal_error", "the worker process running this inference died") from exc
    except (IndexError, RuntimeError, ValueError) as exc:  # torch refusing the inputs (a token id past the vocabulary)
        raise ServiceError("invalid_request", f"the model cannot run on these inputs: {str(exc)[:300]}") from exc
    if not np.isfinite(y).all():
        raise ServiceError("invalid_request", "the samples overflow the model's float32 arithmetic (outputs would "
                                              "be infinite or NaN): send values of a sane magnitude")
    buffer = io.BytesIO()
    np.save(buffer, y[0] if single else y, allow_pickle=False)
    return Response(content=buffer.getvalue(), media_type="application/octet-stream")
