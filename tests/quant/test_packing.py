"""Int4 packing: round-trips and the documented nibble layout."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import ShapeError, pack_int4, unpack_int4
from quant.packing import padded_k, tile_split


@settings(max_examples=40, deadline=None)
@given(subs=st.integers(1, 24), n=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_unpack_inverts_pack(subs, n, seed):
    # any K that is a multiple of 32: whole 256-row tiles, a short tail, or both
    values = torch.randint(0, 16, (32 * subs, n), generator=torch.Generator().manual_seed(seed))
    packed = pack_int4(values)
    assert packed.dtype == torch.int32 and packed.shape == (4 * subs, n)
    assert torch.equal(unpack_int4(packed), values.to(torch.int32))
    assert tile_split(packed.shape[0]) == (subs // 8, subs % 8)


def test_layout_matches_the_documented_formula(rng):
    # two whole tiles (nibble-strided), then a tail of three 32-row sub-blocks (eight consecutive rows a word)
    values = torch.randint(0, 16, (512 + 96, 3), generator=rng)
    packed = pack_int4(values)
    assert packed.shape == (64 + 12, 3)
    for t in range(2):
        for r in (0, 7, 31):
            for n in range(3):
                word = int(packed[32 * t + r, n]) & 0xFFFFFFFF
                expected = sum(int(values[256 * t + 32 * i + r, n]) << (4 * i) for i in range(8))
                assert word == expected
    for j in range(3):
        for a in range(4):
            for n in range(3):
                word = int(packed[64 + 4 * j + a, n]) & 0xFFFFFFFF
                expected = sum(int(values[512 + 32 * j + 8 * a + i, n]) << (4 * i) for i in range(8))
                assert word == expected


def test_pack_rejects_bad_input():
    with pytest.raises(ShapeError, match="multiple of 32"):
        pack_int4(torch.zeros(100, 4, dtype=torch.int32))
    with pytest.raises(ShapeError, match="0..15"):
        pack_int4(torch.full((256, 1), 16))
    with pytest.raises(ShapeError):
        unpack_int4(torch.zeros(32, 4, dtype=torch.int64))
    with pytest.raises(ShapeError, match="multiple of 32"):
        unpack_int4(torch.zeros(6, 4, dtype=torch.int32))


@pytest.mark.parametrize("k, gs, expected", [(1, 32, 32), (100, 128, 128), (384, 128, 384), (256, 128, 256),
                                             (300, 64, 320), (384, 1024, 1024), (100, 32, 128)])
def test_padded_k_pads_only_to_the_group(k, gs, expected):
    assert padded_k(k, gs) == expected
