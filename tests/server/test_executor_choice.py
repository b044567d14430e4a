"""`einfhe serve --executor dask --scheduler ...` reaches the settings, and the settings pick the executor."""

from server.cli import _parser
from server.executor import LocalProcessExecutor
from server.service import _make_executor
from server.settings import Settings


def test_cli_accepts_the_executor_and_scheduler():
    args = _parser().parse_args(["--executor", "dask", "--scheduler", "tcp://127.0.0.1:8786"])
    assert (args.executor, args.scheduler) == ("dask", "tcp://127.0.0.1:8786")


def test_local_executor_is_the_default(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.executor == "local"
    executor = _make_executor(settings)
    try:
        assert isinstance(executor, LocalProcessExecutor)
    finally:
        executor.shutdown()
