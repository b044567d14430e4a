"""The REST API: routers, dependencies and schemas."""

from __future__ import annotations

from .routes import ROUTERS

__all__ = ["ROUTERS"]
