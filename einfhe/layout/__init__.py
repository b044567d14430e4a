"""Layouts: how a logical tensor lies in the slots of one or more ciphertexts (`layout`), and pictures of it (`draw`,
which needs matplotlib and is imported on its own: `from einfhe.layout.draw import draw_layout`)."""

from __future__ import annotations

from .layout import DIM_KINDS, Dim, Layout, natural_layout, next_pow2

__all__ = ["DIM_KINDS", "Dim", "Layout", "natural_layout", "next_pow2"]
