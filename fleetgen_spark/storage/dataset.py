"""What a data directory remembers about its simulation: seed, start and onboarding changes.

``manifests/dataset.md`` is written once, on the first run; its JSON block is read back by
every later run, so a data directory never silently changes seed or start.
``manifests/onboarding.json`` records the onboarding segments, so that both sources agree
on who exists when, even after a config change.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from fleetgen_spark.core.clock import align_down, batch_id, epoch_seconds, from_epoch, iso, parse_instant
from fleetgen_spark.core.config import EVENT_TYPES, Config, parse_duration
from fleetgen_spark.core.exceptions import ConfigError
from fleetgen_spark.core.options import SourceOptions
from fleetgen_spark.core.schedule import OnboardingPlan, Segment
from fleetgen_spark.core.seed import draw_seed
from fleetgen_spark.storage.datadir import DATASET_MD, MANIFESTS, DataDir, utc_now_iso
from fleetgen_spark.storage.logs import get_logger, log_event

__all__ = [
    "EVENT_SHAPE_FIELDS",
    "Dataset",
    "check_start",
    "ensure_dataset",
    "event_shapes",
    "load_segments",
    "onboarding_plan",
    "options_data_dir",
    "read_dataset",
    "record_event_shape",
]

_log = get_logger("dataset")
_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)
# The config fields that shape a driver's events: a change governs the intervals after those written.
EVENT_SHAPE_FIELDS = (
    "drivers_per_company",
    "event_rate_per_driver",
    "event_type_weights",
    "late_fraction",
    "max_lateness",
    "duplicate_fraction",
    "bad_record_fraction",
)
# What a shape recorded before the realism knobs existed had: every knob off.
_SHAPE_DEFAULTS: dict[str, Any] = {
    "late_fraction": 0.0,
    "max_lateness": "PT30M",
    "duplicate_fraction": 0.0,
    "bad_record_fraction": 0.0,
}


_SEGMENTS = f"{MANIFESTS}/onboarding.json"
_SHAPES = f"{MANIFESTS}/event_shapes.json"


@lru_cache(maxsize=16)
def _data_dir(location: str, conf: tuple[tuple[str, str], ...]) -> DataDir:
    return DataDir(location, dict(conf))


def options_data_dir(options: SourceOptions) -> DataDir | None:
    """The data directory a source's ``dataDir`` option names, opened once per process."""
    if options.data_dir is None:
        return None
    return _data_dir(options.data_dir, tuple(sorted(options.data_dir_conf.items())))


def load_segments(layout: DataDir) -> tuple[Segment, ...]:
    """The recorded onboarding segments of a data directory (empty if none yet)."""
    data = layout.read_json(_SEGMENTS)
    return tuple(Segment(**seg) for seg in data.get("segments", []))


def onboarding_plan(options: SourceOptions, sim_start_s: int) -> OnboardingPlan:
    """The plan both sources use: the data directory's record if there is one, else the config."""
    data_dir = options_data_dir(options)
    if data_dir is not None:
        segments = load_segments(data_dir)
        if segments:
            return OnboardingPlan(segments)
    return OnboardingPlan.from_config(options.config, sim_start_s)


def _shape(config: Config) -> dict[str, Any]:
    values = config.to_yaml_dict()
    return {name: values[name] for name in EVENT_SHAPE_FIELDS}


def event_shapes(options: SourceOptions) -> list[tuple[int, Config]]:
    """``(effective_from, config)`` pairs, oldest first: the event-shaping fields in force from each instant.

    Without a data directory (or before any change) the options' config governs every interval.
    """
    data_dir = options_data_dir(options)
    if data_dir is None:
        return [(-(2**62), options.config)]
    recorded = data_dir.read_json(_SHAPES).get("shapes", [])
    if not recorded:
        return [(-(2**62), options.config)]
    return [
        (int(shape["effective_from"]), options.config.model_copy(update=_config_values(shape))) for shape in recorded
    ]


def _config_values(shape: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {name: shape.get(name, _SHAPE_DEFAULTS.get(name)) for name in EVENT_SHAPE_FIELDS}
    values["max_lateness"] = parse_duration(values["max_lateness"], "max_lateness")
    # The JSON file keeps keys sorted; the weights must be in EVENT_TYPES order again, or the
    # cumulative weights (and so every event_type) follow the alphabet instead (model_copy does
    # not validate).
    weights: dict[str, float] = values["event_type_weights"]
    values["event_type_weights"] = {name: float(weights.get(name, 0.0)) for name in EVENT_TYPES}
    return values


def record_event_shape(layout: DataDir, config: Config, generated_until: int | None, start: int) -> None:
    """Record the event-shaping fields: once on the first run, then each change, governing the
    intervals from ``generated_until`` (the end of what the tables hold) on."""
    shapes = list(layout.read_json(_SHAPES).get("shapes", []))
    wanted = _shape(config)
    if shapes and _config_values(shapes[-1]) == _config_values(wanted):
        return
    effective = start if generated_until is None else generated_until
    if shapes:
        effective = max(effective, int(shapes[-1]["effective_from"]))
        old, new = _config_values(shapes[-1]), _config_values(wanted)
        changed = [f"{name} {shapes[-1].get(name, _SHAPE_DEFAULTS.get(name))} -> {wanted[name]}"
                   for name in EVENT_SHAPE_FIELDS if old[name] != new[name]]  # fmt: skip
        _announce(changed, effective, generated_until is not None)
    shapes = [s for s in shapes if int(s["effective_from"]) < effective]  # a change before any row replaces
    layout.write_json(_SHAPES, {"shapes": [*shapes, {"effective_from": effective, **wanted}]})


def _announce(changed: list[str], effective: int, generated: bool) -> None:
    """One line for a recorded config change: what changed, and from which interval or tick on."""
    earlier = "; earlier ones keep their rows" if generated else ""
    log_event(
        _log,
        f"config change recorded: {', '.join(changed)}, from {batch_id(from_epoch(effective))} on{earlier}",
        logging.WARNING,
        changed=changed,
        effective_from=iso(from_epoch(effective)),
    )


@dataclass(frozen=True)
class Dataset:
    """The identity of one simulation: its seed, its start and the config it began with."""

    seed: int
    start: datetime
    created_at: str
    config: dict[str, Any]


def _render(dataset: Dataset) -> str:
    block = json.dumps(
        {"seed": dataset.seed, "start": iso(dataset.start), "created_at": dataset.created_at, "config": dataset.config},
        indent=2,
        sort_keys=True,
    )
    lines = [
        "# fleetgen dataset",
        "",
        "This data directory holds one simulation. Its seed and start were chosen on the first run",
        "and every later run reuses them, so the same intervals always hold the same events.",
        "",
        f"- seed: {dataset.seed}",
        f"- start: {iso(dataset.start)}",
        f"- created_at: {dataset.created_at}",
        "",
        "## Config at creation",
        "",
        *(f"- {k}: {v}" for k, v in dataset.config.items()),
        "",
        "Machine-readable copy (do not edit):",
        "",
        "```json",
        block,
        "```",
        "",
    ]
    return "\n".join(lines)


def read_dataset(layout: DataDir) -> Dataset | None:
    """The data directory's dataset descriptor, or None when it has none yet."""
    text = layout.read_text(DATASET_MD)
    if text is None:
        return None
    match = _JSON_BLOCK.search(text)
    if match is None:
        raise ConfigError(
            f"{layout.location(DATASET_MD)} has no JSON block; it was edited by hand or is not a fleetgen "
            "dataset descriptor"
        )
    data = json.loads(match.group(1))
    return Dataset(int(data["seed"]), parse_instant(data["start"], "start"), data["created_at"], data["config"])


def _record_onboarding_change(layout: DataDir, config: Config, segments: tuple[Segment, ...]) -> None:
    """Append a segment when the onboarding fields changed; it governs ticks after the last generated one."""
    last = segments[-1]
    wanted = Segment.from_config(config, last.effective_from)
    if (wanted.number_of_companies, wanted.companies_per_onboarding, wanted.onboarding_s) == (
        last.number_of_companies,
        last.companies_per_onboarding,
        last.onboarding_s,
    ):
        return
    state = layout.read_state()
    done = [
        parse_instant(v, k)
        for k, v in (
            ("last_company_tick", state.last_company_tick),
            ("last_driver_interval_end", state.last_driver_interval_end),
        )
        if v
    ]
    # Nothing generated yet: the change may govern from the very first tick.
    floor = max(epoch_seconds(d) for d in done) if done else last.effective_from - 1
    ticks_done = max(0, (floor - last.effective_from) // last.onboarding_s + 1)
    effective = last.effective_from + ticks_done * last.onboarding_s
    new = Segment.from_config(config, effective)
    names = {
        "number_of_companies": "number_of_companies",
        "companies_per_onboarding": "companies_per_onboarding",
        "onboarding_s": "company_onboarding_interval (s)",
    }
    _announce(
        [
            f"{label} {getattr(last, n)} -> {getattr(new, n)}"
            for n, label in names.items()
            if getattr(last, n) != getattr(new, n)
        ],
        effective,
        bool(done),
    )
    layout.write_json(_SEGMENTS, {"segments": [s.to_dict() for s in (*segments, new)]})


def _refuse(layout: DataDir, field: str, recorded: object, given: object) -> ConfigError:
    return ConfigError(
        f"{field} {given} differs from the {field} {recorded} recorded in {layout.location(DATASET_MD)}; "
        "seed, start, interval, company_churn_rate and event_model are a data directory's identity: "
        "use the recorded value, "
        "or another --data-dir (or clean this one first)"
    )


# Fields that shape a data directory's whole history, and their value in a record made before they existed.
# Company churn and the event model are folded from the start, so a change would rewrite the past.
_IDENTITY_FIELDS: dict[str, object] = {"interval": None, "company_churn_rate": 0.0, "event_model": "independent"}


def _check_identity(layout: DataDir, dataset: Dataset, config: Config) -> None:
    """Refuse a run that asks for another seed, interval, churn rate or event model than the data directory's."""
    if config.seed is not None and config.seed != dataset.seed:
        raise _refuse(layout, "seed", dataset.seed, config.seed)
    values = config.to_yaml_dict()
    for name, default in _IDENTITY_FIELDS.items():
        recorded = dataset.config.get(name, default)
        given = values.get(name, default)
        if recorded is not None and recorded != given:
            raise _refuse(layout, name, recorded, given)


def check_start(layout: DataDir, dataset: Dataset, start: datetime) -> None:
    """Refuse an explicit start that is not the data directory's (a backfill continues what it holds)."""
    if start != dataset.start:
        raise _refuse(layout, "start", iso(dataset.start), iso(start))


def ensure_dataset(layout: DataDir, config: Config, start: datetime | None = None) -> Dataset:
    """Create the dataset descriptor on the first run; afterwards read it back (and record onboarding changes).

    The returned Dataset's seed and start are the ones every job on this directory must use.
    An explicit seed that differs from the recorded one is refused rather than silently changed.
    """
    dataset = read_dataset(layout)
    if dataset is not None:
        _check_identity(layout, dataset, config)
        segments = load_segments(layout)
        if segments:
            _record_onboarding_change(layout, config, segments)
        return dataset
    seed = config.seed if config.seed is not None else draw_seed()
    begin = align_down(start or from_epoch(time.time()), config.interval_seconds)
    dataset = Dataset(seed, begin, utc_now_iso(), config.with_seed(seed).to_yaml_dict())
    layout.write_json(_SEGMENTS, {"segments": [Segment.from_config(config, epoch_seconds(begin)).to_dict()]})
    layout.write_text(DATASET_MD, _render(dataset))
    return dataset
