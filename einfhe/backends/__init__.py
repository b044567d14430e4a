"""Backends that run plans, looked up by name: `simulator` (exact numpy) and `openfhe` (RNS-CKKS)."""

from __future__ import annotations

from ..errors import EinfheError
from .base import Backend

__all__ = ["Backend", "BACKENDS", "get_backend_class"]

BACKENDS = ("simulator", "openfhe")


def get_backend_class(name: str) -> type[Backend]:
    """The backend class registered as `name`; an unknown name lists the valid ones."""
    if name == "simulator":
        from .simulator import SimulatorBackend

        return SimulatorBackend
    if name == "openfhe":
        from .openfhe import OpenFHEBackend

        return OpenFHEBackend
    raise EinfheError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
