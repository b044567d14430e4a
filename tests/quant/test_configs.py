"""Configs: validation, JSON round-trip, allowlist, registry."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quant import FMPQ, KV4, W4A4, W4A8, W4A16, W6A6, W8A8, ConfigError, config_from_json, config_to_json, get_transform
from quant.configs import ALLOWED_CONFIGS

group_sizes = st.sampled_from([32, 64, 128, 256, 1024])


@given(gs=group_sizes, outliers=st.integers(0, 300))
def test_json_round_trip_preserves_every_config(gs, outliers):
    for config in (W4A16(gs), W4A8(gs), W4A4(gs, outliers), FMPQ(gs, outliers / 300), W8A8(), W6A6(outliers / 300),
                   KV4(gs, ("k", "v"))):
        back = config_from_json(config_to_json(config))
        assert back == config and type(back) is type(config)


@pytest.mark.parametrize("bad", [0, 16, 48, 100, -64, 64.0, True, "128"])
def test_group_size_must_be_power_of_two_at_least_32(bad):
    with pytest.raises(ConfigError, match="group_size"):
        W4A16(group_size=bad)


def test_configs_are_frozen_and_versioned():
    config = W4A8()
    with pytest.raises(AttributeError):
        config.group_size = 64  # type: ignore[misc]
    with pytest.raises(ConfigError, match="version 2"):
        W4A8(version=2)


@pytest.mark.parametrize("text, match", [
    ('{"type": "os.system", "fields": {}}', "allowlist"),
    ('{"type": "QuantConfig", "fields": {}}', "allowlist"),
    ('{"type": "W4A16", "fields": {"group_size": 64, "evil": 1}}', "unknown config fields"),
    ('{"type": "W4A16"}', "'type' and 'fields'"),
    ('not json', "'type' and 'fields'"),
    ('{"type": "W4A16", "fields": {"group_size": 7}}', "group_size"),
])
def test_from_json_rejects_what_is_not_allowlisted(text, match):
    with pytest.raises(ConfigError, match=match):
        config_from_json(text)


def test_allowlist_is_the_seven_formats_and_json_is_plain():
    assert set(ALLOWED_CONFIGS) == {"W4A16", "W4A8", "W4A4", "FMPQ", "W8A8", "W6A6", "KV4"}
    assert json.loads(config_to_json(KV4())) == {
        "type": "KV4", "fields": {"group_size": 64, "targets": ["key", "value", "k_proj", "v_proj"], "version": 1}}


def test_registry_has_a_transform_per_format_and_names_them_on_error():
    for cls in ALLOWED_CONFIGS.values():
        assert callable(get_transform(cls()))

    class Other(W4A16):
        pass

    with pytest.raises(ConfigError, match="W4A16"):
        get_transform(Other())


def test_w8a8_has_no_group_size_and_fmpq_checks_its_fraction():
    assert config_to_json(W8A8()) == '{"fields": {"version": 1}, "type": "W8A8"}'
    with pytest.raises(ConfigError, match="unknown config fields"):
        config_from_json('{"type": "W8A8", "fields": {"group_size": 64}}')
    for bad in (-0.1, 1.01, True, "0.5"):
        with pytest.raises(ConfigError, match="a8_fraction"):
            FMPQ(64, a8_fraction=bad)
        with pytest.raises(ConfigError, match="a8_fraction"):
            W6A6(a8_fraction=bad)
