"""The service's errors: one exception carrying a stable code, and the table of codes with their HTTP status.

    ServiceError(code, message)   ->  HTTP status from CODES, body {"error": {"code": ..., "message": ...}}

Codes are part of the API contract: clients branch on them, so they never change meaning. Job failures use
the same vocabulary (`JOB_CODES`) in the job's ``error`` field.
"""

from __future__ import annotations

__all__ = ["CODES", "JOB_CODES", "ServiceError", "error_body"]

CODES: dict[str, int] = {
    "invalid_request": 400,
    "malformed_blob": 400,
    "corrupt_blob": 400,
    "secret_key_refused": 400,
    "unknown_key_part": 400,
    "insecure_parameters": 400,
    "invalid_parameters": 400,
    "invalid_einsum": 400,
    "malformed_model": 400,
    "unsupported_model": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "keyset_mismatch": 409,
    "job_not_finished": 409,
    "job_failed": 409,
    "keyset_in_use": 409,
    "name_taken": 409,
    "keyset_quota": 409,
    "result_not_kept": 410,
    "request_timeout": 408,
    "length_required": 411,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "work_limit_exceeded": 422,
    "over_budget": 422,
    "tenant_quarantined": 429,
    "headers_too_large": 431,
    "internal_error": 500,
    "storage_unavailable": 503,
    "server_busy": 503,
    "worker_start_failed": 503,
    "storage_full": 507,
}

JOB_CODES: tuple[str, ...] = (
    "interrupted", "worker_crashed", "quarantined", "malformed_blob", "corrupt_blob", "key_mismatch", "keyset_deleted", "plan_error", "over_budget",
    "backend_error", "out_of_memory", "worker_start_failed",
    "invalid_einsum", "storage_full", "storage_unavailable", "internal_error",
)


class ServiceError(Exception):
    """An error answered to the client as JSON with a stable `code` (its HTTP status comes from CODES)."""

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers  # extra response headers (Retry-After)

    @property
    def status(self) -> int:
        """The HTTP status for this error's code."""
        return CODES[self.code]


def error_body(code: str, message: str) -> dict:
    """The JSON body of every error response."""
    return {"error": {"code": code, "message": message}}
