"""The health check: answered without a token, so a load balancer or a newcomer can see the service is up."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..schemas import Health

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, operation_id="health")
async def health(request: Request) -> Health:
    """Whether the service answers, and its version (no token needed; nothing about tenants)."""
    return Health(status="ok", version=request.app.version)
