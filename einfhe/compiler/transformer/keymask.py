"""The attention's key mask in the row packing: plain operands that depend on how many of a program's `tokens`
positions hold a sentence's real tokens (the rest padding), resolved for that length at run time, so that one
compiled program serves every sentence length.

In the scores layout (query q, head h, offset r) the key at offset r of query q's row is (q + r) mod tokens, padding
when it is `length` or more. Three kinds of operand carry the mask, each of the scores' logical shape
(tokens, heads, tokens):
    "offset"  the product of keys rotated by `offset` rows, kept in slot 0 of each head's block only where that key
              is real: the padded keys' scores are exact zeros (the scores piece's mask, no extra level)
    "mean"    1/length in slot 0 of each head's block: the row sum's selector, for the mean of the real scores
    "keys"    every real key's slot: the softmax's exps multiplied by it (padded keys get probability 0)
A `KeyMask` reads as its all-real array wherever numpy reads it (`np.asarray`), so a program run without a length
runs as on `tokens` real tokens; `with_length` swaps every mask of an operand list for the one of `length`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ModelError

__all__ = ["KeyMask", "check_length", "key_pattern", "with_length", "masks_of"]

KINDS = ("offset", "mean", "keys")


def check_length(length, tokens: int) -> int:
    """`length` as an int when it is a real token count of a sequence of `tokens` positions (1..tokens), else
    ModelError."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 1 <= length <= tokens:
        raise ModelError(f"a sequence's real token count must be an integer in 1..{tokens}, not {length!r}",
                         length=repr(length), tokens=tokens)
    return int(length)


def key_pattern(tokens: int, length: int) -> np.ndarray:
    """(query, offset) -> 1.0 where the key (query + offset) mod tokens is among the first `length` (real), else 0."""
    length = check_length(length, tokens)
    offsets = np.arange(tokens)[:, None] + np.arange(tokens)[None]
    return (offsets % tokens < length).astype(np.float64)


@dataclass(frozen=True)
class KeyMask:
    """One plain operand of the row packing's attention that depends on the real token count (module docstring)."""

    tokens: int
    heads: int
    kind: str = "keys"
    offset: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS or not 0 <= self.offset < self.tokens or self.heads < 1:
            raise ModelError(f"a key mask is one of {KINDS} with 0 <= offset < tokens", kind=self.kind,
                             offset=self.offset, tokens=self.tokens)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The scores' logical shape (query, head, offset)."""
        return self.tokens, self.heads, self.tokens

    def array(self, length: int) -> np.ndarray:
        """The operand for a sequence of `length` real tokens (the first ones)."""
        real = key_pattern(self.tokens, length)
        out = np.zeros(self.shape)
        if self.kind == "keys":
            out[:] = real[:, None, :]
        elif self.kind == "mean":
            out[..., 0] = 1.0 / check_length(length, self.tokens)
        else:
            out[..., 0] = real[:, self.offset, None]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The all-real operand (`length` = tokens), as numpy reads the mask."""
        return self.array(self.tokens).astype(dtype or np.float64)

    def to_json(self) -> dict:
        """The mask as JSON (what a service stores beside a program's plain operands)."""
        return {"tokens": self.tokens, "heads": self.heads, "kind": self.kind, "offset": self.offset}

    @classmethod
    def from_json(cls, data: dict) -> "KeyMask":
        """The mask `to_json` described."""
        return cls(int(data["tokens"]), int(data["heads"]), str(data["kind"]), int(data["offset"]))


def masks_of(operands) -> list[tuple[int, KeyMask]]:
    """The key masks among `operands`, with their positions."""
    return [(i, op) for i, op in enumerate(operands) if isinstance(op, KeyMask)]


def with_length(operands, length: int | None) -> tuple:
    """`operands` with every key mask swapped for its operand at `length` real tokens (unchanged for None)."""
    if length is None:
        return tuple(operands)
    return tuple(op.array(length) if isinstance(op, KeyMask) else op for op in operands)
