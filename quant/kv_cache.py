"""A real quantized KV cache: int4 (or int8) keys and values stored per head and token, with the bytes to show.

Each key or value vector of one head and one token (``head_dim`` numbers, taken after RoPE where the model
has it) is quantized asymmetrically with its own fp16 scale and uint8 zero point, so groups never span heads
(QServe, Lin et al. 2024, section 5.3: KV4 per head). Int4 codes are packed two a byte, the first half of the
head's channels in the low nibbles and the second half in the high ones: the pairs that rotate-half RoPE
rotates together share a byte, and a kernel unpacks the two halves without any interleave.
"""

from __future__ import annotations

import torch

from quant.errors import ShapeError

__all__ = ["quantize_heads", "dequantize_heads", "QuantKVCache"]


def quantize_heads(t: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``[..., D]`` vectors to ``bits`` (4 or 8): uint8 codes (int4: ``[..., D/2]`` packed), fp16 scale, uint8 zero."""
    if bits not in (4, 8) or (bits == 4 and t.shape[-1] % 2):
        raise ShapeError("KV cache codes are 4 bits (even head_dim) or 8 bits", bits=bits, head_dim=t.shape[-1])
    levels = 2**bits - 1
    x = t.detach().float()
    lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
    scale = ((hi - lo) / levels).clamp(min=1e-6).half().float()
    zero = torch.round(-lo / scale).clamp(0, levels)
    codes = torch.clamp(torch.round(x / scale) + zero, 0, levels).to(torch.uint8)
    if bits == 4:
        half = codes.shape[-1] // 2
        codes = codes[..., :half] | (codes[..., half:] << 4)
    return codes, scale.squeeze(-1).half(), zero.squeeze(-1).to(torch.uint8)


def dequantize_heads(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Invert :func:`quantize_heads` up to rounding, returning float32 ``[..., D]`` (int4 codes are unpacked)."""
    if bits == 4:
        codes = torch.cat([codes & 15, codes >> 4], dim=-1)
    return (codes.float() - zero.float()[..., None]) * scale.float()[..., None]


class QuantKVCache:
    """Keys and values of one attention layer, ``[batch, heads, tokens, head_dim]``, held as int4 or int8 codes."""

    def __init__(self, bits: int = 4) -> None:
        if bits not in (4, 8):
            raise ShapeError("QuantKVCache holds 4- or 8-bit codes", bits=bits)
        self.bits = bits
        self.keys: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.values: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        """The number of tokens held."""
        return 0 if self.keys is None else self.keys[0].shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Quantize and append new keys and values ``[batch, heads, new_tokens, head_dim]``."""
        if k.dim() != 4 or k.shape != v.shape:
            raise ShapeError("keys and values must both be [batch, heads, tokens, head_dim]",
                             keys=tuple(k.shape), values=tuple(v.shape))
        new_k, new_v = quantize_heads(k, self.bits), quantize_heads(v, self.bits)
        if self.keys is None:
            self.keys, self.values = new_k, new_v
        else:
            self.keys = tuple(torch.cat([old, new], dim=2) for old, new in zip(self.keys, new_k))
            self.values = tuple(torch.cat([old, new], dim=2) for old, new in zip(self.values, new_v))

    def nbytes(self) -> int:
        """Bytes held: codes plus fp16 scales and uint8 zero points of keys and values."""
        return sum(t.numel() * t.element_size() for part in (self.keys or (), self.values or ()) for t in part)
