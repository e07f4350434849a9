"""The generator's configuration: the YAML presets, their look-up and their rules."""

from __future__ import annotations

import math
import os
import sys
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import isodate
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from fleetgen_spark.core.exceptions import ConfigError

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable
else:  # pragma: no cover
    from importlib.abc import Traversable

__all__ = [
    "EVENT_TYPES",
    "MAX_DURATION",
    "MAX_EVENTS_PER_INTERVAL",
    "Config",
    "config_dirs",
    "format_duration",
    "load_config",
    "parse_duration",
    "preset_names",
    "resolve_config_path",
]

EVENT_TYPES: tuple[str, ...] = ("start driving", "stopped driving", "delivered")
DEFAULT_WEIGHTS: dict[str, float] = {"start driving": 0.40, "stopped driving": 0.35, "delivered": 0.25}
DEFAULT_PRESET = "base"
# Durations must fit in the span the clock can hold (1970 to 9999, fleetgen_spark.core.clock).
MAX_DURATION = timedelta(days=2_900_000)
# number_of_companies x drivers_per_company x event_rate_per_driver: the expected events of one
# interval once the fleet is complete. 10^8 is about 10 GB of rows per interval, far beyond what
# one machine generates in an interval; a bigger product is almost always a typo.
MAX_EVENTS_PER_INTERVAL = 10**8
# The presets travel inside the package (a wheel, a zip shipped to Spark workers), so they are read
# through importlib.resources, never by a path next to the source. conf/ in the repository holds the
# same files for people to read and copy; tests/test_presets.py keeps the two identical.
_PRESETS = "presets"
_SUFFIXES = (".yaml", ".yml")

# A file on disk, or a preset inside the installed package (a zip member when imported from a zip).
ConfigSource = Path | Traversable


def parse_duration(value: object, field: str) -> timedelta:
    """Parse an ISO-8601 duration such as ``PT15M`` into a fixed-length timedelta."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 duration such as PT15M for {field}, got {value!r}")
    try:
        parsed = isodate.parse_duration(value.strip())
    except OverflowError as err:  # timedelta's own limit, about 2.7 million years
        raise ValueError(f"{value!r} is longer than {format_duration(MAX_DURATION)}") from err
    except (isodate.ISO8601Error, ValueError) as err:
        raise ValueError(f"{value!r} is not an ISO-8601 duration such as PT15M or PT1H") from err
    if not isinstance(parsed, timedelta):
        # isodate returns a Duration for years and months, which have no fixed length.
        raise ValueError(f"{value!r} uses years or months; use days, hours, minutes or seconds")
    if abs(parsed) > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than {format_duration(MAX_DURATION)} (the span the clock can hold)")
    return parsed


def format_duration(value: timedelta) -> str:
    """Write a timedelta back as an ISO-8601 duration (``PT15M``)."""
    return str(isodate.duration_isoformat(value))


class Config(BaseModel):
    """One validated configuration: what fleet to simulate and how fast it produces events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    number_of_companies: int = Field(ge=1, le=10_000_000)
    drivers_per_company: int = Field(ge=1, le=10_000)
    event_rate_per_driver: float = Field(gt=0, le=1000)
    company_onboarding_interval: timedelta
    companies_per_onboarding: int | None = Field(default=None, ge=1)
    interval: timedelta = timedelta(minutes=15)
    event_type_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    # Realism knobs (DESIGN.md "Realism"): all off by default, and off they leave every row as it was.
    late_fraction: float = Field(default=0.0, ge=0, le=1)
    max_lateness: timedelta = timedelta(minutes=30)
    duplicate_fraction: float = Field(default=0.0, ge=0, le=1)
    bad_record_fraction: float = Field(default=0.0, ge=0, le=1)
    # How a driver's events follow each other: independent Poisson draws, or legal shifts (README "Driver shifts").
    event_model: Literal["independent", "shift"] = "independent"
    # Living entities (DESIGN.md "Realism"): off by default, and off they leave every row as it was.
    company_churn_rate: float = Field(default=0.0, ge=0, le=1)

    @field_validator("company_onboarding_interval", "interval", "max_lateness", mode="before")
    @classmethod
    def _duration(cls, value: object, info: Any) -> timedelta:
        return parse_duration(value, info.field_name)

    @field_validator("company_onboarding_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0 or value.total_seconds() != int(value.total_seconds()):
            raise ValueError("must be a positive whole number of seconds, for example PT1H")
        return value

    @field_validator("interval")
    @classmethod
    def _interval_range(cls, value: timedelta) -> timedelta:
        seconds = value.total_seconds()
        if not 60 <= seconds <= 86_400 or seconds != int(seconds):
            raise ValueError("must be whole seconds from PT1M (1 minute) to P1D (1 day)")
        return value

    @field_validator("max_lateness")
    @classmethod
    def _lateness_range(cls, value: timedelta) -> timedelta:
        seconds = value.total_seconds()
        if not 0 <= seconds <= 86_400 or seconds != int(seconds):
            raise ValueError("must be whole seconds from PT0S to P1D (1 day)")
        return value

    @field_validator("event_type_weights", mode="before")
    @classmethod
    def _weights_mapping(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as err:
                # pydantic only turns ValueError into a field error; a YAMLError would escape as is.
                problem = getattr(err, "problem", None) or "unparsable"
                raise ValueError(f"must be a JSON or YAML mapping of event type to weight ({problem})") from err
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping of event type to weight, for example {DEFAULT_WEIGHTS}")
        return value

    @field_validator("event_type_weights")
    @classmethod
    def _weights_rules(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event type(s) {unknown}; allowed: {list(EVENT_TYPES)}")
        if any(w < 0 or not math.isfinite(w) for w in value.values()):
            raise ValueError("weights must be finite and >= 0")
        if abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, they sum to {sum(value.values()):g}")
        return {name: float(value.get(name, 0.0)) for name in EVENT_TYPES}

    @model_validator(mode="after")
    def _events_per_interval(self) -> Config:
        product = self.number_of_companies * self.drivers_per_company * self.event_rate_per_driver
        if product > MAX_EVENTS_PER_INTERVAL:
            raise ValueError(
                f"number_of_companies x drivers_per_company x event_rate_per_driver = {self.number_of_companies:,}"
                f" x {self.drivers_per_company:,} x {self.event_rate_per_driver:g} = {product:,.0f} expected events"
                f" per interval; at most {MAX_EVENTS_PER_INTERVAL:,} are allowed"
            )
        return self

    @model_validator(mode="after")
    def _default_per_onboarding(self) -> Config:
        if self.companies_per_onboarding is None:
            object.__setattr__(self, "companies_per_onboarding", self.number_of_companies)
        return self

    @property
    def per_onboarding(self) -> int:
        """Companies onboarded per tick (resolved default)."""
        return self.companies_per_onboarding or self.number_of_companies

    @property
    def interval_seconds(self) -> int:
        return int(self.interval.total_seconds())

    @property
    def max_lateness_seconds(self) -> int:
        return int(self.max_lateness.total_seconds())

    @property
    def messy(self) -> bool:
        """Whether any realism knob of the delivered stream (late, duplicate, bad records) is on."""
        return self.late_fraction > 0 or self.duplicate_fraction > 0 or self.bad_record_fraction > 0

    @property
    def onboarding_seconds(self) -> int:
        return int(self.company_onboarding_interval.total_seconds())

    def with_seed(self, seed: int) -> Config:
        """The same configuration with its seed set."""
        return self.model_copy(update={"seed": seed})

    def to_yaml_dict(self) -> dict[str, Any]:
        """The configuration as plain YAML-friendly values (durations in ISO-8601)."""
        data = self.model_dump()
        data["company_onboarding_interval"] = format_duration(self.company_onboarding_interval)
        data["interval"] = format_duration(self.interval)
        data["max_lateness"] = format_duration(self.max_lateness)
        return data


def _preset_dirs() -> list[Path]:
    """Directories of the user's own presets: FLEETGEN_CONF_DIR when set, then ./conf/."""
    env_dir = os.environ.get("FLEETGEN_CONF_DIR")
    return ([Path(env_dir)] if env_dir else []) + [Path.cwd() / "conf"]


def config_dirs() -> list[Path]:
    """The directories a config name is looked up in before the package's own presets, in order."""
    return [*_preset_dirs(), Path.cwd()]


def _packaged_presets() -> dict[str, Traversable]:
    """The presets shipped inside the package, by name (``base``, ``small``, ...)."""
    return {
        item.name.rsplit(".", 1)[0]: item
        for item in (resources.files("fleetgen_spark") / _PRESETS).iterdir()
        if item.name.endswith(_SUFFIXES) and item.is_file()
    }


def preset_names() -> list[str]:
    """Every config name found: in FLEETGEN_CONF_DIR, ./conf/ and the package's presets."""
    local = {p.stem for d in _preset_dirs() if d.is_dir() for p in d.iterdir() if p.suffix in _SUFFIXES}
    return sorted(local | set(_packaged_presets()))


def resolve_config_path(path_or_name: str | os.PathLike[str]) -> ConfigSource:
    """Find a config file: an absolute path as given; a relative path or a bare name in
    FLEETGEN_CONF_DIR, ./conf/ and the working directory, then among the package's presets."""
    raw = Path(path_or_name).expanduser()
    if raw.is_absolute():
        if raw.is_file():
            return raw
        raise ConfigError(f"config file {str(raw)!r} does not exist")
    names = [raw] if raw.suffix in _SUFFIXES else [raw.with_suffix(".yaml"), raw.with_suffix(".yml"), raw]
    for candidate in (d / n for d in config_dirs() for n in names):
        if candidate.is_file():
            return candidate
    packaged = _packaged_presets()
    if raw.parent == Path(".") and raw.suffix in ("", *_SUFFIXES) and raw.stem in packaged:
        return packaged[raw.stem]
    raise ConfigError(
        f"config {str(path_or_name)!r} not found in ./conf/, the working directory or fleetgen's presets; "
        f"known presets: {', '.join(preset_names()) or 'none'}"
    )


def _read_yaml(path: ConfigSource) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {err.strerror or err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def _describe(error: ErrorDetails) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(Config.model_fields)
        return f"unknown field {field!r}; allowed fields: {allowed}"
    if error["type"] == "missing":
        return f"field {field!r} is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a rule over several fields names them itself
        return message
    return f"field {field!r} = {error['input']!r}: {message}"


def build_config(values: dict[str, Any], origin: str) -> Config:
    """Validate raw values into a Config, turning pydantic's errors into one ConfigError."""
    try:
        return Config.model_validate(values)
    except ValidationError as err:
        details = "; ".join(_describe(e) for e in err.errors())
        raise ConfigError(f"{origin}: {details}") from err


def load_config(path_or_name: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Load a preset or YAML file (default ``base``), apply overrides, and validate everything.

    Raises ConfigError naming the field, the value and the rule when anything is wrong.
    """
    path = resolve_config_path(path_or_name if path_or_name is not None else DEFAULT_PRESET)
    values = _read_yaml(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(values, f"config {str(path)!r}")
