"""Public names, the error tree, and OpenFHE's exceptions translated at the backend boundary."""

import numpy as np
import pytest

import einfhe
from einfhe import errors
from einfhe.backends import get_backend_class
from einfhe.backends.openfhe import OpenFHEBackend


def test_public_names_exist_and_are_exported():
    for name in einfhe.__all__:
        assert hasattr(einfhe, name), name
    assert set(errors.__all__) <= set(einfhe.__all__)


def test_every_error_has_one_root():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.EinfheError)


def test_error_messages_show_context():
    exc = errors.PlanError("too deep", spec="ij->i", depth=3)
    assert "too deep" in str(exc) and "spec='ij->i'" in str(exc) and "depth=3" in str(exc)


def test_unknown_backend_lists_valid_names():
    with pytest.raises(einfhe.EinfheError, match="simulator, openfhe"):
        get_backend_class("seal")


@pytest.fixture(scope="module")
def backend():
    return OpenFHEBackend.generate(einfhe.Parameters.insecure_for_tests(1, 8), [1])


BAD_CALLS = {
    "encrypt": lambda b: b.encrypt(np.ones(3)),
    "decrypt": lambda b: b.decrypt("not a ciphertext"),
    "mul_plain": lambda b: b.mul_plain(b.encrypt(np.ones(8)), ["x"] * 8),
    "mul": lambda b: b.mul(b.encrypt(np.ones(8)), "x"),
    "add": lambda b: b.add("a", "b"),
    "bootstrap": lambda b: b.bootstrap(b.encrypt(np.ones(8))),
    "chebyshev": lambda b: b.chebyshev(b.encrypt(np.ones(8)), ("x", 1.0, 2.0), -1.0, 1.0),
    "sub": lambda b: b.sub(b.encrypt(np.ones(8)), None),
    "add_plain": lambda b: b.add_plain(b.encrypt(np.ones(8)), ["x"] * 8),
    "rotate": lambda b: b.rotate(b.encrypt(np.ones(8)), 3),
    "rescale": lambda b: b.rescale(b.rescale(b.mul(b.encrypt(np.ones(8)), b.encrypt(np.ones(8))))),
    "serialize_ciphertext": lambda b: b.serialize_ciphertext(object()),
    "deserialize_ciphertext": lambda b: b.deserialize_ciphertext(b"\x01\x02garbage"),
}


@pytest.mark.parametrize("method", sorted(BAD_CALLS))
def test_openfhe_errors_are_translated(backend, method):
    with pytest.raises(einfhe.EinfheError):
        BAD_CALLS[method](backend)


def test_translation_covers_every_backend_operation():
    abstract = {name for name, value in vars(einfhe.backends.Backend).items() if getattr(value, "__isabstractmethod__", False)}
    assert abstract - {"level"} == set(BAD_CALLS)


def test_evaluation_only_backend_cannot_decrypt(backend):
    blobs = backend.export_evaluation_keys()
    server = OpenFHEBackend.from_evaluation_keys(backend.params, blobs, backend.rotations)
    ct = server.add(backend.encrypt(np.ones(8)), backend.encrypt(np.ones(8)))
    assert np.abs(backend.decrypt(server.rotate(ct, 1)) - 2.0).max() < 1e-6
    with pytest.raises(einfhe.BackendError, match="no secret key"):
        server.decrypt(ct)


def test_einsum_with_a_natural_layout_compiles_for_it():
    rng = np.random.default_rng(0)
    W, x = rng.standard_normal((3, 5)), rng.standard_normal(5)
    plan = einfhe.compile("ij,j->i", W, einfhe.cipher(x.shape, einfhe.natural_layout(x.shape, 16)), slots=16)
    ctx = einfhe.Context.for_plan(plan, backend="simulator")
    y = einfhe.decrypt(ctx, einfhe.einsum("ij,j->i", W, einfhe.encrypt(ctx, x), ctx=ctx))
    np.testing.assert_allclose(y, W @ x, rtol=1e-12)


def test_operand_in_wrong_layout_is_refused():
    plan = einfhe.compile("ij,j->i", np.ones((3, 5)), einfhe.cipher((5,)), slots=16)
    ctx = einfhe.Context.for_plan(plan, backend="simulator")
    with pytest.raises(einfhe.EinsumError, match="plan.input_layout"):
        einfhe.run(ctx, plan, np.ones((3, 5)), einfhe.encrypt(ctx, np.ones(5)))
