"""The per-process cache of parsed plans and plain operands (server/file_cache.py): a file is parsed once while it
stays the same, read again once replaced or rewritten, never served for another path, and bounded."""

import os

import numpy as np
import pytest

from server.file_cache import FileCache, load_npy


def _counting_cache(**bounds):
    reads = []

    def parse(path):
        reads.append(path.stem)
        return load_npy(path)

    return FileCache(parse, **bounds), reads


def test_a_file_is_parsed_once_while_unchanged(tmp_path):
    cache, reads = _counting_cache()
    np.save(tmp_path / "w.npy", np.arange(6.0))
    first, second = cache.get(tmp_path / "w.npy"), cache.get(tmp_path / "w.npy")
    assert first is second and reads == ["w"]
    np.testing.assert_array_equal(first, np.arange(6.0))
    with pytest.raises(ValueError):
        first[0] = 1.0  # read-only: a job cannot change what the next one reads


def test_a_replaced_or_rewritten_file_is_read_again(tmp_path):
    cache, _ = _counting_cache()
    path = tmp_path / "w.npy"
    np.save(path, np.zeros(4))
    cache.get(path)
    np.save(tmp_path / "new.npy", np.ones(4))
    os.replace(tmp_path / "new.npy", path)  # as the store writes blobs: a new file renamed over the old one
    np.testing.assert_array_equal(cache.get(path), np.ones(4))
    np.save(path, np.full(5, 2.0))  # rewritten in place, another size
    np.testing.assert_array_equal(cache.get(path), np.full(5, 2.0))
    path.unlink()
    with pytest.raises(FileNotFoundError):
        cache.get(path)


def test_another_path_never_gets_a_cached_value(tmp_path):
    """Two tenants' operands live at two paths (their digests): each job reads its own, even with equal names."""
    cache, _ = _counting_cache()
    (tmp_path / "alice").mkdir()
    (tmp_path / "bob").mkdir()
    np.save(tmp_path / "alice" / "W.npy", np.full(3, 7.0))
    np.save(tmp_path / "bob" / "W.npy", np.full(3, -1.0))
    np.testing.assert_array_equal(cache.get(tmp_path / "alice" / "W.npy"), np.full(3, 7.0))
    np.testing.assert_array_equal(cache.get(tmp_path / "bob" / "W.npy"), np.full(3, -1.0))


def test_entries_and_bytes_are_bounded(tmp_path):
    cache, reads = _counting_cache(maxsize=2, max_bytes=3000)
    for name, size in (("a", 10), ("b", 10), ("c", 10), ("big", 1000)):
        np.save(tmp_path / f"{name}.npy", np.zeros(size))
    for name in ("a", "b", "c", "a"):  # a was evicted by c (two entries at most)
        cache.get(tmp_path / f"{name}.npy")
    assert reads == ["a", "b", "c", "a"]
    cache.get(tmp_path / "big.npy")
    cache.get(tmp_path / "big.npy")  # 8 KB: over max_bytes, parsed each time and never kept
    assert reads[-2:] == ["big", "big"]
    cache.get(tmp_path / "a.npy")
    assert reads[-1] == "big"  # a is still cached
