"""Spec parsing: a table of numpy-valid specs checked against numpy's own output shapes, and the errors."""

import numpy as np
import pytest

from einfhe import EinsumError, parse_einsum

VALID = [
    ("ij->ji", [(2, 3)]),
    ("ij", [(2, 3)]),
    ("ji", [(2, 3)]),
    ("ii", [(3, 3)]),
    ("ii->i", [(3, 3)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("ij,jk->ki", [(2, 3), (3, 4)]),
    ("...ij,...jk->...ik", [(5, 2, 3), (3, 4)]),
    ("...ij,...jk", [(5, 2, 3), (1, 3, 4)]),
    ("i...->...", [(2, 3, 4)]),
    ("ij,ij->ij", [(3, 1), (3, 4)]),
    ("ij,jk->ik", [(3, 1), (4, 2)]),
    ("i,j", [(2,), (3,)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    (" i j -> j i ", [(2, 3)]),
    ("ij", [(0, 3)]),
    ("ij,jk->ik", [(2, 0), (0, 4)]),
    ("ij,jk->ik", [(0, 3), (3, 4)]),
    ("ij,ij->ij", [(1, 3), (0, 3)]),
    ("ij,ij->ij", [(0, 3), (1, 3)]),
    ("...i,...i", [(0, 2), (1, 2)]),
]


@pytest.mark.parametrize("spec, shapes", VALID)
def test_output_shape_matches_numpy(spec, shapes):
    parsed = parse_einsum(spec, *shapes)
    expected = np.einsum(spec.replace(" ", ""), *[np.ones(s) for s in shapes]).shape
    assert parsed.output_shape == expected
    assert len(parsed.inputs) == len(shapes)
    assert all(len(term) == len(shape) for term, shape in zip(parsed.inputs, shapes))


INVALID = [
    ("ij,jk->ik", [(2, 3), (4, 5)], "size"),
    ("ij->ik", [(2, 3)], "appear in no operand"),
    ("ij->ii", [(2, 3)], "more than once"),
    ("ijk->i", [(2, 3)], "names 3 axes"),
    ("ij,jk", [(2, 3)], "operand"),
    ("i->j->k", [(2,)], "at most one"),
    ("i1->i", [(2, 3)], "invalid character"),
    ("ii->i", [(2, 3)], "repeated index"),
    ("..i->i", [(2,)], "'...'"),
    ("ij,ij->ij", [(0, 3), (2, 3)], "size"),
]


@pytest.mark.parametrize("spec, shapes, fragment", INVALID)
def test_invalid_specs_raise_einsum_error(spec, shapes, fragment):
    with pytest.raises(EinsumError, match=fragment):
        parse_einsum(spec, *shapes)


def test_numpy_refuses_what_we_refuse():
    for spec, shapes, _ in INVALID:
        with pytest.raises(ValueError):
            np.einsum(spec, *[np.ones(s) for s in shapes])


@pytest.mark.parametrize("spec, shapes", [(s, sh) for s, sh in VALID if any(0 in shape for shape in sh)])
def test_zero_size_index_marks_the_spec_empty(spec, shapes):
    assert parse_einsum(spec, *shapes).empty
    assert not parse_einsum("ij,jk->ik", (2, 3), (3, 4)).empty
