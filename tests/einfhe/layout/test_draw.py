"""einfhe.layout.draw: slot maps agree with Layout.pack, and every figure has one panel per ciphertext, titles and labels."""

import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import einfhe  # noqa: E402
from einfhe import Dim, Layout, LayoutError, natural_layout  # noqa: E402
from einfhe.layout.draw import JUNK, PAD, draw_layout, draw_op_counts, draw_rotation, draw_slots, slot_map  # noqa: E402

LAYOUTS = [
    natural_layout((5, 7), 16),                                   # padded, 4 ciphertexts
    natural_layout((3,), 64),                                     # block repeated 16x
    Layout((Dim("j", 8, "axis", 7), Dim("r", 8, "rep")), 64, "j", (7,)),
    Layout((Dim("r", 4, "rep"), Dim("i", 4, "axis", 3)), 8, "i", (3,)),  # 2 ciphertexts, replicated
    Layout((Dim("z", 4, "zero"), Dim("i", 4, "axis", 4)), 16, "i", (4,)),
]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_slot_map_agrees_with_pack(layout):
    count = int(np.prod(layout.shape))
    packed = layout.pack(np.arange(1, count + 1, dtype=float).reshape(layout.shape))
    smap = slot_map(layout)
    assert smap.elements.shape == (layout.num_cts, layout.slots)
    held = smap.elements >= 0
    np.testing.assert_array_equal(packed[held], smap.elements[held] + 1)
    assert np.all(packed[smap.elements == PAD] == 0)
    assert smap.primary.sum() == count          # exactly one primary copy per element
    assert sorted(smap.elements[smap.primary].tolist()) == list(range(count))


def test_junk_slots_are_marked():
    layout = Layout((Dim("k", 4, "junk"), Dim("i", 4, "axis", 4)), 16, "i", (4,))
    smap = slot_map(layout)
    assert (smap.elements == JUNK).sum() == 12 and (smap.elements >= 0).sum() == 4


def _check_labelled(ax):
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_draw_layout_has_one_labelled_panel_per_ciphertext(layout):
    fig = draw_layout(layout)
    axes = fig.axes
    assert len(axes) == layout.num_cts
    assert fig._suptitle is not None and fig._suptitle.get_text()
    for ct, ax in enumerate(axes):
        _check_labelled(ax)
        assert ax.get_title() == f"ciphertext {ct}"
        assert len(ax.texts) == layout.slots          # one label per slot
        assert np.prod(ax.images[0].get_array().shape[:2]) == layout.slots  # one cell per slot


def test_draw_layout_labels_values_and_checks_axes():
    layout = natural_layout((2, 3), 8)
    fig = draw_layout(layout, np.array([[1.5, 2, 3], [4, 5, 6]]))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "1.5" in texts and "6" in texts
    _, axes = plt.subplots(1, 2)
    with pytest.raises(LayoutError):
        draw_layout(natural_layout((5, 7), 16), ax=axes)        # 4 ciphertexts, 2 axes
    fig = draw_layout(natural_layout((3,), 8), ax=axes[0])
    assert axes[0].get_title() == "ciphertext 0"


def test_draw_rotation_moves_the_picture():
    layout = Layout((Dim("j", 8, "axis", 7), Dim("r", 8, "rep")), 64, "j", (7,))
    fig = draw_rotation(layout, 8)
    before, after = fig.axes
    for ax in (before, after):
        _check_labelled(ax)
    labels_before = [t.get_text() for t in before.texts]
    labels_after = [t.get_text() for t in after.texts]
    assert labels_after == labels_before[8:] + labels_before[:8]


def test_draw_slots_and_op_counts_are_labelled():
    fig = draw_slots(np.arange(32.0).reshape(2, 16), title="raw")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2
    for ax in panels:
        _check_labelled(ax)
    fig = draw_op_counts({"a": {"rotate": 3, "add": 3}, "b": {"rotate": 1, "add": 5}})
    (ax,) = fig.axes
    _check_labelled(ax)
    assert len(ax.patches) == 4


def test_einfhe_does_not_import_matplotlib():
    code = "import sys, einfhe, einfhe.layout.draw; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
