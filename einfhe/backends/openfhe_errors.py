"""The one place where OpenFHE's exceptions become einfhe errors (`translate_errors`)."""

from __future__ import annotations

import contextlib

from ..errors import BackendError

__all__ = ["translate_errors"]

_OPENFHE_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, OverflowError, MemoryError)


@contextlib.contextmanager
def translate_errors(action: str, error: type = BackendError):
    """Turn any exception raised by openfhe while doing `action` into an einfhe error."""
    try:
        yield
    except _OPENFHE_ERRORS as exc:
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise error(f"OpenFHE failed to {action}: {text}") from exc
