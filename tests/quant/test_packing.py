"""Int4 packing: round-trips and the documented nibble layout."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import ShapeError, pack_int4, unpack_int4
from quant.packing import padded_k


@settings(max_examples=40, deadline=None)
@given(tiles=st.integers(1, 3), n=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_unpack_inverts_pack(tiles, n, seed):
    values = torch.randint(0, 16, (256 * tiles, n), generator=torch.Generator().manual_seed(seed))
    packed = pack_int4(values)
    assert packed.dtype == torch.int32 and packed.shape == (32 * tiles, n)
    assert torch.equal(unpack_int4(packed), values.to(torch.int32))


def test_layout_matches_the_documented_formula(rng):
    values = torch.randint(0, 16, (512, 3), generator=rng)
    packed = pack_int4(values)
    for t in range(2):
        for r in (0, 7, 31):
            for n in range(3):
                word = int(packed[32 * t + r, n]) & 0xFFFFFFFF
                expected = sum(int(values[256 * t + 32 * i + r, n]) << (4 * i) for i in range(8))
                assert word == expected


def test_pack_rejects_bad_input():
    with pytest.raises(ShapeError, match="multiple of 256"):
        pack_int4(torch.zeros(128, 4, dtype=torch.int32))
    with pytest.raises(ShapeError, match="0..15"):
        pack_int4(torch.full((256, 1), 16))
    with pytest.raises(ShapeError):
        unpack_int4(torch.zeros(32, 4, dtype=torch.int64))


@pytest.mark.parametrize("k, gs, expected", [(1, 32, 256), (256, 128, 256), (300, 64, 512), (384, 1024, 1024)])
def test_padded_k(k, gs, expected):
    assert padded_k(k, gs) == expected
