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
    from .local import listening_socket
    from .settings import Settings

    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("token_file", args.token_file),
                                   ("workers", args.workers), ("executor", args.executor),
                                   ("scheduler", args.scheduler)) if v is not None}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(Settings(**overrides))
    except ServiceError as exc:  # storage unusable at start: one line, no traceback
        print(f"einfhe serve: error: {exc.message}", file=sys.stderr)
        return 1
    config = uvicorn.Config(app, access_log=False, log_config=None)
    uvicorn.Server(config).run(sockets=[listening_socket(args.host, args.port)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
