"""The FastAPI application: routers, error handlers, middleware, and the service's lifetime."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import logging
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .api import ROUTERS
from .api.docs import install_docs
from .api.openapi import document_errors
from .errors import CODES, ServiceError, error_body
from .executor import Executor
from .admission import Admission
from .middleware import RequestLog
from .service import Service
from .settings import Settings
from .worker_start import refuse_start_in_bootstrapping_worker

__all__ = ["create_app"]

log = logging.getLogger("einfhe.server")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 401: "unauthorized"}


def _error(code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=CODES[code], headers=headers)


def _allowed_methods(app: FastAPI, path: str) -> str:
    """The methods the OpenAPI document lists for `path` (HEAD with GET), for the Allow header of a 405."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}/]+\}", "[^/]+", template), path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))


def _install_error_handlers(app: FastAPI) -> None:
    """Answer every error as {"error": {"code", "message"}}."""

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error("invalid_request", details or "the request is malformed")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "internal_error")
        response = _error(code, str(exc.detail))
        if exc.status_code == 405:
            response.headers["Allow"] = _allowed_methods(app, request.url.path)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error("internal_error", "the server failed unexpectedly; the error is logged")


def create_app(settings: Settings | None = None, executor: Executor | None = None) -> FastAPI:
    """Build the app and its Service (storage opened, interrupted jobs marked failed) from `settings`; refused in a
    worker process that is importing the main module (the script lacks `if __name__ == "__main__":`)."""
    refuse_start_in_bootstrapping_worker("the einfhe service")
    settings = settings or Settings()
    service = Service(settings, executor)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="einfhe", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Encrypted einsum and model inference as a service: the server computes on CKKS ciphertexts it "
                    "cannot read. "
                    "Ciphertexts and keys travel as binary (octet-stream or msgpack) in the format of "
                    "docs/wire-format.md (magic, version, kind, parameter fingerprint, length, CRC-32, parts); errors "
                    'are {"error": {"code", "message"}} with a code from ErrorCode. Authorize with a tenant\'s API '
                    "token (HTTP bearer).",
    )
    app.state.service = service
    for router in ROUTERS:
        app.include_router(router)
    _install_error_handlers(app)
    document_errors(app)
    install_docs(app)
    app.add_middleware(Admission, settings=settings, tenants=service.tenants)
    app.add_middleware(RequestLog)
    return app
