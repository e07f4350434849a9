"""What a data directory remembers about its simulation: seed, start and onboarding changes.

``manifests/dataset.md`` is written once, on the first run; its JSON block is read back by
every later run, so a data directory never silently changes seed or start.
``manifests/onboarding.json`` records the onboarding segments, so that both sources agree
on who exists when, even after a config change.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetgen_spark.clock import align_down, epoch_seconds, from_epoch, iso, parse_instant
from fleetgen_spark.config import Config
from fleetgen_spark.exceptions import ConfigError
from fleetgen_spark.manifests import Layout, read_json, utc_now_iso, write_json_atomic
from fleetgen_spark.options import SourceOptions
from fleetgen_spark.schedule import OnboardingPlan, Segment
from fleetgen_spark.seed import draw_seed

__all__ = ["Dataset", "ensure_dataset", "load_segments", "onboarding_plan", "segments_path"]

_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)
_ONBOARDING_FIELDS = ("number_of_companies", "companies_per_onboarding", "company_onboarding_interval")


def segments_path(data_dir: Path) -> Path:
    return data_dir / "manifests" / "onboarding.json"


def load_segments(data_dir: Path) -> tuple[Segment, ...]:
    """The recorded onboarding segments of a data directory (empty if none yet)."""
    data = read_json(segments_path(data_dir))
    return tuple(Segment(**seg) for seg in data.get("segments", []))


def onboarding_plan(options: SourceOptions, sim_start_s: int) -> OnboardingPlan:
    """The plan both sources use: the data directory's record if there is one, else the config."""
    if options.data_dir is not None:
        segments = load_segments(options.data_dir)
        if segments:
            return OnboardingPlan(segments)
    return OnboardingPlan.from_config(options.config, sim_start_s)


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


def _read_dataset(path: Path) -> Dataset:
    match = _JSON_BLOCK.search(path.read_text(encoding="utf-8"))
    if match is None:
        raise ConfigError(f"{path} has no JSON block; it was edited by hand or is not a fleetgen dataset descriptor")
    data = json.loads(match.group(1))
    return Dataset(int(data["seed"]), parse_instant(data["start"], "start"), data["created_at"], data["config"])


def _record_onboarding_change(layout: Layout, config: Config, segments: tuple[Segment, ...]) -> None:
    """Append a segment when the onboarding fields changed; it governs ticks after the last generated one."""
    last = segments[-1]
    wanted = Segment.from_config(config, last.effective_from)
    if (wanted.number_of_companies, wanted.companies_per_onboarding, wanted.onboarding_s) == (
        last.number_of_companies,
        last.companies_per_onboarding,
        last.onboarding_s,
    ):
        return
    state = read_json(layout.state)
    done = [parse_instant(state[k], k) for k in ("last_company_tick", "last_driver_interval_end") if state.get(k)]
    # Nothing generated yet: the change may govern from the very first tick.
    floor = max(epoch_seconds(d) for d in done) if done else last.effective_from - 1
    ticks_done = max(0, (floor - last.effective_from) // last.onboarding_s + 1)
    effective = last.effective_from + ticks_done * last.onboarding_s
    new = Segment.from_config(config, effective)
    write_json_atomic(segments_path(layout.root), {"segments": [s.to_dict() for s in (*segments, new)]})


def ensure_dataset(layout: Layout, config: Config, start: datetime | None = None) -> Dataset:
    """Create the dataset descriptor on the first run; afterwards read it back (and record onboarding changes).

    The returned Dataset's seed and start are the ones every job on this directory must use.
    An explicit seed that differs from the recorded one is refused rather than silently changed.
    """
    if layout.dataset_md.is_file():
        dataset = _read_dataset(layout.dataset_md)
        if config.seed is not None and config.seed != dataset.seed:
            raise ConfigError(
                f"seed {config.seed} differs from the seed {dataset.seed} recorded in {layout.dataset_md}; "
                "a data directory is one simulation: use its seed, or another --data-dir (or clean it first)"
            )
        segments = load_segments(layout.root)
        if segments:
            _record_onboarding_change(layout, config, segments)
        return dataset
    seed = config.seed if config.seed is not None else draw_seed()
    begin = align_down(start or from_epoch(time.time()), config.interval_seconds)
    dataset = Dataset(seed, begin, utc_now_iso(), config.with_seed(seed).to_yaml_dict())
    layout.manifests.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        segments_path(layout.root), {"segments": [Segment.from_config(config, epoch_seconds(begin)).to_dict()]}
    )
    tmp = layout.dataset_md.with_suffix(".md.tmp")
    tmp.write_text(_render(dataset), encoding="utf-8")
    tmp.replace(layout.dataset_md)
    return dataset
