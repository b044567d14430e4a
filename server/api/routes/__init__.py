"""One router per resource: the health check, key sets, operands, plans, jobs, models."""

from __future__ import annotations

from . import health, jobs, keysets, models, operands, plans

__all__ = ["ROUTERS"]

ROUTERS = (health.router, keysets.router, operands.router, plans.router, jobs.router, models.router)
