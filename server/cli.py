"""`einfhe serve`: run the service with uvicorn (host, port, data directory, token file)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="einfhe serve", description="Serve encrypted einsums over REST.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--data-dir", type=Path, default=None, help="metadata and blobs (default $EINFHE_DATA_DIR or ./data)")
    parser.add_argument("--token-file", type=Path, default=None, help="file of 'tenant:token' lines")
    parser.add_argument("--workers", type=int, default=None, help="worker processes for jobs (default 2)")
    parser.add_argument("--executor", choices=("local", "dask"), default=None,
                        help="run jobs in local worker processes (default) or on Dask")
    parser.add_argument("--scheduler", default=None,
                        help="Dask scheduler address, e.g. tcp://host:8786 (default: a local cluster of --workers)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and serve until interrupted."""
    args = _parser().parse_args(argv)
    import uvicorn

    from .app import create_app
    from .errors import ServiceError
    from .local import listening_socket, uvicorn_config
    from .settings import Settings

    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("token_file", args.token_file),
                                   ("workers", args.workers), ("executor", args.executor),
                                   ("scheduler", args.scheduler)) if v is not None}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings(**overrides)
    except ValueError as exc:  # a bad setting (pydantic's ValidationError is a ValueError)
        return _config_error(exc)
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        return _config_error(ValueError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"))
    try:
        app = create_app(settings)
    except (ServiceError, ValueError) as exc:  # storage unusable at start, a bad or missing token file
        sock.close()
        return _config_error(exc)
    host, port = sock.getsockname()[:2]
    print(f"einfhe serve: listening on http://{host}:{port} (API docs at http://{host}:{port}/docs)", flush=True)
    uvicorn.Server(uvicorn_config(app, settings)).run(sockets=[sock])
    return 0


def _config_error(exc: Exception) -> int:
    """Print why the service cannot start as one line (no traceback) and return the exit status 1."""
    if hasattr(exc, "errors"):  # pydantic's ValidationError: one clause per bad setting
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    else:
        message = getattr(exc, "message", None) or str(exc)
    print(f"einfhe serve: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
