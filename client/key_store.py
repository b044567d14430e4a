"""A client's keys kept on disk between processes: per parameter set, the secret context and its key set's id.

    <directory>/<fingerprint>.context    einfhe.save_context (secret key included, owner-only)
    <directory>/<fingerprint>.json       {"keyset_id": ...}: the server's id of its evaluation keys

A later process with the same directory reuses both instead of making and uploading ~15 MB of keys again; when
the server no longer holds the key set (deleted, or expired after being idle), the same keys are uploaded again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from einfhe import Context, load_context, save_context

__all__ = ["KeyStore"]


class KeyStore:
    """Saved contexts and key-set ids under one directory (created owner-only)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def load(self, fingerprint: str) -> tuple[Context, str] | None:
        """The saved context and key-set id for a parameter fingerprint, or None."""
        context, meta = self.directory / f"{fingerprint}.context", self.directory / f"{fingerprint}.json"
        if not (context.exists() and meta.exists()):
            return None
        return load_context(context), json.loads(meta.read_text())["keyset_id"]

    def save(self, fingerprint: str, ctx: Context, keyset_id: str) -> None:
        """Keep `ctx` and the id of its uploaded key set for later processes."""
        save_context(ctx, self.directory / f"{fingerprint}.context")
        meta = self.directory / f"{fingerprint}.json"
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keyset_id": keyset_id}))
        os.replace(tmp, meta)
