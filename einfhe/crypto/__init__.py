"""What a client and a server hold: contexts (`context`), keys and their bytes (`keys`), encrypted tensors
(`tensor`), the checked envelope every blob travels in (`blobs`), and a worker's evaluation-key cache
(`key_cache`)."""

from __future__ import annotations

from .blobs import pack_blob, pack_parts, unpack_blob, unpack_parts
from .context import Context
from .key_cache import KeyMismatchError, cached_backend, cached_key_sets, clear_key_cache, require_key_tag
from .keys import context_from_evaluation_keys, evaluation_keys_to_bytes, load_context, save_context
from .tensor import EncryptedTensor, tensor_from_bytes, tensor_to_bytes

__all__ = [
    "Context", "EncryptedTensor", "KeyMismatchError", "cached_backend", "cached_key_sets", "clear_key_cache",
    "require_key_tag", "context_from_evaluation_keys", "evaluation_keys_to_bytes", "load_context",
    "pack_blob", "pack_parts", "save_context", "tensor_from_bytes", "tensor_to_bytes", "unpack_blob", "unpack_parts",
]
