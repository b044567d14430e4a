"""Running a plan: the interpreter (`interpreter`), the thread scheduler of independent steps (`scheduler`), and
the Dask runner that spreads a plan's parts over a cluster (`dask_runner`, imported on its own: it needs the
dist extra)."""

from __future__ import annotations

from .interpreter import RunStats, execute
from .scheduler import default_workers

__all__ = ["RunStats", "default_workers", "execute"]
