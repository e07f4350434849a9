"""Driver shifts (``event_model: shift``, issue 15): legal duty cycles, deterministically.

The invariants are checked over a simulated week of a base-sized block without Spark; the
Spark tests check partitioning, split runs into Delta and the report's own shift check.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyspark.sql import DataFrame, SparkSession

from fleetgen_spark.core import company_rows, generate, shifts
from fleetgen_spark.core.clock import batch_id, from_epoch
from fleetgen_spark.core.config import EVENT_TYPES, load_config
from fleetgen_spark.core.exceptions import ConfigError, OptionError
from fleetgen_spark.core.generate import EVENT_SCHEMA, EventSpec, driver_counts, event_batches, selected_events
from fleetgen_spark.core.messy import answer_key, event_offsets_us
from fleetgen_spark.core.options import parse_options
from fleetgen_spark.core.schedule import BLOCK_SIZE
from fleetgen_spark.report.checks import build_checks
from fleetgen_spark.report.data import read_inputs, shift_summary
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.spark.source import FleetgenBatchReader, delivery_reach, event_spec, event_specs, read_events
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.dataset import onboarding_plan

START = datetime(2025, 11, 8, tzinfo=timezone.utc)  # a Saturday, 00:00 UTC
S = int(START.timestamp())
DAY, HOUR, QUARTER = 86_400, 3600, 900
WEEK = 7 * DAY
US = 1_000_000
START_DRIVING, STOPPED_DRIVING, DELIVERED = range(3)
# Consecutive event types a shift allows: a start is followed by a stop; a stop and a delivery
# by a delivery or the next start.
ALLOWED = {(START_DRIVING, STOPPED_DRIVING), (STOPPED_DRIVING, DELIVERED), (STOPPED_DRIVING, START_DRIVING),
           (DELIVERED, DELIVERED), (DELIVERED, START_DRIVING)}  # fmt: skip


def _spec(preset: str = "base", **overrides: Any) -> EventSpec:
    config = load_config(preset, event_model="shift", **overrides)
    assert config.seed is not None
    return event_spec(config, config.seed)


def _table(spec: EventSpec, starts: Any, block: int = 0, n_companies: int = BLOCK_SIZE, **kw: int) -> pa.Table:
    batches = [b for t in starts for b in event_batches(spec, t, block, n_companies, **kw)]
    return pa.Table.from_batches(batches, schema=EVENT_SCHEMA)


@dataclass(frozen=True)
class Shifts:
    """A driver's events split into shifts where a driver rests 10 hours or more (as the report does)."""

    driver: np.ndarray  # per event, sorted by driver then time
    time_s: np.ndarray
    kind: np.ndarray
    shift: np.ndarray  # per event: the shift's number
    first: np.ndarray  # per shift: its first and last event (indices into the event arrays)
    last: np.ndarray

    @property
    def on_duty_s(self) -> np.ndarray:
        return self.time_s[self.last] - self.time_s[self.first]

    def driving_s(self) -> np.ndarray:
        drive = np.zeros(self.time_s.size)
        drive[:-1] = np.where(self.kind[:-1] == START_DRIVING, np.diff(self.time_s), 0.0)
        drive[self.last] = 0.0
        return np.bincount(self.shift, weights=drive, minlength=self.first.size)

    def complete(self, window: tuple[float, float]) -> np.ndarray:
        """The shifts that cannot have been cut by the window's edges (a shift lasts at most 14 h)."""
        return (self.time_s[self.first] >= window[0] + 14 * HOUR) & (self.time_s[self.last] < window[1] - 14 * HOUR)


def _shifts(table: pa.Table) -> Shifts:
    drivers = pc.dictionary_encode(table.column("driver_id")).combine_chunks().indices.to_numpy()
    time_s = table.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy() / US
    names = table.column("event_type").to_pylist()
    kind = np.array([EVENT_TYPES.index(n) for n in names], dtype=np.int64)
    order = np.lexsort((time_s, drivers))
    drivers, time_s, kind = drivers[order], time_s[order], kind[order]
    new = np.ones(drivers.size, dtype=bool)
    new[1:] = (drivers[1:] != drivers[:-1]) | ((np.diff(time_s) >= 10 * HOUR) & (kind[:-1] != START_DRIVING))
    shift = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, drivers.size - 1)
    return Shifts(drivers, time_s, kind, shift, first, last)


@pytest.fixture(scope="module")
def week() -> pa.Table:
    """A week of a base-sized block (100 companies, 10 drivers each, 3.5 events per interval on duty)."""
    return _table(_spec(), range(S, S + WEEK, QUARTER))


@pytest.fixture(scope="module")
def week_shifts(week: pa.Table) -> Shifts:
    return _shifts(week)


# --- configuration ---------------------------------------------------------------------------------


def test_event_model_is_a_config_field_and_a_source_option() -> None:
    assert load_config("base").event_model == "independent"
    assert load_config("small", event_model="shift").event_model == "shift"
    assert parse_options({"config": "small", "event_model": "shift"}).config.event_model == "shift"
    assert event_spec(load_config("small", event_model="shift"), 1).event_model == "shift"
    assert load_config("small", event_model="shift").to_yaml_dict()["event_model"] == "shift"


def test_a_bad_event_model_is_refused_in_one_line_naming_field_value_and_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("small", event_model="shifts")
    message = str(caught.value)
    assert "\n" not in message and "event_model" in message and "'shifts'" in message
    assert "'independent' or 'shift'" in message
    with pytest.raises(OptionError, match="event_model"):
        parse_options({"config": "small", "event_model": "poisson"})


# --- the invariants over a week ------------------------------------------------------------------------


def test_every_drivers_sequence_is_a_legal_duty_cycle(week_shifts: Shifts) -> None:
    s = week_shifts
    same_shift = s.shift[1:] == s.shift[:-1]
    assert np.all(np.diff(s.time_s)[same_shift] > 0), "a driver's timestamps strictly increase"
    pairs = Counter(zip(s.kind[:-1][same_shift].tolist(), s.kind[1:][same_shift].tolist(), strict=True))
    assert set(pairs) == ALLOWED, pairs
    # A whole shift begins with `start driving` and ends with `stopped driving`; only a shift cut by
    # the week's edges may begin or end otherwise.
    complete = s.complete((S, S + WEEK))
    assert complete.sum() > 3000
    assert np.all(s.kind[s.first[complete]] == START_DRIVING)
    assert np.all(s.kind[s.last[complete]] == STOPPED_DRIVING)
    inside = (s.time_s[s.first] > S + 14 * HOUR) & (s.time_s[s.last] < S + WEEK - 14 * HOUR)
    assert np.all(s.kind[s.first[inside]] == START_DRIVING)


def test_hours_of_service(week_shifts: Shifts) -> None:
    s = week_shifts
    assert s.on_duty_s.max() <= 14 * HOUR
    assert s.driving_s().max() <= 11 * HOUR
    # Every shift is at least 7 hours on duty, so a rest shorter than 10 hours would merge two shifts
    # into one of more than 14 hours, which the first assertion refuses; here the rests themselves.
    same_driver = s.driver[s.first[1:]] == s.driver[s.last[:-1]]
    rests = (s.time_s[s.first[1:]] - s.time_s[s.last[:-1]])[same_driver]
    assert rests.size > 3000 and rests.min() >= 10 * HOUR
    complete = s.complete((S, S + WEEK))
    hours = s.on_duty_s[complete] / HOUR
    assert hours.min() >= 7 and hours.max() <= 13 and 9.5 < hours.mean() < 10.5
    assert (s.driving_s()[complete] / s.on_duty_s[complete]).min() > 0.55


def test_events_per_on_duty_interval_are_the_rate_within_ten_percent(week_shifts: Shifts) -> None:
    s, rate = week_shifts, 3.5
    complete = s.complete((S, S + WEEK))
    events = (s.last - s.first + 1)[complete]
    per_interval = events.sum() / (s.on_duty_s[complete].sum() / QUARTER)
    assert abs(per_interval - rate) <= 0.1 * rate, per_interval
    # The same over whole intervals inside a shift, counted one (driver, interval) at a time.
    k = np.floor(s.time_s / QUARTER).astype(np.int64)
    lo = np.ceil(s.time_s[s.first] / QUARTER).astype(np.int64)
    hi = np.floor(s.time_s[s.last] / QUARTER).astype(np.int64)
    inside = complete[s.shift] & (k >= lo[s.shift]) & (k < hi[s.shift])
    whole_intervals = np.maximum(hi - lo, 0)[complete].sum()
    assert abs(inside.sum() / whole_intervals - rate) <= 0.1 * rate


def test_more_drivers_on_duty_by_day_than_at_night(week_shifts: Shifts) -> None:
    s = week_shifts
    begin, end = s.time_s[s.first], s.time_s[s.last]

    def on_duty(hour: int) -> int:
        return sum(int(np.count_nonzero((begin <= t) & (end > t))) for t in range(S + DAY + hour * HOUR, S + WEEK, DAY))

    assert on_duty(14) > 2 * on_duty(3) > 0


def test_drivers_take_days_off(week_shifts: Shifts) -> None:
    s = week_shifts
    starts = s.kind[s.first] == START_DRIVING
    per_driver = np.bincount(s.driver[s.first[starts]], minlength=BLOCK_SIZE * 10)
    # Two days off a week: at most six shift starts in the seven days (one may begin the day before).
    assert per_driver.max() <= 6
    assert 4.2 < per_driver.mean() < 5.3


def test_delivered_happens_only_while_stopped_at_its_weights_share(week: pa.Table, week_shifts: Shifts) -> None:
    s = week_shifts
    before = s.kind[:-1][(s.kind[1:] == DELIVERED) & (s.shift[1:] == s.shift[:-1])]
    assert set(before.tolist()) <= {STOPPED_DRIVING, DELIVERED}
    shares = Counter(week.column("event_type").to_pylist())
    total = sum(shares.values())
    assert abs(shares["delivered"] / total - 0.25) < 0.01
    assert abs(shares["start driving"] - shares["stopped driving"]) <= 2000  # shifts cut by the week's edges


def test_the_delivered_weight_sets_the_share_of_deliveries() -> None:
    weights = '{"start driving": 0.3, "stopped driving": 0.3, "delivered": 0.4}'
    table = _table(_spec(event_type_weights=weights), range(S + 8 * HOUR, S + 16 * HOUR, QUARTER))
    shares = Counter(table.column("event_type").to_pylist())
    assert abs(shares["delivered"] / table.num_rows - 0.4) < 0.02
    none = _table(_spec(event_type_weights='{"start driving": 0.5, "stopped driving": 0.5}'), [S + 12 * HOUR])
    assert set(none.column("event_type").to_pylist()) == {"start driving", "stopped driving"}


# --- a pure function of (config, seed, day, block) -----------------------------------------------------


@pytest.fixture
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nothing remembered from an earlier generation: each interval's day is drawn again."""
    monkeypatch.setattr(shifts, "_TIMELINES", shifts._timelines(0))
    yield


@pytest.mark.usefixtures("fresh_memo")
def test_an_interval_generated_alone_is_that_interval_of_the_whole_day(week: pa.Table) -> None:
    spec = _spec()
    day = range(S + 2 * DAY, S + 3 * DAY, QUARTER)
    batch_ids = week.column("batch_id")
    for t in (S + 2 * DAY + 57 * QUARTER, S + 2 * DAY, S + 3 * DAY - QUARTER, S + 2 * DAY + 24 * QUARTER):
        alone = _table(spec, [t])
        cut = week.filter(pc.equal(batch_ids, batch_id(from_epoch(t))))
        assert alone.num_rows > 0 and alone.equals(cut)
    backwards = pa.concat_tables(_table(spec, [t]) for t in reversed(day))
    ids = pa.array([batch_id(from_epoch(t)) for t in day])
    forwards = week.filter(pc.is_in(batch_ids, ids))
    assert sorted(backwards.to_pylist(), key=repr) == sorted(forwards.to_pylist(), key=repr)


def test_slices_never_change_the_rows_nor_split_a_driver() -> None:
    spec = _spec()
    t = S + DAY + 40 * QUARTER
    whole = _table(spec, [t], max_rows=10**6)
    sliced = list(event_batches(spec, t, 0, BLOCK_SIZE, max_rows=50))
    assert len(sliced) > 10 and pa.Table.from_batches(sliced).equals(whole)
    seen: set[str] = set()
    for batch in sliced:
        drivers = set(batch.column("driver_id").to_pylist())
        assert not drivers & seen
        seen |= drivers


def test_a_block_that_grows_keeps_its_first_drivers_rows() -> None:
    spec = _spec()
    starts = range(S + DAY + 30 * QUARTER, S + DAY + 36 * QUARTER, QUARTER)
    small, full = _table(spec, starts, n_companies=40), _table(spec, starts)
    first = set(small.column("company_id").to_pylist())
    assert small.num_rows > 0
    assert small.equals(full.filter(pc.is_in(full.column("company_id"), pa.array(sorted(first)))))


def test_other_seeds_blocks_and_models_give_other_rows() -> None:
    t = S + DAY + 40 * QUARTER
    rows = _table(_spec(), [t])
    assert not rows.equals(_table(_spec(seed=43), [t]))
    assert not rows.column("event_id").equals(_table(_spec(), [t], block=1).column("event_id"))
    plain = _table(event_spec(load_config("base"), 42), [t])
    assert set(rows.column("event_id").to_pylist()).isdisjoint(plain.column("event_id").to_pylist())


def test_counts_offsets_and_selected_rows_agree_with_the_batches() -> None:
    spec = _spec()
    t = S + DAY + 45 * QUARTER
    whole = _table(spec, [t])
    counts = driver_counts(spec, t, 0, BLOCK_SIZE)
    per_driver = Counter(whole.column("driver_id").to_pylist())
    assert counts.sum() == whole.num_rows and sorted(c for c in counts if c) == sorted(per_driver.values())
    stamps = whole.column("timestamp").cast(pa.int64()).to_numpy()
    assert np.array_equal(event_offsets_us(spec, t, 0, BLOCK_SIZE), stamps - t * US)
    rows = np.array([0, 5, 17, whole.num_rows - 1])
    picked = pa.Table.from_batches([selected_events(spec, t, 0, BLOCK_SIZE, rows)])
    assert picked.equals(whole.take(pa.array(rows)))


def test_drivers_of_inactive_companies_are_silent_and_the_others_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec()
    t = S + DAY + 45 * QUARTER
    whole = _table(spec, [t])
    mask = np.zeros(BLOCK_SIZE * spec.drivers_per_company, dtype=bool)
    mask[30:70] = True  # companies 3..6

    def inactive(spec_: EventSpec, start: int, block: int, n_companies: int) -> np.ndarray:
        return mask[: n_companies * spec_.drivers_per_company]

    monkeypatch.setattr(generate, "inactive_drivers", inactive)
    silenced = _table(spec, [t])
    counts = driver_counts(spec, t, 0, BLOCK_SIZE)
    assert counts[30:70].sum() == 0 and counts.sum() == silenced.num_rows
    gone = set(company_rows.company_ids(spec.seed, 3, 4).to_pylist())
    kept = whole.filter(pc.invert(pc.is_in(whole.column("company_id"), pa.array(sorted(gone)))))
    assert kept.num_rows < whole.num_rows and silenced.equals(kept)
    stamps = silenced.column("timestamp").cast(pa.int64()).to_numpy()
    assert np.array_equal(event_offsets_us(spec, t, 0, BLOCK_SIZE), stamps - t * US)


# --- messy delivery of shifts -------------------------------------------------------------------------

MESSY_START = START + timedelta(hours=6)


def _read(config: str, parts: int = 3, hours: int = 6, **options: str) -> pa.Table:
    """What a batch read delivers, through the source's own planner and reader (no Spark)."""
    given = {
        "config": config,
        "event_model": "shift",
        "start": MESSY_START.isoformat(),
        "end": (MESSY_START + timedelta(hours=hours)).isoformat(),
        "numPartitions": str(parts),
        **options,
    }
    reader = FleetgenBatchReader(parse_options(given))
    partitions = reader.planner.partitions(reader.seed, reader.start_s, reader.start_s, reader.end_s)
    return pa.Table.from_batches([b for p in partitions for b in read_events(p)], schema=EVENT_SCHEMA)


def _key(table: pa.Table, known: set[str]) -> dict[str, tuple[int, int, int]]:
    seen: set[str] = set()
    key: dict[str, list[int]] = {}
    for row in sorted(table.to_pylist(), key=lambda r: r["batch_id"]):
        counts = key.setdefault(row["batch_id"], [0, 0, 0])
        if row["event_id"] not in known:
            counts[2] += 1
            continue
        counts[0] += row["timestamp"] < row["interval_start"]
        counts[1] += row["event_id"] in seen
        seen.add(row["event_id"])
    return {b: (c[0], c[1], c[2]) for b, c in key.items() if any(c)}


def test_the_messy_knobs_work_on_shifts() -> None:
    messy, plain = _read("messy"), _read("small")
    fields = ("event_id", "driver_id", "company_id", "truck_id", "event_type", "timestamp")
    assert plain.num_rows > 300
    assert sorted(_read("messy", parts=7).to_pylist(), key=repr) == sorted(messy.to_pylist(), key=repr)
    events = {r["event_id"]: tuple(r[f] for f in fields) for r in plain.to_pylist()}
    valid = [r for r in messy.to_pylist() if r["event_id"] in events]
    assert all(tuple(r[f] for f in fields) == events[r["event_id"]] for r in valid)
    assert any(r["timestamp"] < r["interval_start"] for r in valid), "late events"
    cutoff = MESSY_START + timedelta(hours=6) - timedelta(minutes=30)
    assert {r["event_id"] for r in valid} >= {e for e, f in events.items() if f[5] < cutoff}
    assert len(valid) > len({r["event_id"] for r in valid}), "duplicates"
    # The answer key, computed from the draws alone, counts what was delivered.
    options = parse_options({"config": "messy", "event_model": "shift", "start": MESSY_START.isoformat()})
    first = int(MESSY_START.timestamp())
    starts = list(range(first, first + 6 * HOUR, QUARTER))
    eligible = onboarding_plan(options, first).onboarded_before
    keys = answer_key(event_specs(options, 100), eligible, delivery_reach(options, 100), starts)
    computed = {
        batch_id(from_epoch(s)): (a.late_events, a.duplicate_events, a.bad_records)
        for s, a in keys.items()
        if (a.late_events, a.duplicate_events, a.bad_records) != (0, 0, 0)
    }
    assert computed == _key(messy, set(events)) and sum(v[2] for v in computed.values()) > 0


# --- through Spark ------------------------------------------------------------------------------------


def _sorted_rows(df: DataFrame) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in df.collect())


def test_rows_do_not_depend_on_partitions(spark: SparkSession) -> None:
    def read(parts: int) -> list[tuple[Any, ...]]:
        options = {"config": "small", "event_model": "shift", "numPartitions": str(parts)}
        df = spark.read.format("fleetgen").options(
            **options, start=START.isoformat(), end=(START + timedelta(days=1)).isoformat()
        )
        return _sorted_rows(df.load())

    one = read(1)
    assert len(one) > 500 and read(7) == one


def _backfill(spark: SparkSession, data_dir: Path, end: datetime) -> Pipeline:
    config = load_config("small", event_model="shift")
    pipeline = Pipeline(
        spark, DataDir(data_dir), config, speedup="max", start=START, end=end, max_intervals_per_trigger=96
    )
    pipeline.run_available_now()
    return pipeline


@pytest.mark.slow  # three backfills into Delta and the report: about 80 s on 2 cores
def test_one_run_equals_two_consecutive_runs_and_the_report_finds_no_violation(
    spark: SparkSession, tmp_path: Path
) -> None:
    one = _backfill(spark, tmp_path / "one", START + timedelta(days=2))
    _backfill(spark, tmp_path / "two", START + timedelta(days=1))
    two = _backfill(spark, tmp_path / "two", START + timedelta(days=2))

    def events(p: Pipeline) -> DataFrame:
        return spark.read.format("delta").load(str(p.layout.table("driver_events")))

    rows = _sorted_rows(events(one))
    assert len(rows) > 1000 and _sorted_rows(events(two)) == rows
    summary = shift_summary(events(one))
    assert len(summary) > 20
    assert summary["violations"].sum() == 0
    assert summary["on_duty_s"].max() <= 14 * HOUR and summary["driving_s"].max() <= 11 * HOUR
    # The report reads the model from the data directory and judges the shifts and the type shares by it.
    checks = {c.panel: c for c in build_checks(read_inputs(spark, one.layout, progress=lambda _: None))}
    assert checks["shift lengths"].result == "PASS", checks["shift lengths"]
    assert checks["event-type shares"].result == "PASS", checks["event-type shares"]
    assert "start driving 0.375" in checks["event-type shares"].expected


def test_readme_exercise_driving_sessions_runs_as_pasted(
    spark: SparkSession, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Driver shifts") : readme.index("\n## ", readme.index("## Driver shifts") + 1)]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    namespace: dict[str, Any] = {"spark": spark}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["sessions"] == namespace["starts"] > 100
    assert capsys.readouterr().out.split() == [str(namespace["starts"])] * 2
    # Each of those sessions is one drive: its start and its stop (or a start still under way at end).
    drives = namespace["drives"].where("first = 'start driving'").groupBy("events").count().collect()
    sizes = {r["events"]: r["count"] for r in drives}
    assert set(sizes) <= {1, 2} and sizes.get(1, 0) <= 25  # at most one drive per driver under way at end


def test_a_block_cut_into_chunks_of_drivers_keeps_every_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large block's day is drawn in chunks of drivers (bounded memory); here chunks of 36 drivers."""
    monkeypatch.setattr(shifts, "_CHUNK_EVENTS", 3700)
    monkeypatch.setattr(shifts, "_TIMELINES", shifts._timelines(64 << 20))
    spec = _spec()
    assert generate._shift_model(spec).chunk_drivers == 36
    window = (S + DAY, S + 3 * DAY)
    table = _table(spec, range(*window, QUARTER))
    s = _shifts(table)
    same_shift = s.shift[1:] == s.shift[:-1]
    assert set(zip(s.kind[:-1][same_shift].tolist(), s.kind[1:][same_shift].tolist(), strict=True)) == ALLOWED
    assert s.on_duty_s.max() <= 14 * HOUR and s.driving_s().max() <= 11 * HOUR
    assert len(set(table.column("driver_id").to_pylist())) > 800  # two days: some drivers are off both
    t = S + 2 * DAY + 33 * QUARTER
    monkeypatch.setattr(shifts, "_TIMELINES", shifts._timelines(0))
    cut = table.filter(pc.equal(table.column("batch_id"), batch_id(from_epoch(t))))
    assert _table(spec, [t]).equals(cut) and cut.num_rows > 0


def test_at_a_low_rate_a_shift_is_one_drive() -> None:
    """A shift holds at least one drive: below two events a shift the rate cannot be met (README)."""
    table = _table(_spec(event_rate_per_driver=0.05), range(S + DAY, S + 3 * DAY, QUARTER))
    s = _shifts(table)
    complete = s.complete((S + DAY, S + 3 * DAY))
    assert complete.sum() > 100
    sizes = Counter((s.last - s.first + 1)[complete].tolist())
    assert sizes.most_common(1)[0][0] == 2 and min(sizes) == 2
    assert s.driving_s().max() <= 11 * HOUR and s.on_duty_s.max() <= 14 * HOUR
