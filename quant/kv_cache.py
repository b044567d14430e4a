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

Static ranges (``ranges=kv_ranges(keys, values)``) store nothing per token but the codes: each (head,
channel) gets a fixed low end and step from calibration data, so the cache is exactly ``16 / bits`` times
smaller than fp16 but for the ``[H, D]`` tables, which are constants of the model. With ``rope_base`` the
keys are cached *before* RoPE and rotated when read: pre-RoPE key channels keep stable ranges, which RoPE's
position-dependent rotation mixes (KVQuant, Hooper et al. 2024, section 3.2, quantizes keys per channel before
RoPE for this reason); values need no rotation.
"""

from __future__ import annotations

import itertools

import torch

from quant.errors import ShapeError

__all__ = ["quantize_heads", "dequantize_heads", "encode_scales", "decode_scales", "kv_centers", "kv_ranges",
           "quantize_static", "dequantize_static", "rotate_half_rope", "QuantKVCache"]

_LOG_STEPS = 8  # scale codes count eighths of a power of two
_SHRINK = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)  # range shrink factors the static calibration tries


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
    return _pack(codes, bits), scale_code.squeeze(-1), (zero.squeeze(-1) - offset).to(torch.int8)


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes ``[..., D]``; int4 ones two a byte, the first half of the channels in the low nibbles."""
    d = codes.shape[-1]
    return codes[..., :d // 2] | (codes[..., d // 2:] << 4) if bits == 4 else codes


def _unpack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Invert :func:`_pack`: uint8 codes ``[..., D]``."""
    return torch.cat([codes & 15, codes >> 4], dim=-1) if bits == 4 else codes


def dequantize_heads(codes: torch.Tensor, scale_codes: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Invert :func:`quantize_heads` up to rounding, returning float32 ``[..., D]`` (int4 codes are unpacked)."""
    codes = _unpack(codes, bits)
    group_size = codes.shape[-1] // scale_codes.shape[-1]
    per_channel = lambda g: g.float().repeat_interleave(group_size, dim=-1)  # noqa: E731
    return (codes.float() - per_channel(zero) - _zero_offset(bits)) * per_channel(decode_scales(scale_codes))


def kv_centers(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head and channel means ``[H, D]`` of calibration keys (after RoPE) and values ``[B, H, T, D]``."""
    if keys.dim() != 4 or values.dim() != 4 or keys.shape[1] != values.shape[1]:
        raise ShapeError("calibration keys and values must be [batch, heads, tokens, head_dim]",
                         keys=tuple(keys.shape), values=tuple(values.shape))
    return keys.detach().float().mean(dim=(0, 2)), values.detach().float().mean(dim=(0, 2))


def _static_codes(x: torch.Tensor, low: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``x`` to the grid ``low + code * step`` (codes clamped to 0 .. 2^bits - 1), as float codes."""
    return torch.clamp(torch.round((x - low) / step), 0, 2**bits - 1)


def kv_ranges(keys: torch.Tensor, values: torch.Tensor, bits: int = 4) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Static ``(low, step)`` tables ``[H, D]`` (float32) for keys and for values, from calibration ``[B, H, T, D]``.

    Each channel's calibration [min, max] has its two ends moved towards the middle, each by its own factor
    (of 1.0 down to 0.5 of the half-range), to the pair that quantizes the calibration samples with the least
    squared error: AWQ's clipping search, on a range, so one far sample does not set the whole grid. Pass
    keys before RoPE for a cache with ``rope_base``.
    """
    if keys.dim() != 4 or keys.shape != values.shape or bits not in (4, 8):
        raise ShapeError("calibration keys and values must both be [batch, heads, tokens, head_dim]; bits 4 or 8",
                         keys=tuple(keys.shape), values=tuple(values.shape), bits=bits)
    tables = []
    for t in (keys, values):
        f = t.detach().float().transpose(1, 2).reshape(-1, t.shape[1], t.shape[3])
        lo, hi = f.amin(0), f.amax(0)
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        best, best_err = None, None
        for c_low, c_high in itertools.product(_SHRINK, _SHRINK):
            low = mid - half * c_low
            step = (half * (c_low + c_high) / (2**bits - 1)).clamp(min=1e-8)
            err = ((low + _static_codes(f, low, step, bits) * step - f) ** 2).sum(0)
            if best is None:
                best, best_err = (low, step), err
            else:
                better = err < best_err
                best = (torch.where(better, low, best[0]), torch.where(better, step, best[1]))
                best_err = torch.minimum(err, best_err)
        tables.append(best)
    return tuple(tables)


def quantize_static(t: torch.Tensor, low: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes of ``[B, H, T, D]`` vectors on the fixed ``[H, D]`` grids (int4: packed ``[B, H, T, D/2]``)."""
    return _pack(_static_codes(t.float(), low[:, None, :], step[:, None, :], bits).to(torch.uint8), bits)


def dequantize_static(codes: torch.Tensor, low: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """Invert :func:`quantize_static` up to rounding: float32 ``[B, H, T, D]``."""
    return low[:, None, :] + _unpack(codes, bits).float() * step[:, None, :]


def rotate_half_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate-half RoPE of ``[..., T, D]`` at ``[T]`` positions: channel pair ``(i, i + D/2)`` turns by
    ``position / base ** (2 i / D)``."""
    half = x.shape[-1] // 2
    angles = positions.float()[:, None] / base ** (torch.arange(half, dtype=torch.float32) / half)[None, :]
    cos, sin = angles.cos().to(x.device), angles.sin().to(x.device)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class QuantKVCache:
    """Keys and values of one attention layer, ``[batch, heads, tokens, head_dim]``, held as int4 or int8 codes.

    ``key_group`` and ``value_group`` are the channels that share a scale (default: the whole head);
    ``centers`` (``[H, D]`` for keys and for values, see :func:`kv_centers`) are subtracted before quantizing.
    ``ranges`` (from :func:`kv_ranges`, for the same bits) fix every channel's grid instead: the cache holds codes only
    (``keys`` and ``values`` are 1-tuples). With ``rope_base`` (ranges only) keys are appended before RoPE
    and rotated at their positions (0, 1, .. in the order appended) when read.
    """

    def __init__(self, bits: int = 4, key_group: int | None = None, value_group: int | None = None,
                 centers: tuple[torch.Tensor, torch.Tensor] | None = None,
                 ranges: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None,
                 rope_base: float | None = None) -> None:
        if bits not in (4, 8):
            raise ShapeError("QuantKVCache holds 4- or 8-bit codes", bits=bits)
        if centers is not None and (len(centers) != 2 or centers[0].dim() != 2 or centers[0].shape != centers[1].shape):
            raise ShapeError("centers are ([heads, head_dim] for keys, the same for values)",
                             shapes=[tuple(c.shape) for c in centers])
        if ranges is not None and (len(ranges) != 2 or any(len(r) != 2 or r[0].dim() != 2 or r[0].shape != r[1].shape
                                                           or r[0].shape != ranges[0][0].shape for r in ranges)
                                   or bits == 4 and ranges[0][0].shape[-1] % 2):
            raise ShapeError("ranges are ((low, step) for keys, (low, step) for values), each [heads, head_dim] "
                             "(an even head_dim for int4)")
        if ranges is not None and (centers is not None or key_group or value_group):
            raise ShapeError("static ranges fix every channel's grid: no centers or groups with them")
        if rope_base is not None and ranges is None:
            raise ShapeError("rope_base (keys cached before RoPE) needs static ranges")
        self.bits, self.key_group, self.value_group = bits, key_group, value_group
        self.centers = None if centers is None else tuple(c.detach().float() for c in centers)
        self.ranges = None if ranges is None else tuple(tuple(t.detach().float() for t in r) for r in ranges)
        self.rope_base = rope_base
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
        if self.ranges is not None:
            if self.ranges[0][0].shape != (k.shape[1], k.shape[3]):
                raise ShapeError("the ranges do not match the keys' heads and head_dim",
                                 ranges=tuple(self.ranges[0][0].shape), keys=tuple(k.shape))
            self._extend((quantize_static(k, *self._tables(0, k.device), self.bits),),
                         (quantize_static(v, *self._tables(1, v.device), self.bits),))
            return
        if self.centers is not None:
            if self.centers[0].shape != (k.shape[1], k.shape[3]):
                raise ShapeError("the centers do not match the keys' heads and head_dim",
                                 centers=tuple(self.centers[0].shape), keys=tuple(k.shape))
            k = k.float() - self.centers[0].to(k.device)[:, None, :]
            v = v.float() - self.centers[1].to(v.device)[:, None, :]
        self._extend(quantize_heads(k, self.bits, self.key_group), quantize_heads(v, self.bits, self.value_group))

    def _tables(self, which: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The static ``(low, step)`` of keys (0) or values (1) on ``device``."""
        return tuple(t.to(device) for t in self.ranges[which])

    def _extend(self, new_k: tuple[torch.Tensor, ...], new_v: tuple[torch.Tensor, ...]) -> None:
        """Append quantized keys and values (tuples of tensors with tokens on axis 2)."""
        if self.keys is None:
            self.keys, self.values = new_k, new_v
        else:
            self.keys = tuple(torch.cat([old, new], dim=2) for old, new in zip(self.keys, new_k))
            self.values = tuple(torch.cat([old, new], dim=2) for old, new in zip(self.values, new_v))

    def nbytes(self) -> int:
        """Bytes held: codes plus the scale codes and zero points of keys and values, and :meth:`constant_bytes`."""
        return sum(t.numel() * t.element_size() for t in (*(self.keys or ()), *(self.values or ()))) \
            + self.constant_bytes()

    def constant_bytes(self) -> int:
        """The bytes that do not grow with the tokens: the centers or the static ranges."""
        tables = (*(self.centers or ()), *(t for r in self.ranges or () for t in r))
        return sum(t.numel() * t.element_size() for t in tables)
