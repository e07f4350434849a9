"""The presets, overrides, validation rules and file look-up of ``fleetgen_spark.core.config``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetgen_spark import Config, ConfigError, load_config
from fleetgen_spark.core.config import DEFAULT_WEIGHTS, EVENT_TYPES, MAX_EVENTS_PER_INTERVAL, resolve_config_path

MINIMAL_YAML = """\
number_of_companies: 3
drivers_per_company: 2
event_rate_per_driver: 1.0
company_onboarding_interval: PT1H
"""


@pytest.fixture(autouse=True)
def _no_conf_dir_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """An outside FLEETGEN_CONF_DIR would change where names are looked up."""
    monkeypatch.delenv("FLEETGEN_CONF_DIR", raising=False)


@pytest.mark.parametrize(
    ("preset", "seed", "companies", "drivers", "rate", "onboarding"),
    [
        ("base", 42, 100, 10, 3.5, timedelta(hours=1)),
        ("small", 100, 5, 5, 2.0, timedelta(minutes=30)),
        ("scaling", 200, 1000, 20, 5.0, timedelta(hours=2)),
    ],
)
def test_presets_hold_the_documented_values(
    preset: str, seed: int, companies: int, drivers: int, rate: float, onboarding: timedelta
) -> None:
    config = load_config(preset)
    assert config.seed == seed
    assert config.number_of_companies == companies
    assert config.drivers_per_company == drivers
    assert config.event_rate_per_driver == rate
    assert config.company_onboarding_interval == onboarding
    assert config.interval == timedelta(minutes=15)
    assert config.event_type_weights == DEFAULT_WEIGHTS


def test_default_preset_is_base() -> None:
    assert load_config() == load_config("base")


def test_companies_per_onboarding_defaults_to_the_fleet_size() -> None:
    config = load_config("small")
    assert config.companies_per_onboarding == 5
    assert config.per_onboarding == 5
    assert load_config("small", number_of_companies="9").companies_per_onboarding == 9
    assert load_config("small", companies_per_onboarding="2").companies_per_onboarding == 2


def test_string_overrides_apply_as_spark_options_give_them() -> None:
    config = load_config(
        "small",
        seed="9",
        number_of_companies="7",
        drivers_per_company="3",
        event_rate_per_driver="1.5",
        company_onboarding_interval="PT2H",
        companies_per_onboarding="2",
        interval="PT5M",
        event_type_weights='{"start driving": 0.5, "stopped driving": 0.5}',
    )
    assert config.seed == 9
    assert config.number_of_companies == 7
    assert config.drivers_per_company == 3
    assert config.event_rate_per_driver == 1.5
    assert config.company_onboarding_interval == timedelta(hours=2)
    assert config.companies_per_onboarding == 2
    assert config.interval == timedelta(minutes=5)
    assert config.interval_seconds == 300
    assert config.onboarding_seconds == 7200
    # Missing types get weight 0, in the fixed order of EVENT_TYPES.
    assert config.event_type_weights == {"start driving": 0.5, "stopped driving": 0.5, "delivered": 0.0}
    assert tuple(config.event_type_weights) == EVENT_TYPES


def test_none_overrides_are_ignored() -> None:
    assert load_config("small", seed=None, interval=None) == load_config("small")


def test_yaml_weights_override() -> None:
    config = load_config("small", event_type_weights="{start driving: 1.0}")
    assert config.event_type_weights == {"start driving": 1.0, "stopped driving": 0.0, "delivered": 0.0}


def test_config_is_frozen_and_round_trips_through_yaml_values() -> None:
    config = load_config("small")
    with pytest.raises(ValueError, match="frozen"):
        config.seed = 1  # type: ignore[misc]
    data = config.to_yaml_dict()
    assert data["company_onboarding_interval"] == "PT30M"
    assert data["interval"] == "PT15M"
    assert Config.model_validate(data) == config
    assert config.with_seed(7).seed == 7
    assert config.seed == 100


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number_of_companies", 0),
        ("number_of_companies", 10_000_001),
        ("number_of_companies", "abc"),
        ("drivers_per_company", 0),
        ("drivers_per_company", 10_001),
        ("event_rate_per_driver", 0),
        ("event_rate_per_driver", 1001),
        ("event_rate_per_driver", "-1.5"),
        ("companies_per_onboarding", 0),
        ("seed", -1),
        ("company_onboarding_interval", "1 hour"),
        ("company_onboarding_interval", "PT0S"),
        ("company_onboarding_interval", "P1M"),
        ("company_onboarding_interval", 3600),
        ("interval", "PT30S"),
        ("interval", "P2D"),
        ("interval", "fifteen minutes"),
        ("interval", "PT90.5S"),
    ],
)
def test_out_of_range_values_name_field_and_value(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("small", **{field: value})
    message = str(info.value)
    assert repr(field) in message
    assert str(value) in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number_of_companies", 1),
        ("number_of_companies", 10_000_000),
        ("drivers_per_company", 1),
        ("drivers_per_company", 10_000),
        ("event_rate_per_driver", 1000),
        ("event_rate_per_driver", 0.001),
        ("interval", "PT1M"),
        ("interval", "P1D"),
        ("seed", 0),
    ],
)
def test_range_bounds_are_inclusive(field: str, value: Any) -> None:
    load_config("small", **{field: value})


@pytest.mark.parametrize(
    ("weights", "rule"),
    [
        ({"start driving": 0.5, "delivered": 0.4}, "sum to 1"),
        ({"start driving": 0.6, "stopped driving": 0.6}, "sum to 1"),
        ({"start driving": 1.5, "delivered": -0.5}, ">= 0"),
        ({"start driving": 0.5, "honking": 0.5}, "honking"),
        ("[0.4, 0.35, 0.25]", "mapping"),
    ],
)
def test_bad_event_type_weights(weights: Any, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("small", event_type_weights=weights)
    message = str(info.value)
    assert "'event_type_weights'" in message
    assert rule in message


def test_unknown_event_type_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("small", event_type_weights={"honking": 1.0})
    message = str(info.value)
    assert "honking" in message
    assert all(name in message for name in EVENT_TYPES)


def test_weights_option_that_is_not_yaml_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("small", event_type_weights="{start driving: [")
    message = str(info.value)
    assert "'event_type_weights'" in message
    assert "{start driving: [" in message


def test_unknown_field_is_named_with_the_allowed_fields() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("small", colour="red")
    message = str(info.value)
    assert "'colour'" in message
    assert "number_of_companies" in message


def test_several_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("small", number_of_companies=0, drivers_per_company=0)
    message = str(info.value)
    assert "'number_of_companies'" in message
    assert "'drivers_per_company'" in message


def test_missing_required_field(tmp_path: Path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("number_of_companies: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'drivers_per_company' is required"):
        load_config(path)


def test_a_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        load_config("small", number_of_companies=0)


def test_non_mapping_yaml(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "mapping" in str(info.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("number_of_companies: [3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_empty_yaml_reports_the_required_fields(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="'number_of_companies' is required"):
        load_config(path)


def test_missing_file_lists_the_presets() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("no-such-preset")
    message = str(info.value)
    assert "'no-such-preset'" in message
    assert "base, living, messy, scaling, small" in message


def test_missing_absolute_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(missing)


def test_absolute_path_is_used_as_given(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(MINIMAL_YAML, encoding="utf-8")
    config = load_config(str(path))
    assert config.number_of_companies == 3
    assert config.seed is None


def test_bare_name_is_found_in_conf_of_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "tiny.yaml").write_text(MINIMAL_YAML, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("tiny") == tmp_path / "conf" / "tiny.yaml"
    assert resolve_config_path("tiny.yaml") == tmp_path / "conf" / "tiny.yaml"
    assert load_config("tiny").number_of_companies == 3


def test_conf_comes_before_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "twin.yaml").write_text(MINIMAL_YAML, encoding="utf-8")
    (tmp_path / "twin.yaml").write_text(MINIMAL_YAML.replace("3", "4", 1), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config("twin").number_of_companies == 3


def test_relative_path_falls_back_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "local.yaml").write_text(MINIMAL_YAML, encoding="utf-8")
    (tmp_path / "flat.yml").write_text(MINIMAL_YAML, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("sub/local.yaml") == tmp_path / "sub" / "local.yaml"
    assert resolve_config_path("flat") == tmp_path / "flat.yml"
    assert load_config("sub/local.yaml").drivers_per_company == 2


def test_presets_are_found_from_any_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config("small").seed == 100


def test_conf_dir_environment_variable_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "small.yaml").write_text(MINIMAL_YAML, encoding="utf-8")
    monkeypatch.setenv("FLEETGEN_CONF_DIR", str(tmp_path))
    assert load_config("small").number_of_companies == 3


def test_events_per_interval_are_capped_by_the_product_of_the_fields() -> None:
    # 10 M companies x 10,000 drivers x 1000 events: each field within its range, 10^14 together.
    with pytest.raises(ConfigError) as err:
        load_config("small", number_of_companies=10_000_000, drivers_per_company=10_000, event_rate_per_driver=1000)
    message = str(err.value)
    assert "number_of_companies x drivers_per_company x event_rate_per_driver" in message
    assert "100,000,000,000,000" in message and f"{MAX_EVENTS_PER_INTERVAL:,}" in message
    assert "field 'config'" not in message  # the rule names its fields, not a whole-config dump


def test_events_per_interval_cap_is_inclusive() -> None:
    load_config("small", number_of_companies=100_000, drivers_per_company=1000, event_rate_per_driver=1)


@pytest.mark.parametrize("value", ["P99999999999D", "PT99999999999999H", "P2900001D"])
def test_durations_beyond_what_the_clock_holds_are_one_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match=r"company_onboarding_interval.*longer than P2900000D"):
        load_config("small", company_onboarding_interval=value)
