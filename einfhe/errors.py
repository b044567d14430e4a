"""Errors raised by einfhe, one root with a branch per stage of the pipeline.

    EinfheError
    ├── EinsumError        a spec that numpy.einsum would refuse, or operands that do not fit it
    ├── LayoutError        a tensor that does not fit a layout, or a layout that cannot exist
    ├── PlanError          a plan that cannot run: too deep, too large, missing rotation keys
    │   └── OverBudgetError    no plan of an einsum fits the key or upload budget (it says what to raise)
    ├── ParameterError     CKKS parameters below 128-bit security or too small for a plan
    ├── SerializationError bytes that are not an einfhe blob, or one made for other parameters
    │   └── CorruptBlobError   an einfhe blob whose checksum does not match: damaged after it was written
    ├── ModelError         a model file or layer einfhe cannot compile
    ├── DistributedError   a distributed run lost a result (workers kept dying, the cluster went away, timeout)
    └── BackendError       a failure inside a backend (OpenFHE's exceptions, translated)

Every error takes keyword context (the spec, the operand, the step) which the message shows, so that a
user sees what was wrong and what to do next.
"""

from __future__ import annotations

__all__ = [
    "EinfheError",
    "EinsumError",
    "LayoutError",
    "PlanError",
    "OverBudgetError",
    "ParameterError",
    "SerializationError",
    "CorruptBlobError",
    "ModelError",
    "DistributedError",
    "BackendError",
]


class EinfheError(Exception):
    """Root of every error einfhe raises on purpose."""

    def __init__(self, message: str, **context: object) -> None:
        self.message = message
        self.context = context
        details = "; ".join(f"{key}={value!r}" for key, value in context.items())
        super().__init__(f"{message} ({details})" if details else message)


class EinsumError(EinfheError, ValueError):
    """The einsum spec or the operands given for it are invalid."""


class LayoutError(EinfheError, ValueError):
    """A tensor does not fit a layout, or a layout is malformed."""


class PlanError(EinfheError):
    """A plan cannot be built or run as asked (depth, size, keys)."""


class OverBudgetError(PlanError):
    """No plan of an einsum fits the budget; `needs` maps each budget to raise ("key_budget", "upload_budget") to
    the bytes the leanest plan tried needs (empty when no single plan fits both budgets)."""

    def __init__(self, message: str, needs: dict[str, int], **context: object) -> None:
        super().__init__(message, **context)
        self.needs = dict(needs)


class ParameterError(EinfheError, ValueError):
    """CKKS parameters are insecure or too small for the plan."""


class SerializationError(EinfheError, ValueError):
    """Bytes are not a valid einfhe blob for these parameters."""


class CorruptBlobError(SerializationError):
    """An einfhe blob's checksum does not match its bytes (damaged in storage or transit)."""


class ModelError(EinfheError, ValueError):
    """A model (or its integer export) cannot be compiled."""


class DistributedError(EinfheError):
    """A distributed run lost a result: workers kept dying under a task, the cluster went away, or it timed out."""


class BackendError(EinfheError, RuntimeError):
    """A backend failed while running a plan."""
