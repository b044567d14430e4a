"""Pictures of layouts and slot vectors with matplotlib (imported lazily: einfhe does not require it).

A ciphertext is drawn as a grid of its slots, `width` slots per row, slot 0 at the top left; a layout that
spans several ciphertexts is drawn as one panel per ciphertext. Each slot is coloured by the tensor element
it holds, so replicated copies of an element share its colour; the copy that `Layout.unpack` reads is drawn
solid and the other copies faded. Padding and `zero` slots are light grey with a grey 0, `junk` slots (partial
sums left by a rotate-and-sum) are red with an x.

    fig = einfhe.layout.draw.draw_layout(plan.input_layout(1), x)
    fig = einfhe.layout.draw.draw_rotation(plan.input_layout(1), 8)
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np

from ..errors import LayoutError
from .layout import Layout

__all__ = ["SlotMap", "slot_map", "draw_layout", "draw_rotation", "draw_slots", "draw_op_counts"]

PAD, JUNK = -1, -2          # codes in SlotMap.elements for slots holding no element
_MAX_LABELLED_CELLS = 256   # above this, cells are coloured but not labelled
_PAD_RGB = (0.93, 0.93, 0.93)
_JUNK_RGB = (0.80, 0.55, 0.55)


@dataclass(frozen=True)
class SlotMap:
    """What every slot of a layout holds: an element number (row-major in the tensor) or PAD / JUNK."""

    elements: np.ndarray   # (num_cts, slots) int: element number, PAD or JUNK
    primary: np.ndarray    # (num_cts, slots) bool: the copy `unpack` reads
    layout: Layout

    def index_of(self, element: int) -> tuple[int, ...]:
        """The tensor index of element number `element`."""
        return tuple(int(i) for i in np.unravel_index(element, self.layout.shape)) if self.layout.shape else ()


def slot_map(layout: Layout) -> SlotMap:
    """Compute which tensor element (or padding, or junk) each slot of each ciphertext of `layout` holds."""
    sizes = [d.size for d in layout.dims]
    total = layout.num_cts * layout.slots
    flat = np.arange(total)
    local = flat % layout.block
    idx = np.unravel_index(local, sizes) if layout.dims else ()
    elements = np.zeros(total, dtype=np.int64)
    pad = np.zeros(total, dtype=bool)
    junk = np.zeros(total, dtype=bool)
    primary = flat < layout.block                       # the first repetition of the block
    axis_index = {}
    for dim, i in zip(layout.dims, idx):
        if dim.kind == "axis":
            pad |= i >= dim.extent
            axis_index[dim.name] = i
        elif dim.kind == "zero":
            pad |= i != 0
        elif dim.kind == "junk":
            junk |= i != 0
        else:  # rep
            primary &= i == 0
    coords = [axis_index.get(index, np.zeros(total, dtype=np.int64)) for index in layout.indices]
    if layout.shape:
        clipped = [np.minimum(c, n - 1) for c, n in zip(coords, layout.shape)]
        elements = np.ravel_multi_index(clipped, layout.shape)
    elements = np.where(pad, PAD, np.where(junk, JUNK, elements))
    primary &= elements >= 0
    shape = (layout.num_cts, layout.slots)
    return SlotMap(elements.reshape(shape), primary.reshape(shape), layout)


def _default_width(slots: int, layout: Layout | None = None) -> int:
    """A row width giving a roughly square grid, widened to a whole number of innermost dimensions."""
    width = 1 << math.ceil(math.log2(slots) / 2) if slots > 1 else 1
    if layout is not None:
        inner = 1
        for dim in reversed(layout.dims):
            inner *= dim.size
            if inner >= width:
                break
        if inner <= min(slots, 32):
            width = max(width, inner)
    return width


def _element_colours(count: int):
    """`count` distinct colours, cycling through matplotlib's qualitative tab20 map."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    order = [2 * i % 20 + (2 * i // 20) % 2 for i in range(20)]  # dark shades first, then light ones
    return np.array([cmap(order[i % 20])[:3] for i in range(max(count, 1))])


def _panel_axes(n: int, ax, width: int, slots: int, figsize_per_panel: float = 4.4):
    """A figure and `n` axes (reusing `ax` when given: one Axes or a sequence of n)."""
    import matplotlib.pyplot as plt

    if ax is not None:
        axes = list(np.atleast_1d(ax).ravel())
        if len(axes) != n:
            raise LayoutError(f"need {n} axes (one per ciphertext panel), got {len(axes)}")
        return axes[0].figure, axes
    rows = max(1, slots // width)
    cols = min(n, 4 if width < 4 * rows else 2)
    grid_rows = math.ceil(n / cols)
    cell = figsize_per_panel / max(width, rows) * 1.0
    panel_w = max(2.6, min(7.0, width * cell * 1.6))
    panel_h = max(1.6, min(7.0, rows * cell * 1.6)) + 0.9
    fig, axes = plt.subplots(grid_rows, cols, figsize=(panel_w * cols, panel_h * grid_rows), squeeze=False)
    flat = list(axes.ravel())
    for extra in flat[n:]:
        extra.remove()
    return fig, flat[:n]


def _grid_axes(ax, width: int, slots: int, title: str) -> None:
    """Title, labels, ticks and cell borders of one slot grid."""
    rows = slots // width
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"slot mod {width}" if rows > 1 else "slot")
    ax.set_ylabel("first slot of row" if rows > 1 else "")
    if rows == 1:
        ax.set_ylabel("ciphertext")
    step_x = max(1, width // 8)
    ax.set_xticks(range(0, width, step_x))
    step_y = max(1, rows // 8)
    ax.set_yticks(range(0, rows, step_y))
    ax.set_yticklabels([str(r * width) for r in range(0, rows, step_y)])
    if width * rows <= 4096:
        ax.set_xticks(np.arange(-0.5, width, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.8)
        ax.tick_params(which="minor", length=0)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)


def _draw_map(ax, elements, primary, width, labels, colours, title, fontsize) -> None:
    """Draw one ciphertext's slot codes as a coloured grid with optional per-cell labels."""
    slots = elements.size
    rows = slots // width
    rgb = np.empty((slots, 3))
    for s, (e, p) in enumerate(zip(elements, primary)):
        if e == PAD:
            rgb[s] = _PAD_RGB
        elif e == JUNK:
            rgb[s] = _JUNK_RGB
        else:
            c = colours[e % len(colours)]
            rgb[s] = c if p else 0.45 * c + 0.55
    ax.imshow(rgb.reshape(rows, width, 3), interpolation="nearest", aspect="equal")
    if labels is not None and slots <= _MAX_LABELLED_CELLS:
        for s in range(slots):
            r, c = divmod(s, width)
            e = elements[s]
            text = "0" if e == PAD else ("x" if e == JUNK else labels[e])
            ax.text(c, r, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if e >= 0 and primary[s] else ("0.6" if e == PAD else "black"))
    _grid_axes(ax, width, slots, title)


def _labels_for(smap: SlotMap, tensor) -> list[str]:
    """Cell labels: the element's index (e.g. '2,3'), or its value when a tensor is given."""
    layout = smap.layout
    count = int(np.prod(layout.shape)) if layout.shape else 1
    if tensor is not None:
        values = np.asarray(tensor, dtype=np.float64).reshape(-1) + 0.0  # + 0.0 turns -0.0 into 0.0
        if values.size != count:
            raise LayoutError(f"tensor of shape {np.shape(tensor)} does not match the layout's shape {layout.shape}")
        return [f"{v:.2g}" if abs(v) < 100 else f"{v:.0f}" for v in values]
    return [",".join(str(i) for i in smap.index_of(e)) or "s" for e in range(count)]


def draw_layout(layout: Layout, tensor=None, ax=None, *, width: int | None = None, title: str | None = None):
    """Draw where each element of a tensor lives: one slot grid per ciphertext, coloured by element."""
    smap = slot_map(layout)
    width = width or _default_width(layout.slots, layout)
    if layout.slots % width:
        raise LayoutError(f"width {width} does not divide the slot count {layout.slots}")
    fig, axes = _panel_axes(layout.num_cts, ax, width, layout.slots)
    labels = _labels_for(smap, tensor)
    colours = _element_colours(len(labels))
    fontsize = 7 if width <= 8 else 5.5
    for ct, panel in enumerate(axes):
        _draw_map(panel, smap.elements[ct], smap.primary[ct], width, labels, colours,
                  f"ciphertext {ct}", fontsize)
    title = title or f"{layout.indices or 'scalar'} {tuple(layout.shape)} packed as {layout}"
    chars = max(40, int(fig.get_figwidth() * 11))
    fig.suptitle(textwrap.fill(title, chars), fontsize=11)
    fig.tight_layout()
    return fig


def draw_rotation(layout: Layout, offset: int, tensor=None, ct: int = 0, *, width: int | None = None):
    """Draw ciphertext `ct` of a layout before and after a left rotation by `offset` slots."""
    import matplotlib.pyplot as plt

    smap = slot_map(layout)
    width = width or _default_width(layout.slots, layout)
    labels = _labels_for(smap, tensor)
    colours = _element_colours(len(labels))
    rows = layout.slots // width
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(3.0, min(7.0, width * 0.5)), max(2.0, min(7.0, rows * 0.5)) + 1.0))
    before_e, before_p = smap.elements[ct], smap.primary[ct]
    after_e, after_p = np.roll(before_e, -offset), np.roll(before_p, -offset)
    fontsize = 7 if width <= 8 else 5.5
    _draw_map(axes[0], before_e, before_p, width, labels, colours, f"before: ciphertext {ct}", fontsize)
    _draw_map(axes[1], after_e, after_p, width, labels, colours, f"after rotate({offset}): out[t] = in[t+{offset}]", fontsize)
    fig.suptitle(f"rotation by {offset} slots of {layout}", fontsize=11)
    fig.tight_layout()
    return fig


def draw_slots(values, ax=None, *, width: int | None = None, title: str = "slot values", decimals: int = 2,
               cmap: str = "RdBu_r"):
    """Draw raw slot values (one vector, or one row per ciphertext) as grids coloured by value."""
    import matplotlib.pyplot as plt

    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    n, slots = values.shape
    width = width or _default_width(slots)
    if slots % width:
        raise LayoutError(f"width {width} does not divide the slot count {slots}")
    rows = slots // width
    fig, axes = _panel_axes(n, ax, width, slots)
    limit = float(np.max(np.abs(values))) or 1.0
    for ct, panel in enumerate(axes):
        image = panel.imshow(values[ct].reshape(rows, width), cmap=cmap, vmin=-limit, vmax=limit,
                             interpolation="nearest", aspect="equal")
        if slots <= _MAX_LABELLED_CELLS:
            for s, v in enumerate(values[ct]):
                r, c = divmod(s, width)
                panel.text(c, r, f"{v:.{decimals}f}" if abs(v) >= 0.5 * 10 ** -decimals else "0",
                           ha="center", va="center", fontsize=5.5 if width > 8 else 6.5,
                           color="white" if abs(v) > 0.6 * limit else "black")
        _grid_axes(panel, width, slots, title if n == 1 else f"{title}: ciphertext {ct}")
        fig.colorbar(image, ax=panel, shrink=0.8, label="slot value")
    if ax is None:
        fig.tight_layout()
    return fig


def draw_op_counts(counts: dict, ax=None, *, ops=("rotate", "add", "mul_plain", "mask", "mul", "rescale"),
                   title: str = "operations per plan", log: bool = False):
    """Draw a grouped bar chart of op counts: `counts` maps a label (one plan) to its `op_counts()` dict."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(counts) + 2), 3.4))
    else:
        fig = ax.figure
    ops = [op for op in ops if any(c.get(op, 0) for c in counts.values())] or list(ops)
    labels = list(counts)
    bar = 0.8 / max(1, len(ops))
    for k, op in enumerate(ops):
        xs = np.arange(len(labels)) + (k - (len(ops) - 1) / 2) * bar
        ax.bar(xs, [counts[label].get(op, 0) for label in labels], bar, label=op)
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_ylabel("number of ops")
    ax.set_xlabel("plan")
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8, ncol=min(3, len(ops)))
    return fig
