"""Blob headers and checksums are checked before a backend sees bytes; plans and layouts round-trip through JSON."""

import numpy as np
import pytest

import einfhe
from einfhe.params.precision import error_bound
from einfhe.crypto.blobs import FORMAT_VERSION, HEADER_SIZE, pack_blob, unpack_blob

SLOTS = 16


@pytest.fixture(scope="module")
def fhe():
    plan = einfhe.compile("ij,j->i", np.ones((3, 4)), einfhe.cipher((4,)), slots=SLOTS)
    ctx = einfhe.Context.for_plan(plan, params=einfhe.Parameters.insecure_for_tests(plan.depth, SLOTS))
    return plan, ctx


@pytest.mark.parametrize("for_arithmetic", [True, False])
def test_tensor_round_trip(fhe, for_arithmetic):
    plan, ctx = fhe
    x = np.array([0.5, -1.0, 2.0, 0.25])
    blob = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, x, plan.input_layout(1)))
    back = einfhe.tensor_from_bytes(ctx, blob, for_arithmetic=for_arithmetic)
    assert back.layout == plan.input_layout(1)
    assert np.abs(einfhe.decrypt(ctx, back) - x).max() <= error_bound(ctx.params, np.abs(x).max())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:10], "too short"),
        (lambda b: b"XXXXXX" + b[6:], "bad magic"),
        (lambda b: b[:6] + bytes([9]) + b[7:], "version"),
        (lambda b: b[:7] + bytes([1]) + b[8:], "expected a tensor"),
        (lambda b: b[:8] + bytes(16) + b[24:], "fingerprint"),
        (lambda b: b[:-5], "truncated"),
    ],
)
def test_damaged_blobs_are_refused_before_openfhe(fhe, mutate, message):
    plan, ctx = fhe
    blob = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, np.ones(4), plan.input_layout(1)))
    with pytest.raises(einfhe.SerializationError, match=message):
        einfhe.tensor_from_bytes(ctx, mutate(blob))


def test_garbage_payload_behind_a_valid_header_is_a_serialization_error(fhe):
    _, ctx = fhe
    from einfhe.crypto.blobs import pack_parts

    layout = einfhe.natural_layout((4,), SLOTS)
    payload = pack_parts({"layout": layout.to_json()}, [b"\x00" * 64])
    blob = pack_blob("tensor", ctx.params.fingerprint(), payload)
    with pytest.raises(einfhe.SerializationError):
        einfhe.tensor_from_bytes(ctx, blob)


def test_every_single_bit_flip_is_refused_and_payload_damage_is_corrupt_blob(fhe):
    """The CRC-32 covers the header's fields and the payload: no one-bit change of a blob loads."""
    plan, ctx = fhe
    blob = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, np.ones(4), plan.input_layout(1)))
    rng = np.random.default_rng(0)
    positions = list(range(HEADER_SIZE)) + sorted(rng.choice(np.arange(HEADER_SIZE, len(blob)), 200, replace=False))
    for position in positions:
        damaged = bytearray(blob)
        damaged[position] ^= 1 << int(rng.integers(8))
        error = einfhe.CorruptBlobError if position >= 32 else einfhe.SerializationError  # the crc and payload
        with pytest.raises(error):
            einfhe.tensor_from_bytes(ctx, bytes(damaged))


def test_a_blob_of_the_previous_format_is_refused_with_what_to_do():
    old = b"EINFHE" + bytes([1, 2]) + bytes(16) + (4).to_bytes(8, "little") + b"data"  # version 1: no checksum
    assert FORMAT_VERSION == 2
    with pytest.raises(einfhe.SerializationError, match="version 1 blobs carry no checksum"):
        unpack_blob(old, "tensor", None)


def test_blob_kind_and_fingerprint_checks():
    blob = pack_blob("ciphertext", b"f" * 16, b"payload")
    assert unpack_blob(blob, "ciphertext", b"f" * 16) == b"payload"
    with pytest.raises(einfhe.SerializationError):
        unpack_blob(blob, "ciphertext", b"g" * 16)


def test_plan_and_layout_json_round_trip(fhe):
    plan, _ = fhe
    again = einfhe.Plan.from_json(plan.to_json())
    assert again == plan and again.rotations == plan.rotations and again.depth == plan.depth
    layout = plan.input_layout(1)
    assert einfhe.Layout.from_json(layout.to_json()) == layout


@pytest.mark.parametrize("text", ["{}", '{"format": "einfhe.plan/9"}', "[1, 2]", "not json"])
def test_malformed_plan_json_is_a_plan_error(text):
    with pytest.raises(einfhe.EinfheError):
        einfhe.Plan.from_json(text)


def test_evaluation_keys_blob_gives_an_evaluation_only_context(fhe):
    plan, ctx = fhe
    blob = einfhe.evaluation_keys_to_bytes(ctx)
    with pytest.raises(einfhe.SerializationError, match="below 128-bit"):
        einfhe.context_from_evaluation_keys(blob)
    server = einfhe.context_from_evaluation_keys(blob, expected=ctx.params)
    assert server.rotations == ctx.rotations and server.backend.secret_key is None
    W, x = np.arange(12.0).reshape(3, 4) / 10, np.array([0.5, -1.0, 2.0, 0.25])
    xe = einfhe.encrypt(ctx, x, plan.input_layout(1))
    ye = einfhe.run(server, plan, W, einfhe.tensor_from_bytes(server, einfhe.tensor_to_bytes(ctx, xe)))
    result = einfhe.tensor_from_bytes(ctx, einfhe.tensor_to_bytes(server, ye))
    bound = error_bound(ctx.params, np.abs(W).max() * np.abs(x).max(), terms=4, depth=plan.depth, keyswitches=plan.keyswitches)
    assert np.abs(einfhe.decrypt(ctx, result) - W @ x).max() <= bound
    with pytest.raises(einfhe.SerializationError):
        einfhe.context_from_evaluation_keys(blob[:-3], expected=ctx.params)


def test_saved_context_decrypts_what_the_original_encrypted(fhe, tmp_path):
    import os
    import stat

    plan, ctx = fhe
    path = tmp_path / "client.keys"
    einfhe.save_context(ctx, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = einfhe.load_context(path)
    assert loaded.plans == ctx.plans and loaded.rotations == ctx.rotations
    x = np.array([0.5, -1.0, 2.0, 0.25])
    W = np.ones((3, 4))
    ye = einfhe.run(loaded, plan, W, einfhe.encrypt(ctx, x, plan.input_layout(1)))
    bound = error_bound(ctx.params, 2.0, terms=4, depth=plan.depth, keyswitches=plan.keyswitches)
    assert np.abs(einfhe.decrypt(loaded, ye) - W @ x).max() <= bound
    with pytest.raises(einfhe.SerializationError, match="got 'secret_context'"):
        einfhe.context_from_evaluation_keys(path.read_bytes(), expected=ctx.params)
