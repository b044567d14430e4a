"""A real quantized KV cache: int4 (or int8) keys and values stored per head and token, with the bytes to show.

Each key or value vector of one head and one token (``head_dim`` numbers, taken after RoPE where the model
has it) is quantized asymmetrically in groups of ``group_size`` channels (the whole head by default), so
groups never span heads (QServe, Lin et al. 2024, section 5.3: KV4 per head). Keys may take smaller groups
than values: their channels differ more in range, and their error moves every attention score.
Per group the cache keeps two bytes: the scale as an 8-bit base-2 logarithm in eighths
(``code = round(8 log2 scale) + 128``, steps of 2^(1/8) from 2^-16 to 2^16, a relative error of at most
4.4% that the rounding of the codes absorbs) and an int8 zero point. Int4 codes are packed two a byte, the
first half of the head's channels in the low nibbles and the second half in the high ones: the pairs that
rotate-half RoPE rotates together share a byte, and a kernel unpacks the two halves without any interleave.

Centers (per head and channel, e.g. the calibration means of keys and values from :func:`kv_centers`) are
subtracted before quantizing, which narrows each token's range where channels carry constant offsets. They
cost nothing in accuracy: a key center shifts every score of one query by the same ``q . center``, which the
softmax ignores (SageAttention, Zhang et al. 2025, section 3.2, "smooth K"), and since a query's attention
weights sum to 1 a value center comes back exactly as ``+ center`` on the output
(:func:`quant.kernels.decode_attention` adds it).
"""

from __future__ import annotations

import torch

from quant.errors import ShapeError

__all__ = ["quantize_heads", "dequantize_heads", "encode_scales", "decode_scales", "kv_centers", "QuantKVCache"]

_LOG_STEPS = 8  # scale codes count eighths of a power of two


def encode_scales(scale: torch.Tensor) -> torch.Tensor:
    """Positive scales as uint8 codes ``round(8 log2 scale) + 128`` (clamped to 2^-16 .. 2^15.875)."""
    return (torch.round(torch.log2(scale.float()) * _LOG_STEPS) + 128).clamp(0, 255).to(torch.uint8)


def decode_scales(codes: torch.Tensor) -> torch.Tensor:
    """Invert :func:`encode_scales`: float32 ``2 ** ((code - 128) / 8)``."""
    return torch.exp2((codes.float() - 128) / _LOG_STEPS)


def _check(head_dim: int, bits: int, group_size: int) -> None:
    """Raise unless ``bits`` is 4 or 8 (4 with an even head) and ``group_size`` divides the head."""
    if bits not in (4, 8) or (bits == 4 and head_dim % 2) or group_size <= 0 or head_dim % group_size:
        raise ShapeError("KV cache codes are 4 bits (even head_dim) or 8 bits, in groups that divide head_dim",
                         bits=bits, head_dim=head_dim, group_size=group_size)


def _zero_offset(bits: int) -> int:
    """What the stored int8 zero point is offset by: 0 for int4 codes, 128 for int8 codes (zeros 0..255 fit)."""
    return 0 if bits == 4 else 128


def quantize_heads(t: torch.Tensor, bits: int, group_size: int | None = None) -> tuple[torch.Tensor, ...]:
    """Quantize ``[..., D]`` vectors by groups of channels: uint8 codes (int4: packed ``[..., D/2]``), scales, zeros.

    Scale codes (uint8, see :func:`encode_scales`) and int8 zero points (less 128 for int8 codes) are
    ``[..., D / group_size]``.
    """
    d = t.shape[-1]
    group_size = group_size or d
    _check(d, bits, group_size)
    levels, offset = 2**bits - 1, _zero_offset(bits)
    x = t.detach().float().reshape(*t.shape[:-1], d // group_size, group_size)
    lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
    zero = None
    for _ in range(2):  # a zero point beyond int8 (a group far from 0 for its spread): widen the range to 0
        scale_code = encode_scales(((hi - lo) / levels).clamp(min=2.0**-16))
        scale = decode_scales(scale_code)
        zero = torch.round(-lo / scale)
        far = (zero < offset - 128) | (zero > offset + 127)
        if not bool(far.any()):
            break
        lo, hi = torch.where(far, lo.clamp(max=0), lo), torch.where(far, hi.clamp(min=0), hi)
    codes = torch.clamp(torch.round(x / scale) + zero, 0, levels).to(torch.uint8).reshape(t.shape)
    if bits == 4:
        codes = codes[..., :d // 2] | (codes[..., d // 2:] << 4)
    return codes, scale_code.squeeze(-1), (zero.squeeze(-1) - offset).to(torch.int8)


def dequantize_heads(codes: torch.Tensor, scale_codes: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Invert :func:`quantize_heads` up to rounding, returning float32 ``[..., D]`` (int4 codes are unpacked)."""
    if bits == 4:
        codes = torch.cat([codes & 15, codes >> 4], dim=-1)
    group_size = codes.shape[-1] // scale_codes.shape[-1]
    per_channel = lambda g: g.float().repeat_interleave(group_size, dim=-1)  # noqa: E731
    return (codes.float() - per_channel(zero) - _zero_offset(bits)) * per_channel(decode_scales(scale_codes))


def kv_centers(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head and channel means ``[H, D]`` of calibration keys (after RoPE) and values ``[B, H, T, D]``."""
    if keys.dim() != 4 or values.dim() != 4 or keys.shape[1] != values.shape[1]:
        raise ShapeError("calibration keys and values must be [batch, heads, tokens, head_dim]",
                         keys=tuple(keys.shape), values=tuple(values.shape))
    return keys.detach().float().mean(dim=(0, 2)), values.detach().float().mean(dim=(0, 2))


class QuantKVCache:
    """Keys and values of one attention layer, ``[batch, heads, tokens, head_dim]``, held as int4 or int8 codes.

    ``key_group`` and ``value_group`` are the channels that share a scale (default: the whole head);
    ``centers`` (``[H, D]`` for keys and for values, see :func:`kv_centers`) are subtracted before quantizing.
    """

    def __init__(self, bits: int = 4, key_group: int | None = None, value_group: int | None = None,
                 centers: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        if bits not in (4, 8):
            raise ShapeError("QuantKVCache holds 4- or 8-bit codes", bits=bits)
        if centers is not None and (len(centers) != 2 or centers[0].dim() != 2 or centers[0].shape != centers[1].shape):
            raise ShapeError("centers are ([heads, head_dim] for keys, the same for values)",
                             shapes=[tuple(c.shape) for c in centers])
        self.bits, self.key_group, self.value_group = bits, key_group, value_group
        self.centers = None if centers is None else tuple(c.detach().float() for c in centers)
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
        if self.centers is not None:
            if self.centers[0].shape != (k.shape[1], k.shape[3]):
                raise ShapeError("the centers do not match the keys' heads and head_dim",
                                 centers=tuple(self.centers[0].shape), keys=tuple(k.shape))
            k = k.float() - self.centers[0].to(k.device)[:, None, :]
            v = v.float() - self.centers[1].to(v.device)[:, None, :]
        new_k = quantize_heads(k, self.bits, self.key_group)
        new_v = quantize_heads(v, self.bits, self.value_group)
        if self.keys is None:
            self.keys, self.values = new_k, new_v
        else:
            self.keys = tuple(torch.cat([old, new], dim=2) for old, new in zip(self.keys, new_k))
            self.values = tuple(torch.cat([old, new], dim=2) for old, new in zip(self.values, new_v))

    def nbytes(self) -> int:
        """Bytes held: codes plus the scale codes and zero points of keys and values, and the centers."""
        parts = (*(self.keys or ()), *(self.values or ()), *(self.centers or ()))
        return sum(t.numel() * t.element_size() for t in parts)
