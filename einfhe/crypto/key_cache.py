"""The evaluation-key cache of a worker process (a service worker or a Dask worker): the key sets it holds, by id,
at most `capacity` of them, and the check that a ciphertext was made under the key set it is evaluated with.

OpenFHE keeps evaluation keys in a process-global cache that can only be cleared whole, so loading one key set
more than the capacity allows, or any failure to load one, first clears every key and crypto context of the
process: a job only ever evaluates with its own tenant's keys.

    backend = cached_backend("keyset-1", lambda: path.read_bytes(), params_json)
    require_key_tag(backend, tensor.cts, "operand 1")
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from ..backends.openfhe import OpenFHEBackend, release_openfhe_caches
from ..errors import SerializationError
from ..params import Parameters
from .keys import context_from_evaluation_keys

__all__ = ["KeyMismatchError", "cached_backend", "cached_key_sets", "clear_key_cache", "require_key_tag"]

_CACHE: OrderedDict = OrderedDict()  # keyset id -> OpenFHEBackend, in this process, least recently used first
_LOCK = threading.Lock()


class KeyMismatchError(SerializationError):
    """A ciphertext carries another key set's tag than the job's."""


def clear_key_cache() -> None:
    """Drop every evaluation key and crypto context OpenFHE caches in this process, and this cache's entries."""
    with _LOCK:
        release_openfhe_caches()
        _CACHE.clear()


def cached_key_sets() -> tuple[str, ...]:
    """The key-set ids loaded in this process, least recently used first."""
    with _LOCK:
        return tuple(_CACHE)


def cached_backend(keyset_id: str, keys: Callable[[], bytes], params: dict | None,
                   capacity: int = 1) -> OpenFHEBackend:
    """The backend holding key set `keyset_id`, loaded from `keys()` (an evaluation-key blob) only on a miss.

    `params` (a `Parameters.to_json` dict) is required of the key set when given. A miss with `capacity` key sets
    already loaded, or a failed load, clears the whole cache (and OpenFHE's) first."""
    with _LOCK:
        if keyset_id in _CACHE:
            _CACHE.move_to_end(keyset_id)
            return _CACHE[keyset_id]
    if len(cached_key_sets()) >= capacity:
        clear_key_cache()
    expected = Parameters.from_json(params) if params is not None else None
    try:
        backend = context_from_evaluation_keys(keys(), expected=expected).backend
    except BaseException:
        clear_key_cache()
        raise
    with _LOCK:
        _CACHE[keyset_id] = backend
    return backend


def require_key_tag(backend: OpenFHEBackend, cts, what: str) -> None:
    """Raise KeyMismatchError unless every ciphertext of `cts` was encrypted under `backend`'s key set."""
    if any(ct.GetKeyTag() != backend.key_tag for ct in cts):
        raise KeyMismatchError(f"{what} was encrypted under another key set than the job's")
