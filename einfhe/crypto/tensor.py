"""Encrypted tensors: a layout plus the backend ciphertexts that hold it, and their byte format."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SerializationError
from ..layout import Layout
from .blobs import pack_blob, pack_parts, unpack_blob, unpack_parts

__all__ = ["EncryptedTensor", "TensorBlob", "read_tensor_blob", "tensor_to_bytes", "tensor_from_bytes"]


@dataclass(frozen=True)
class EncryptedTensor:
    """A tensor encrypted in `layout` as `len(cts)` ciphertexts of a context's backend."""

    cts: tuple
    layout: Layout

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical shape of the tensor (the layout's view where the compiler split an axis into tiles)."""
        return self.layout.tensor_shape

    def __repr__(self) -> str:
        return f"EncryptedTensor(shape={self.shape}, {self.layout})"


def tensor_to_bytes(ctx, tensor: EncryptedTensor) -> bytes:
    """Serialize an encrypted tensor (layout + ciphertexts) behind einfhe's header."""
    parts = [ctx.backend.serialize_ciphertext(ct) for ct in tensor.cts]
    payload = pack_parts({"layout": tensor.layout.to_json()}, parts)
    return pack_blob("tensor", ctx.params.fingerprint(), payload)


@dataclass(frozen=True)
class TensorBlob:
    """A tensor blob read without any backend: its layout and its ciphertexts, still serialized."""

    layout: Layout
    parts: tuple[bytes, ...]


def read_tensor_blob(data, fingerprint: bytes, slots: int, max_cts: int = 4096, *,
                     checksum: bool = True) -> TensorBlob:
    """Check a tensor blob's header, parameter fingerprint, layout and ciphertext count before any ciphertext is
    deserialized (`checksum=False`: bytes whose CRC-32 the caller has already checked in memory, see unpack_blob)."""
    payload = unpack_blob(data, "tensor", fingerprint, checksum=checksum)
    meta, parts = unpack_parts(payload, max_parts=max_cts)
    layout = Layout.from_json(meta.get("layout", {}))
    if layout.slots != slots or len(parts) != layout.num_cts:
        raise SerializationError(
            f"tensor blob holds {len(parts)} ciphertext(s) of a {layout.slots}-slot layout needing {layout.num_cts}"
        )
    return TensorBlob(layout, tuple(parts))


def tensor_from_bytes(ctx, data: bytes, max_cts: int = 4096, *, checksum: bool = True,
                      for_arithmetic: bool = True) -> EncryptedTensor:
    """Load an encrypted tensor, checking header, fingerprint and ciphertext count before the backend sees it
    (`checksum=False`: bytes whose CRC-32 the caller has already checked in memory, see unpack_blob;
    `for_arithmetic=False`: a tensor that will only be decrypted, which skips moving each ciphertext onto the
    context's own ring parameters, an addition per ciphertext that only later arithmetic repays)."""
    blob = read_tensor_blob(data, ctx.params.fingerprint(), ctx.slots, max_cts, checksum=checksum)
    cts = tuple(ctx.backend.deserialize_ciphertext(p, for_arithmetic=for_arithmetic) for p in blob.parts)
    return EncryptedTensor(cts, blob.layout)
