"""einfhe's service: a FastAPI app that runs encrypted einsums and model inference on evaluation keys its tenants
upload once.

    from server import Settings, create_app
    app = create_app(Settings(data_dir="data", token_file="tokens.txt"))   # uvicorn.run(app, ...)
"""

from __future__ import annotations

import einfhe as _einfhe  # noqa: F401  -- loads openfhe before any other extension module

from .app import create_app
from .errors import CODES, JOB_CODES, ServiceError
from .executor import Executor, LocalProcessExecutor
from .job_messages import JobOutcome, JobTask, KeySetCheck
from .local import LocalServer
from .settings import Settings

__all__ = [
    "CODES", "JOB_CODES", "Executor", "JobOutcome", "JobTask", "KeySetCheck", "LocalProcessExecutor",
    "LocalServer", "ServiceError", "Settings", "create_app",
]
