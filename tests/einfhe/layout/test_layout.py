"""Layouts: packing follows the definition (slot = sum of index x stride over padded power-of-two sizes, the block
repeated to fill the slots, tiled over ciphertexts past them), unpacking inverts it, and malformed layouts or
tensors of the wrong shape raise LayoutError."""

import itertools
import json

import numpy as np
import pytest

from einfhe import Dim, Layout, LayoutError, natural_layout
from einfhe.layout import next_pow2


def _reference_pack(x: np.ndarray, layout: Layout) -> np.ndarray:
    """Pack by the definition, one slot at a time: the flat slot index is row-major over the padded dimension sizes;
    an axis dimension holds the tensor's index (zero past its extent), rep holds every copy, zero/junk only index 0.
    Outside the block, slots repeat the block; past the slot count the block continues in the next ciphertext."""
    sizes = [d.size for d in layout.dims]
    block = int(np.prod(sizes)) if sizes else 1
    flat = np.zeros(max(block, layout.slots))
    for slot in range(flat.size):
        idx = np.unravel_index(slot % block, sizes) if sizes else ()
        element, holds = {}, True
        for dim, i in zip(layout.dims, idx):
            if dim.kind == "axis":
                holds &= i < dim.extent
                element[dim.name] = int(i)
            elif dim.kind in ("zero", "junk"):
                holds &= i == 0
        if holds:
            flat[slot] = x[tuple(element.get(index, 0) for index in layout.indices)]
    return flat.reshape(layout.num_cts, layout.slots)


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("shape, slots", [
    ((5,), 8), ((3, 5), 64), ((3, 5), 32), ((2, 3, 4), 64), ((7, 6), 16), ((3, 1, 4), 32), ((1,), 4), ((), 8),
    ((9, 9), 64),
])
def test_natural_layout_packs_by_the_definition_and_unpacks_back(shape, slots):
    """natural_layout pads each axis to a power of two row-major, matches the slot-by-slot definition, round-trips."""
    x = _random(shape)
    layout = natural_layout(shape, slots)
    packed = layout.pack(x)
    np.testing.assert_array_equal(packed, _reference_pack(x, layout))
    np.testing.assert_array_equal(layout.unpack(packed), x)
    assert layout.block == int(np.prod([next_pow2(n) for n in shape if n > 1]))
    assert layout.num_cts == max(1, layout.block // slots)


def test_padding_slots_hold_zeros_and_a_small_block_repeats():
    """A 3x5 tensor pads to 4x8 = 32 slots: padding holds zeros, and in 128 slots the block repeats 4 times."""
    x = _random((3, 5)) + 10  # no element is zero
    layout = natural_layout((3, 5), 128)
    packed = layout.pack(x)[0]
    block = packed[:32].reshape(4, 8)
    np.testing.assert_array_equal(block[:3, :5], x)
    assert not block[3:].any() and not block[:, 5:].any()
    np.testing.assert_array_equal(packed, np.tile(packed[:32], 4))
    assert layout.period == 32 and layout.stride("a") == 8 and layout.stride("b") == 1


def test_replicated_dimension_holds_copies_and_unpack_reads_the_first():
    """A rep dimension outside the axis repeats the whole tensor; inside it repeats each element; unpack inverts."""
    x = _random((5,))
    outer = Layout((Dim("r", 4, "rep"), Dim("i", 8, "axis", 5)), 32, "i", (5,))
    inner = Layout((Dim("i", 8, "axis", 5), Dim("r", 4, "rep")), 32, "i", (5,))
    for layout in (outer, inner):
        packed = layout.pack(x)
        np.testing.assert_array_equal(packed, _reference_pack(x, layout))
        np.testing.assert_array_equal(layout.unpack(packed), x)
    np.testing.assert_array_equal(outer.pack(x)[0].reshape(4, 8)[:, :5], np.tile(x, (4, 1)))
    np.testing.assert_array_equal(inner.pack(x)[0].reshape(8, 4)[:5], np.repeat(x[:, None], 4, axis=1))


@pytest.mark.parametrize("kind", ["zero", "junk"])
def test_zero_and_junk_dimensions_hold_the_tensor_at_index_zero_only(kind):
    """zero/junk dims pack the tensor at index 0 and zeros elsewhere; unpack ignores whatever the others hold."""
    x = _random((3, 4), seed=1)
    layout = Layout((Dim("i", 4, "axis", 3), Dim("z", 4, kind), Dim("j", 4, "axis", 4)), 64, "ij", (3, 4))
    packed = layout.pack(x)
    block = packed[0].reshape(4, 4, 4)
    np.testing.assert_array_equal(block[:3, 0, :], x)
    assert not block[:, 1:, :].any()
    garbage = packed.copy().reshape(4, 4, 4)
    garbage[:, 1:, :] = _random((4, 3, 4), seed=2)
    np.testing.assert_array_equal(layout.unpack(garbage.reshape(1, 64)), x)
    assert layout.clean == (kind == "zero")


def test_axis_order_is_free_and_positions_agree_with_pack():
    """A transposed layout puts x[i, j] at j*stride_j + i; positions() names a slot that holds each element."""
    x = _random((3, 6), seed=3)
    layout = Layout((Dim("j", 8, "axis", 6), Dim("i", 4, "axis", 3)), 32, "ij", (3, 6))
    packed = layout.pack(x)
    for i, j in itertools.product(range(3), range(6)):
        assert packed[0, j * 4 + i] == x[i, j]
    flat = packed.reshape(-1)
    for element, position in layout.positions().items():
        assert flat[position] == x[element]
    np.testing.assert_array_equal(layout.unpack(packed), x)


def test_a_layout_larger_than_the_slots_is_tiled_over_ciphertexts():
    """An 8x16 block in 32 slots spans 4 ciphertexts, the outer axis choosing the ciphertext, and unpacks back."""
    x = _random((6, 13), seed=4)
    layout = natural_layout((6, 13), 32)
    assert layout.num_cts == 4 and layout.period == 32 and "x 4 cts" in str(layout)
    packed = layout.pack(x)
    assert packed.shape == (4, 32)
    for i, j in itertools.product(range(6), range(13)):
        ct, slot = divmod(i * 16 + j, 32)
        assert packed[ct, slot] == x[i, j]
    np.testing.assert_array_equal(layout.unpack(packed), x)
    assert "ciphertexts" in layout.describe()


def test_size_one_axes_need_no_dimension():
    """A size-1 axis takes no slots: (3, 1, 4) packs like (3, 4) and unpacks with its size-1 axis back."""
    x = _random((3, 1, 4), seed=5)
    layout = natural_layout((3, 1, 4), 16, "ibj")
    assert [d.name for d in layout.dims] == ["i", "j"]
    np.testing.assert_array_equal(layout.pack(x), natural_layout((3, 4), 16).pack(x[:, 0, :]))
    np.testing.assert_array_equal(layout.unpack(layout.pack(x)), x)


def test_a_scalar_fills_every_slot():
    """A 0-d tensor has the empty layout: every slot holds it, and unpack returns a 0-d array."""
    layout = natural_layout((), 8)
    packed = layout.pack(np.float64(2.5))
    np.testing.assert_array_equal(packed, np.full((1, 8), 2.5))
    assert layout.unpack(packed).shape == () and float(layout.unpack(packed)) == 2.5
    assert str(layout) == "[scalar] in 8 slots"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 100, 1024, 1025])
def test_next_pow2_is_the_smallest_power_of_two_not_below(n):
    """next_pow2(n) is a power of two >= n whose half is < n."""
    p = next_pow2(n)
    assert p & (p - 1) == 0 and p >= n and (p == 1 or p // 2 < n)


def test_json_round_trip_keeps_the_layout():
    """to_json / from_json (through a JSON string) gives back an equal layout that packs the same."""
    layout = Layout((Dim("r", 2, "rep"), Dim("j", 8, "axis", 6), Dim("z", 2, "junk"), Dim("i", 4, "axis", 3)),
                    64, "ij", (3, 6))
    again = Layout.from_json(json.loads(json.dumps(layout.to_json())))
    assert again == layout
    x = _random((3, 6), seed=6)
    np.testing.assert_array_equal(again.pack(x), layout.pack(x))


@pytest.mark.parametrize("make, fragment", [
    (lambda: Dim("i", 6, "axis", 5), "power of two"),
    (lambda: Dim("i", 0, "axis", 0), "power of two"),
    (lambda: Dim("i", 4, "diagonal"), "unknown dimension kind"),
    (lambda: Dim("i", 4, "axis", 5), "extent must lie in 1..size"),
    (lambda: Dim("i", 4, "axis", 0), "extent must lie in 1..size"),
    (lambda: Dim("r", 4, "rep", 3), "only axes have an extent"),
    (lambda: Layout((Dim("i", 4, "axis", 3),), 12, "i", (3,)), "slot count must be a power of two"),
    (lambda: Layout((Dim("i", 4, "axis", 3),), 8, "ij", (3,)), "indices and shape disagree"),
    (lambda: Layout((Dim("i", 4, "axis", 3), Dim("i", 2, "rep")), 8, "i", (3,)), "unique"),
    (lambda: Layout((Dim("i", 4, "axis", 3),), 8, "ij", (3, 2)), "has no dimension"),
    (lambda: Layout((Dim("i", 4, "axis", 3),), 8, "i", (4,)), "its dimension holds 3"),
    (lambda: Layout((Dim("i", 4, "axis", 3), Dim("k", 2, "axis", 2)), 8, "i", (3,)), "names no tensor axis"),
])
def test_malformed_dimensions_and_layouts_raise_layout_error(make, fragment):
    """Bad sizes, kinds, extents, slot counts and axis bookkeeping are refused with a LayoutError that says why."""
    with pytest.raises(LayoutError, match=fragment):
        make()


def test_tensors_and_slot_arrays_of_the_wrong_shape_are_refused():
    """pack refuses a tensor of another shape, unpack an array of the wrong ciphertext count, position a bad name."""
    layout = natural_layout((3, 5), 16)
    with pytest.raises(LayoutError, match="does not match the layout's shape"):
        layout.pack(np.zeros((5, 3)))
    with pytest.raises(LayoutError, match=r"expected 2 ciphertext\(s\) of 16 slots"):
        layout.unpack(np.zeros((1, 16)))
    with pytest.raises(LayoutError, match="no dimension 'q'"):
        layout.position("q")
    with pytest.raises(LayoutError, match="malformed layout JSON"):
        Layout.from_json({"slots": 16, "indices": "a"})
    assert issubclass(LayoutError, ValueError)
