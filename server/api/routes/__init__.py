"""One router per resource: key sets, operands, plans, jobs, models."""

from __future__ import annotations

from . import jobs, keysets, models, operands, plans

__all__ = ["ROUTERS"]

ROUTERS = (keysets.router, operands.router, plans.router, jobs.router, models.router)
