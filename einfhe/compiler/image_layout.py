"""Where a one-sample image (channels x height x width) lives in the slots of one ciphertext: the channel-packed
layout of the one-sample CNN compiler (einfhe.compiler.packed_cnn).

Pixel (i, j) of channel c sits on a grid of `grid` x `grid` cells per channel group, spread by the `gap`: at row
gap*i + a and column gap*j + b of group c // mux, where (a, b) is the cell position of the c % mux-th channel of
the group. Gap 1, mux 1 is the plain channel-major image (c, i, j); a strided convolution keeps the grid and
doubles the gap (Juvekar et al., Gazelle, USENIX Security 2018), so it needs no repacking; where the gapped channels
no longer fit the slots, channels share a group in the gap's empty cells (the multiplexed packing of Lee et al.,
ICML 2022, which Orion uses). One copy spans `period` slots (a power of two) and repeats over the ciphertext, so a
rotation wraps inside the copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..layout import Dim, Layout, next_pow2

__all__ = ["ImageLayout"]


@dataclass(frozen=True)
class ImageLayout:
    """A (channels, height, width) image in one ciphertext of `slots` slots: grid, gap and channels per group."""

    channels: int
    height: int
    width: int
    slots: int
    gap: int = 1
    mux: int = 1

    def __post_init__(self) -> None:
        if min(self.channels, self.height, self.width, self.gap, self.mux) < 1 or self.mux > self.gap ** 2:
            raise ModelError(f"an image layout needs positive sizes and at most gap^2 = {self.gap ** 2} channels a "
                             f"group, got {self}")
        if self.period > self.slots:
            raise ModelError(f"{self.channels} channels of {self.height}x{self.width} at gap {self.gap} need "
                             f"{self.period} slots, more than the {self.slots} of one ciphertext")

    @property
    def rows(self) -> int:
        """Rows (and columns' stride) of one group's grid: a power of two holding the gapped image."""
        return next_pow2(self.height * self.gap)

    @property
    def cols(self) -> int:
        """Columns of one group's grid."""
        return next_pow2(self.width * self.gap)

    @property
    def period(self) -> int:
        """Slots one copy of the image spans (a power of two; the copy repeats over the ciphertext)."""
        return next_pow2(-(-self.channels // self.mux) * self.rows * self.cols)

    def cell(self, k: int) -> tuple[int, int]:
        """(row, column) inside the gap x gap cell of the k-th channel of a group: spread evenly over the cell."""
        index = k * (self.gap ** 2 // self.mux)
        return index // self.gap, index % self.gap

    def positions(self) -> np.ndarray:
        """The slot (in 0..period-1) of every pixel: an integer array of shape (channels, height, width)."""
        c = np.arange(self.channels)[:, None, None]
        i = np.arange(self.height)[None, :, None]
        j = np.arange(self.width)[None, None, :]
        a, b = np.array([self.cell(k % self.mux) for k in range(self.channels)]).T.reshape(2, -1, 1, 1)
        return (c // self.mux) * self.rows * self.cols + (self.gap * i + a) * self.cols + self.gap * j + b

    def pack(self, image: np.ndarray) -> np.ndarray:
        """The slot values of an image of shape (channels, height, width), zero off the pixels, copies repeated."""
        image = np.asarray(image, dtype=np.float64)
        if image.shape != (self.channels, self.height, self.width):
            raise ModelError(f"expected an image of shape {(self.channels, self.height, self.width)}, got "
                             f"{image.shape}")
        block = np.zeros(self.period)
        block[self.positions()] = image
        return np.tile(block, self.slots // self.period)

    def unpack(self, values: np.ndarray) -> np.ndarray:
        """The image read back from slot values (the first copy)."""
        return np.asarray(values)[self.positions()]

    def strided(self, channels: int, stride: int) -> "ImageLayout":
        """The layout a convolution of `stride` with `channels` outputs writes: the same grid, the gap times the
        stride, as few channels a group as fit the slots."""
        height, width, gap = -(-self.height // stride), -(-self.width // stride), self.gap * stride
        for mux in range(1, gap * gap + 1):
            fits = next_pow2(-(-channels // mux) * next_pow2(height * gap) * next_pow2(width * gap)) <= self.slots
            if (gap * gap) % mux == 0 and fits:
                return ImageLayout(channels, height, width, self.slots, gap, mux)
        raise ModelError(f"{channels} channels of {height}x{width} do not fit {self.slots} slots")

    def client_layout(self) -> Layout:
        """The einfhe Layout the client encrypts this image in (gap 1, one channel a group only)."""
        if self.gap != 1 or self.mux != 1 or self.rows != self.height or self.cols != self.width:
            raise ModelError("only a plain channel-major image with power-of-two sides is encrypted by the client")
        dims = (Dim("c", next_pow2(self.channels), "axis", self.channels), Dim("h", self.height, "axis", self.height),
                Dim("w", self.width, "axis", self.width))
        return Layout(dims, self.slots, "chw", (self.channels, self.height, self.width))
