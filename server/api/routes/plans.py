"""Einsum plans: compiled before any upload, so a client learns the parameters, layouts and rotations it needs."""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
from fastapi import APIRouter

import einfhe
from einfhe import EinfheError, OverBudgetError, Parameters, Plan
from einfhe.plan.budget import DEFAULT_KEY_BUDGET, DEFAULT_UPLOAD_BUDGET, mib

from ...errors import ServiceError
from ...job_messages import job_error_code
from ...service import Service
from ..deps import PlanDep, ServiceDep, TenantDep
from ..schemas import ErrorResponse, PlanCreate, PlanPublic

__all__ = ["router"]

router = APIRouter(prefix="/plans", tags=["plans"])


def plan_public(row: dict) -> PlanPublic:
    """The public description of a stored plan."""
    plan = Plan.from_json(row["plan"])
    params = Parameters.from_json(row["params"])
    return PlanPublic(
        id=row["id"], spec=row["spec"], operands=row["operands"], plan=json.loads(row["plan"]),
        params=params.to_json(), fingerprint=params.fingerprint().hex(), depth=plan.depth,
        rotations=list(plan.rotations),
        input_layouts={str(op.operand): op.layout.to_json() for op in plan.cipher_inputs},
        output_layout=plan.output_layout.to_json(), cts_in=plan.cts_in, cts_out=plan.cts_out,
        explain=plan.explain(), created=row["created"],
    )


def _operand_values(request: PlanCreate, tenant: str, service: Service) -> list:
    """Placeholders for cipher operands and the registered arrays for plain ones."""
    values = []
    for ref in request.operands:
        if ref.cipher is not None:
            values.append(einfhe.cipher(ref.cipher, bound=ref.bound))
            continue
        row = service.store.get("operands", tenant, name=ref.plain)
        if row is None:
            raise ServiceError("not_found", f"no registered operand {ref.plain!r}: PUT /operands/{ref.plain} first")
        values.append(np.load(service.store.blob_path("operands", f"{row['digest']}.npy"), mmap_mode="r"))
    return values


def _compile(request: PlanCreate, values: list, service: Service) -> Plan:
    """Compile within the service's work caps."""
    settings = service.settings
    shapes = [v.shape for v in values]
    try:
        spec = einfhe.parse_einsum(request.spec, *shapes)
    except EinfheError as exc:
        raise ServiceError("invalid_einsum", exc.message) from exc
    space = math.prod(spec.sizes.values())
    if space > settings.max_iteration_space:
        raise ServiceError("work_limit_exceeded",
                           f"the iteration space has {space} points; this server's limit is {settings.max_iteration_space}")
    budgets = _budgets(request, settings)
    try:
        plan = einfhe.compile(request.spec, *values, slots=request.slots, max_cts=settings.max_cts, **budgets)
    except OverBudgetError as exc:
        raise ServiceError(job_error_code(exc), _over_budget_message(exc, budgets, settings)) from exc
    except EinfheError as exc:
        raise ServiceError("invalid_einsum", str(exc)) from exc
    if len(plan.steps) > settings.max_plan_steps:
        raise ServiceError("work_limit_exceeded",
                           f"the plan has {len(plan.steps)} steps; this server's limit is {settings.max_plan_steps}")
    return plan


# each budget a plan request may set: the server's cap on it (a key set, a job's ciphertexts) and that cap's setting
_BUDGET_CAPS = {"key_budget": "max_keyset_bytes", "upload_budget": "max_ciphertext_bytes"}
_BUDGET_DEFAULTS = {"key_budget": DEFAULT_KEY_BUDGET, "upload_budget": DEFAULT_UPLOAD_BUDGET}


def _budgets(request: PlanCreate, settings) -> dict[str, int]:
    """The request's key and upload budgets (einfhe's defaults where it sets none, within the server's caps)."""
    budgets = {}
    for name, cap_name in _BUDGET_CAPS.items():
        asked, cap = getattr(request, name), getattr(settings, cap_name)
        if asked is not None and asked > cap:
            raise ServiceError("work_limit_exceeded", f"{name}={asked} is past this server's limit of {mib(cap)} "
                                                      f"(EINFHE_{cap_name.upper()})")
        budgets[name] = asked if asked is not None else min(_BUDGET_DEFAULTS[name], cap)
    return budgets


def _over_budget_message(exc: OverBudgetError, budgets: dict[str, int], settings) -> str:
    """What the leanest plan needs beside the request's budgets, and how far this server lets a request raise them."""
    if not exc.needs:
        return exc.message
    parts = []
    for name, needed in exc.needs.items():
        cap_name = _BUDGET_CAPS[name]
        cap = getattr(settings, cap_name)
        where = (f"set {name}={needed} in the plan request (this server allows up to {mib(cap)})" if needed <= cap
                 else f"that is past this server's limit of {mib(cap)} (EINFHE_{cap_name.upper()}): split the tensors")
        parts.append(f"the leanest plan needs {name} >= {needed} bytes ({mib(needed)}; this request's is "
                     f"{mib(budgets[name])}): {where}")
    return "no plan of this einsum fits the budget: " + "; ".join(parts)


def _parameters(request: PlanCreate, plan: Plan, service: Service) -> Parameters:
    """The client's parameters (validated, and checked to fit the plan) or 128-bit ones derived from it (with the
    small first modulus its ring was priced on where the ring was chosen, as einfhe.Context.for_plan does)."""
    if request.params is None:
        try:
            return Parameters.derive(plan.depth, plan.slots, small_first_modulus=plan.chosen_ring is not None)
        except EinfheError as exc:
            raise ServiceError("work_limit_exceeded", exc.message) from exc
    params = service.parameters(request.params)
    if params.slots != plan.slots or params.depth < plan.depth:
        raise ServiceError("invalid_parameters",
                           f"the plan needs {plan.slots} slots and depth {plan.depth}; the parameters give "
                           f"{params.slots} slots and depth {params.depth}")
    return params


@router.post("", status_code=201, response_model=PlanPublic, operation_id="create_plan",
             responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                        422: {"model": ErrorResponse}})
def create_plan(request: PlanCreate, tenant: TenantDep, service: ServiceDep) -> PlanPublic:
    """Compile an einsum over cipher shapes and registered plaintext operands."""
    values = _operand_values(request, tenant, service)
    plan = _compile(request, values, service)
    params = _parameters(request, plan, service)
    row = service.store.insert(
        "plans", id=uuid.uuid4().hex, tenant=tenant, spec=request.spec,
        operands=[r.model_dump(exclude_none=True) for r in request.operands], plan=plan.to_json(),
        params=params.to_json(),
    )
    return plan_public(row)


@router.get("", response_model=list[PlanPublic], operation_id="list_plans")
def list_plans(tenant: TenantDep, service: ServiceDep) -> list[PlanPublic]:
    """The tenant's plans."""
    return [plan_public(r) for r in service.store.list("plans", tenant)]


@router.get("/{plan_id}", response_model=PlanPublic, operation_id="get_plan", responses={404: {"model": ErrorResponse}})
def get_plan(plan: PlanDep) -> PlanPublic:
    """One plan, with its parameters, layouts and rotation set."""
    return plan_public(plan)
