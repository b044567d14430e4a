"""Real English prose every Python ships: the docstrings of standard-library modules (no download)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

__all__ = ["STDLIB_MODULES", "stdlib_docstrings"]

STDLIB_MODULES = ("argparse", "asyncio", "bisect", "calendar", "collections", "csv", "datetime", "decimal", "email",
                  "fractions", "functools", "heapq", "http.client", "inspect", "itertools", "json", "logging",
                  "os", "pathlib", "pickle", "random", "re", "shutil", "socket", "statistics", "string",
                  "subprocess", "tarfile", "textwrap", "threading", "typing", "unittest", "urllib.parse", "zipfile")


def stdlib_docstrings(modules: tuple[str, ...] = STDLIB_MODULES) -> Iterator[tuple[str, str]]:
    """Yield ``(module, docstring)`` for each documented callable or submodule of each module, in a fixed order."""
    for module_name in modules:
        module = importlib.import_module(module_name)
        for _name, member in sorted(vars(module).items()):
            doc = inspect.getdoc(member) if callable(member) or inspect.ismodule(member) else None
            if doc:
                yield module_name, doc
