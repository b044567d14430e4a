"""A small per-process cache of files read and parsed on every job: model plans and plain operands (.npy).

An entry is keyed by the file's path and its identity on disk (inode, size, modification time), checked with one
`os.stat` per use, so a file replaced or rewritten in place is read again and a deleted one raises
FileNotFoundError as before. The paths come from the API's checked rows (a tenant's own operand, stored under its
content digest; a registered model's directory, immutable per id), so a cached value is only ever served to a job
that names the very same file. Cached arrays are made read-only: a job cannot change what the next one reads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Generic, TypeVar

import numpy as np

__all__ = ["FileCache", "load_npy"]

T = TypeVar("T")


class FileCache(Generic[T]):
    """`parse(path)` of at most `maxsize` files of `max_bytes` on disk in all, least recently used first out (a
    larger file is parsed and not kept); thread-safe."""

    def __init__(self, parse: Callable[[Path], T], maxsize: int = 32, max_bytes: int = 32 << 20) -> None:
        self._parse = parse
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | os.PathLike) -> T:
        """The parsed content of `path`, read again when the file changed since it was cached."""
        info = os.stat(path)
        key = (os.fspath(path), info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = self._parse(Path(path))
        if info.st_size > self._max_bytes:
            return value
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._maxsize or sum(k[2] for k in self._entries) > self._max_bytes:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


def load_npy(path: Path) -> np.ndarray:
    """A plain .npy array (no pickles) as float64 (operands are stored in their own dtype), read-only."""
    array = np.load(path, allow_pickle=False).astype(np.float64, copy=False)
    array.flags.writeable = False
    return array
