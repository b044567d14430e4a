"""One router per resource: key sets, operands, plans, jobs."""

from __future__ import annotations

from . import jobs, keysets, operands, plans

__all__ = ["ROUTERS"]

ROUTERS = (keysets.router, operands.router, plans.router, jobs.router)
