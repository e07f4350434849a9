"""The sources' options, parsed once into a frozen object that the readers receive."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from fleetgen_spark.core.clock import align_down, parse_instant, parse_speedup
from fleetgen_spark.core.config import Config, load_config
from fleetgen_spark.core.exceptions import ConfigError, OptionError

__all__ = ["SOURCE_OPTIONS", "SourceOptions", "parse_options"]

# Options besides the config fields; Spark hands them over lower-cased.
SOURCE_OPTIONS: tuple[str, ...] = (
    "config",
    "start",
    "end",
    "speedup",
    "maxIntervalsPerTrigger",
    "numPartitions",
    "dataDir",
    "dataDirConf",
    "resumeFrom",
    "clockAnchor",
)
_MAX_PARTITIONS = 10_000


@dataclass(frozen=True)
class SourceOptions:
    """Everything a fleetgen reader needs to know, validated."""

    config: Config
    start: datetime | None = None
    end: datetime | None = None
    speedup: float | None = 1.0
    max_intervals_per_trigger: int = 1
    num_partitions: int | None = None
    data_dir: str | None = None
    # The Hadoop settings of the data directory's storage (fs.s3a.endpoint, ...): the pipeline passes its own.
    data_dir_conf: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    resume_from: datetime | None = None
    clock_anchor: tuple[datetime, float] | None = None
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


def _positive_int(name: str, value: str, upper: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError as err:
        raise OptionError(f"option {name!r} = {value!r}: must be an integer from 1 to {upper}") from err
    if not 1 <= number <= upper:
        raise OptionError(f"option {name!r} = {value!r}: must be an integer from 1 to {upper}")
    return number


def _clock_anchor(value: str) -> tuple[datetime, float]:
    """``<ISO instant>@<wall-clock epoch seconds>``: the simulated time a clock read at a wall time."""
    sim, sep, wall = str(value).partition("@")
    try:
        if not sep:
            raise ValueError(value)
        return parse_instant(sim, "clockAnchor"), float(wall)
    except (ValueError, OptionError) as err:
        raise OptionError(
            f"option 'clockAnchor' = {value!r}: expected <ISO-8601 instant>@<epoch seconds>, "
            "e.g. 2025-11-08T06:00:00Z@1764690000.5"
        ) from err


def _json_object(name: str, value: str) -> dict[str, str]:
    try:
        data = json.loads(value)
        if not isinstance(data, dict):
            raise ValueError(value)
    except ValueError as err:
        raise OptionError(f"option {name!r} = {value!r}: expected a JSON object of settings") from err
    return {str(k): str(v) for k, v in data.items()}


def parse_options(options: Mapping[str, str], *, source: str = "fleetgen") -> SourceOptions:
    """Validate the options of a ``fleetgen`` or ``fleetgen_companies`` source.

    Unknown names are rejected with the list of known ones; each value is checked once.
    """
    canonical = {name.lower(): name for name in (*SOURCE_OPTIONS, *Config.model_fields)}
    given: dict[str, str] = {}
    for key, value in options.items():
        name = canonical.get(key.lower())
        if name is None:
            known = ", ".join(sorted(canonical.values(), key=str.lower))
            raise OptionError(f"unknown option {key!r} = {value!r} for source {source!r}; known options: {known}")
        given[name] = value

    overrides = {k: v for k, v in given.items() if k in Config.model_fields}
    try:
        config = load_config(given.get("config"), **overrides)
    except ConfigError as err:
        raise OptionError(f"source {source!r}: {err}") from err

    interval_s = config.interval_seconds
    start = align_down(parse_instant(given["start"], "start"), interval_s) if "start" in given else None
    end = align_down(parse_instant(given["end"], "end"), interval_s) if "end" in given else None
    if start is not None and end is not None and end <= start:
        raise OptionError(
            f"option 'end' = {given['end']!r} must be after option 'start' = {given['start']!r} "
            f"(by at least one interval of {interval_s} s once both are aligned)"
        )
    speedup = parse_speedup(given.get("speedup"))
    if speedup is None and end is None:
        raise OptionError("option 'speedup' = 'max' needs option 'end': without pacing the source runs up to end")

    return SourceOptions(
        config=config,
        start=start,
        end=end,
        speedup=speedup,
        max_intervals_per_trigger=_positive_int(
            "maxIntervalsPerTrigger", given.get("maxIntervalsPerTrigger", "1"), 1_000_000
        ),
        num_partitions=(
            _positive_int("numPartitions", given["numPartitions"], _MAX_PARTITIONS)
            if "numPartitions" in given
            else None
        ),
        data_dir=given.get("dataDir") or None,
        data_dir_conf=_json_object("dataDirConf", given["dataDirConf"]) if given.get("dataDirConf") else {},
        resume_from=(
            align_down(parse_instant(given["resumeFrom"], "resumeFrom"), interval_s) if "resumeFrom" in given else None
        ),
        clock_anchor=_clock_anchor(given["clockAnchor"]) if "clockAnchor" in given else None,
        raw=dict(given),
    )
