"""Errors the client raises, one root; the server's error code travels on every one.

    ClientError                 .code, .message, .status
    ├── ConnectionFailed        the server could not be reached (after retries)
    ├── ServerError             the server answered with an error
    │   ├── BadRequest          400, 405, 411, 415, 422: the request was malformed or refused
    │   ├── Unauthorized        401: missing or unknown API token
    │   ├── Forbidden           403: the token may not do this (e.g. register a model: operators only)
    │   ├── NotFound            404: no such object for this token (other tenants' objects look missing);
    │   │                       410: a result answered inline that the server, as asked, did not keep
    │   ├── Conflict            409: wrong state (job not finished or failed, key set not matching the plan)
    │   ├── PayloadTooLarge     413: a body over the server's cap
    │   └── InternalServerError 5xx
    │       └── WorkerStartFailed   503 worker_start_failed: the server's worker processes exit as they start (a
    │                               script running the service in-process without `if __name__ == "__main__":`)
    └── JobFailed               a job finished with an error (its code is the job's, e.g. malformed_blob)
"""

from __future__ import annotations

__all__ = [
    "BadRequest", "ClientError", "Conflict", "ConnectionFailed", "Forbidden", "InternalServerError", "JobFailed",
    "NotFound", "PayloadTooLarge", "ServerError", "Unauthorized", "WorkerStartFailed", "error_for_status",
]


class ClientError(Exception):
    """Root of every error the einfhe client raises."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.status = status


class ConnectionFailed(ClientError):
    """The server could not be reached."""


class ServerError(ClientError):
    """The server answered with an error status and code."""


class BadRequest(ServerError):
    """The server refused the request as malformed, insecure or unsupported."""


class Unauthorized(ServerError):
    """The API token is missing or unknown."""


class Forbidden(ServerError):
    """The token is valid but may not do this."""


class NotFound(ServerError):
    """No such object for this token."""


class Conflict(ServerError):
    """The object is in the wrong state for this request."""


class PayloadTooLarge(ServerError):
    """The body exceeded the server's cap."""


class InternalServerError(ServerError):
    """The server failed."""


class WorkerStartFailed(InternalServerError):
    """The server's worker processes exit before they can take work; a script that starts the service in-process
    must do so under `if __name__ == "__main__":` (the message says more)."""


class JobFailed(ClientError):
    """A job finished with an error."""


_BY_STATUS = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: NotFound, 413: PayloadTooLarge}


def error_for_status(status: int, code: str, message: str) -> ServerError:
    """The typed exception for an error response."""
    if status >= 500:
        return (WorkerStartFailed if code == "worker_start_failed" else InternalServerError)(code, message, status)
    return _BY_STATUS.get(status, BadRequest)(code, message, status)
