"""Messy streams: late, duplicate and bad records, seeded, exact about what they inject (issue 14)."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from helpers import Datasets, small_backfill, table
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fleetgen_spark.core.config import EVENT_TYPES, config_dirs, load_config
from fleetgen_spark.core.exceptions import ConfigError, OptionError
from fleetgen_spark.core.generate import event_batches, selected_events
from fleetgen_spark.core.messy import BAD_REASONS, answer_key, bad_rows, deliveries, event_offsets_us
from fleetgen_spark.core.options import parse_options
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.spark.source import FleetgenBatchReader, delivery_reach, event_spec, event_specs, read_events
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.dataset import EVENT_SHAPE_FIELDS, event_shapes, onboarding_plan, record_event_shape

START = datetime(2025, 11, 8, tzinfo=timezone.utc)
S = int(START.timestamp())
KNOBS = ("late_fraction", "max_lateness", "duplicate_fraction", "bad_record_fraction")
EVENT_FIELDS = ("event_id", "driver_id", "company_id", "truck_id", "event_type", "timestamp")
DELIVERY = ("batch_id", "interval_start", "interval_end")


def _read(hours: float, parts: int = 3, from_h: float = 0, **options: str) -> pa.Table:
    """The rows a read of the intervals [from_h, hours) delivers, generated without Spark (the source's
    own planner and reader: a simulation that starts at START, as a stream's offsets say)."""
    given = {
        "config": "messy",
        "start": START.isoformat(),
        "end": (START + timedelta(hours=hours)).isoformat(),
        "numPartitions": str(parts),
        **options,
    }
    reader = FleetgenBatchReader(parse_options(given))
    parts_ = reader.planner.partitions(reader.seed, S, S + int(from_h * 3600), reader.end_s)
    return pa.Table.from_batches([b for p in parts_ for b in read_events(p)])


def _rows(table: pa.Table, columns: tuple[str, ...] = EVENT_FIELDS + DELIVERY) -> list[tuple[Any, ...]]:
    return sorted(zip(*(table.column(c).to_pylist() for c in columns), strict=True), key=repr)


# --- configuration ---------------------------------------------------------------------------------


def test_every_preset_but_messy_has_the_knobs_off_and_messy_turns_them_on() -> None:
    names = sorted({p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    assert {"base", "small", "scaling", "messy"} <= set(names)
    for name in ("base", "small", "scaling"):
        config = load_config(name)
        assert (config.late_fraction, config.duplicate_fraction, config.bad_record_fraction) == (0, 0, 0)
        assert not config.messy
    messy = load_config("messy")
    assert messy.messy and messy.late_fraction == 0.1 and messy.max_lateness_seconds == 1800
    assert messy.duplicate_fraction == 0.04 and messy.bad_record_fraction == 0.01
    assert set(KNOBS) <= set(EVENT_SHAPE_FIELDS)


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("late_fraction", "1.5", "less than or equal to 1"),
        ("duplicate_fraction", "-0.1", "greater than or equal to 0"),
        ("bad_record_fraction", "lots", "valid number"),
        ("max_lateness", "P2D", "PT0S to P1D"),
        ("max_lateness", "PT0.5S", "whole seconds"),
        ("max_lateness", "soon", "ISO-8601 duration"),
    ],
)
def test_a_bad_knob_is_refused_in_one_line_naming_it(field: str, value: str, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("small", **{field: value})
    message = str(caught.value)
    assert "\n" not in message and field in message and value in message and rule in message
    with pytest.raises(OptionError, match=field):
        parse_options({"config": "small", field: value})


def test_the_knobs_are_source_options() -> None:
    options = parse_options({"config": "small", "late_fraction": "0.2", "max_lateness": "PT1H"})
    assert options.config.late_fraction == 0.2 and options.config.max_lateness_seconds == 3600
    assert load_config("messy", max_lateness="PT0S").to_yaml_dict()["max_lateness"] in ("PT0S", "P0D")


def test_recorded_event_shapes_keep_the_weights_in_event_type_order(tmp_path: Path) -> None:
    """The shapes file keeps its keys sorted; read back, the weights must follow EVENT_TYPES again,
    or a pipeline's event types differ from the source's (found by the dropDuplicates exercise)."""
    layout = DataDir(tmp_path)
    record_event_shape(layout, load_config("messy"), None, S)
    options = parse_options({"config": "messy", "dataDir": str(tmp_path)})
    (_, config), *_ = event_shapes(options)
    assert list(config.event_type_weights) == list(EVENT_TYPES) and config.max_lateness_seconds == 1800
    assert event_specs(options, 100)(S) == event_spec(load_config("messy"), 100)


# --- generation --------------------------------------------------------------------------------------


def test_answer_key_offsets_are_the_generated_timestamps() -> None:
    config = load_config("base")
    spec = event_spec(config, 42)
    for block, n in ((0, 100), (3, 57)):
        table = pa.Table.from_batches(list(event_batches(spec, S, block, n, max_rows=1000)))
        stamps = table.column("timestamp").cast(pa.int64()).to_numpy()
        assert np.array_equal(event_offsets_us(spec, S, block, n), stamps - S * 1_000_000)


def test_selected_events_are_those_rows_of_the_block() -> None:
    spec = event_spec(load_config("base"), 42)
    whole = pa.Table.from_batches(list(event_batches(spec, S, 2, 100, max_rows=500)))
    rows = np.array([0, 1, 17, 400, whole.num_rows - 1])
    picked = pa.Table.from_batches([selected_events(spec, S, 2, 100, rows)])
    assert picked.equals(whole.take(pa.array(rows)))


def test_knobs_off_the_stream_is_the_plain_one() -> None:
    plain = _read(3, config="small")
    off = _read(3, config="small", late_fraction="0", duplicate_fraction="0", bad_record_fraction="0")
    assert plain.equals(off) and plain.num_rows > 0


@pytest.fixture(scope="module")
def messy_rows() -> pa.Table:
    return _read(8)


@pytest.fixture(scope="module")
def plain_rows() -> pa.Table:
    return _read(8, config="small")


def test_same_rows_for_1_and_7_partitions_and_split_or_single_runs(messy_rows: pa.Table) -> None:
    assert _rows(_read(8, parts=1)) == _rows(messy_rows)
    assert _rows(_read(8, parts=7)) == _rows(messy_rows)
    split = pa.concat_tables([_read(3), _read(8, from_h=3)])
    assert _rows(split) == _rows(messy_rows)


def _valid(table: pa.Table, plain: pa.Table) -> pa.Table:
    """The rows that are some knob-off event (late or duplicate deliveries included)."""
    known = pa.array(set(plain.column("event_id").to_pylist()))
    return table.filter(pa.compute.is_in(table.column("event_id"), value_set=known))


def test_every_delivered_event_is_a_knob_off_event_within_the_lateness_bound(
    messy_rows: pa.Table, plain_rows: pa.Table
) -> None:
    valid = _valid(messy_rows, plain_rows)
    plain = {r[0]: r for r in _rows(plain_rows, EVENT_FIELDS)}
    for row in _rows(valid, (*EVENT_FIELDS, "interval_start", "interval_end")):
        assert row[: len(EVENT_FIELDS)] == plain[row[0]]
        stamp, start, end = row[5], row[6], row[7]
        assert start - timedelta(minutes=30) <= stamp < end
    late = [r for r in _rows(valid, ("timestamp", "interval_start")) if r[0] < r[1]]
    assert late, "the messy preset delivers late events"
    # Every knob-off event whose lateness bound ends before `end` was delivered (at least once).
    cutoff = START + timedelta(hours=8) - timedelta(minutes=30)
    due = {r[0] for r in _rows(plain_rows, EVENT_FIELDS) if r[5] < cutoff}
    assert due <= set(valid.column("event_id").to_pylist())


def test_dropping_duplicates_gives_the_knob_off_events(messy_rows: pa.Table, plain_rows: pa.Table) -> None:
    valid = _valid(messy_rows, plain_rows)
    counts = Counter(valid.column("event_id").to_pylist())
    assert max(counts.values()) == 2 and sum(c - 1 for c in counts.values()) > 0
    cutoff = START + timedelta(hours=8) - timedelta(minutes=30)
    deduped = {r for r in _rows(valid, EVENT_FIELDS) if r[5] < cutoff}
    assert deduped == {r for r in _rows(plain_rows, EVENT_FIELDS) if r[5] < cutoff}


def test_bad_records_have_ids_of_their_own_and_one_defect_each(messy_rows: pa.Table, plain_rows: pa.Table) -> None:
    known = set(plain_rows.column("event_id").to_pylist())
    bad = [r for r in messy_rows.to_pylist() if r["event_id"] not in known]
    assert bad
    kinds = Counter(_defect(r) for r in bad)
    assert set(kinds) <= set(BAD_REASONS) and None not in kinds


def _defect(row: dict[str, Any]) -> str | None:
    defects = [
        row["truck_id"] is None and "missing_truck_id",
        row["event_type"] not in EVENT_TYPES and "unknown_event_type",
        not (row["interval_start"] - timedelta(minutes=30) <= row["timestamp"] < row["interval_end"])
        and "timestamp_outside_interval",
    ]
    found = [d for d in defects if d]
    if len(found) > 1:
        return None
    return found[0] if found else "company_not_eligible"


def _observed_key(table: pa.Table, plain: pa.Table) -> dict[str, tuple[int, int, int]]:
    """(late, duplicate, bad) per batch_id, counted from the delivered rows themselves."""
    known = set(plain.column("event_id").to_pylist())
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
    return {b: (c[0], c[1], c[2]) for b, c in key.items()}


def test_the_answer_key_counts_what_was_delivered(messy_rows: pa.Table, plain_rows: pa.Table) -> None:
    options = parse_options({"config": "messy", "start": START.isoformat()})
    plan = onboarding_plan(options, S)
    starts = list(range(S, S + 8 * 3600, 900))
    keys = answer_key(event_specs(options, 100), plan.onboarded_before, delivery_reach(options, 100), starts)
    expected = {k: v for k, v in _observed_key(messy_rows, plain_rows).items() if any(v)}
    computed = {
        f"{(START + timedelta(seconds=s - S)):%Y%m%dT%H%M%SZ}": (a.late_events, a.duplicate_events, a.bad_records)
        for s, a in keys.items()
        if (a.late_events, a.duplicate_events, a.bad_records) != (0, 0, 0)
    }
    assert computed == expected and sum(v[0] for v in expected.values()) > 0


def test_shares_are_what_was_asked_within_five_standard_deviations() -> None:
    config = load_config("base", late_fraction=0.2, duplicate_fraction=0.05, bad_record_fraction=0.02)
    spec = event_spec(config, 42)
    late = dup = bad = n = 0
    lateness: list[np.ndarray] = []
    for t in range(S, S + 4 * 900, 900):
        for block in range(3):
            offsets = event_offsets_us(spec, t, block, 100)
            plan = deliveries(spec, t, block, offsets)
            n += offsets.size
            late += int(np.count_nonzero(plan.first > 0))
            dup += int(np.count_nonzero(plan.again >= 0))
            bad += int(bad_rows(spec, t, block, offsets.size)[0].size)
            # How long before its delivery interval began a late event happened.
            lateness.append(plan.first[plan.first > 0] * 900 * 10**6 - offsets[plan.first > 0])
    for got, share in ((late, 0.2), (dup, 0.05), (bad, 0.02)):
        assert abs(got - share * n) <= 5 * math.sqrt(n * share * (1 - share)), (got, share, n)
    spread = np.concatenate(lateness) / 1e6
    assert spread.min() > 0 and spread.max() <= 1800
    # Spread over (0, max_lateness]: every sixth of it holds late events.
    assert np.all(np.histogram(spread, bins=6, range=(0, 1800))[0] > 0)


# --- the pipeline and the exercises (Spark) ----------------------------------------------------------


def _backfill(spark: SparkSession, data_dir: Path, hours: int, preset: str, per_trigger: int = 3) -> Pipeline:
    pipeline = Pipeline(
        spark,
        DataDir(data_dir),
        load_config(preset),
        speedup="max",
        start=START,
        end=START + timedelta(hours=hours),
        max_intervals_per_trigger=per_trigger,
    )
    pipeline.run_available_now()
    return pipeline


@pytest.fixture(scope="module")
def messy_dir(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return _backfill(spark, tmp_path_factory.mktemp("messy"), 6, "messy")


@pytest.mark.slow
def test_quarantine_bad_records_with_their_reasons_equal_the_answer_key(
    spark: SparkSession, messy_dir: Pipeline
) -> None:
    discarded = table(spark, messy_dir.layout, "discarded_events")
    batches = table(spark, messy_dir.layout, "batches")
    events = table(spark, messy_dir.layout, "driver_events")
    per_batch = {r["batch_id"]: r["count"] for r in discarded.groupBy("batch_id").count().collect()}
    key = {r["batch_id"]: r["bad_records"] for r in batches.collect() if r["bad_records"]}
    assert per_batch == key and sum(key.values()) > 0
    reasons = {r["reason"] for r in discarded.select("reason").distinct().collect()}
    assert reasons <= set(BAD_REASONS) and len(reasons) >= 3
    bad_ids = discarded.select(F.get_json_object("record", "$.event_id").alias("event_id"))
    assert events.join(bad_ids, "event_id").count() == 0


@pytest.mark.slow
def test_batches_late_and_duplicate_columns_equal_driver_events(spark: SparkSession, messy_dir: Pipeline) -> None:
    events = table(spark, messy_dir.layout, "driver_events")
    rows = events.select("event_id", "timestamp", "interval_start", "batch_id").collect()
    seen: set[str] = set()
    observed: dict[str, list[int]] = {}
    for row in sorted(rows, key=lambda r: r["batch_id"]):
        counts = observed.setdefault(row["batch_id"], [0, 0])
        counts[0] += row["timestamp"] < row["interval_start"]
        counts[1] += row["event_id"] in seen
        seen.add(row["event_id"])
    batches = table(spark, messy_dir.layout, "batches").collect()
    key = {b["batch_id"]: [b["late_events"], b["duplicate_events"]] for b in batches if b["event_count"]}
    assert key == observed and sum(v[0] for v in key.values()) > 0 and sum(v[1] for v in key.values()) > 0
    assert sum(b["event_count"] for b in batches) == len(rows)


@pytest.mark.slow
def test_drop_duplicates_gives_the_knob_off_run(spark: SparkSession, datasets: Datasets, messy_dir: Pipeline) -> None:
    # The small preset's six hours as it ships: the session's one (test_storage compares with it too).
    plain = datasets.get(*small_backfill(spark, START, START + timedelta(hours=6), per_trigger=24))
    cutoff = F.lit(START + timedelta(hours=6) - timedelta(minutes=30))
    messy = table(spark, messy_dir.layout, "driver_events").dropDuplicates(["event_id"]).select(*EVENT_FIELDS)
    clean = table(spark, plain, "driver_events").select(*EVENT_FIELDS)
    assert messy.filter(F.col("timestamp") < cutoff).exceptAll(clean).count() == 0
    assert clean.filter(F.col("timestamp") < cutoff).exceptAll(messy).count() == 0
    assert messy.exceptAll(clean).count() == 0  # what a bounded run did not deliver is only missing


# What the README's exercise keeps: rows without a defect a single record shows (the company check
# needs the companies table; those records carry an in-interval timestamp, harmless to a watermark).
VALID = (
    "truck_id IS NOT NULL AND event_type IN ('start driving', 'stopped driving', 'delivered') "
    "AND timestamp < interval_end AND timestamp >= interval_start - INTERVAL 30 MINUTES"
)


def _window_start(stamp: datetime) -> datetime:
    return stamp.replace(second=0, microsecond=0) - timedelta(minutes=stamp.minute % 5)


def _predicted_window_counts(rows: list[Any], delay: timedelta) -> dict[datetime, int]:
    """The 5-minute window counts a watermarked aggregation keeps, one micro-batch per interval.

    Spark drops a row of micro-batch k whose window ended at or before the watermark of micro-batch
    k - 1: the largest timestamp delivered before micro-batch k - 1, minus the delay.
    """
    by_interval: dict[datetime, list[datetime]] = {}
    for row in rows:
        by_interval.setdefault(row["interval_start"], []).append(row["timestamp"])
    starts = sorted(by_interval)
    kept: Counter[datetime] = Counter()
    for i, start in enumerate(starts):
        before = [t for s in starts[: max(0, i - 1)] for t in by_interval[s]]
        watermark = max(before) - delay if before else None
        for stamp in by_interval[start]:
            window = _window_start(stamp)
            if watermark is None or window + timedelta(minutes=5) > watermark:
                kept[window] += 1
    return dict(kept)


@pytest.mark.slow
@pytest.mark.parametrize("delay", ["0 seconds", "45 minutes"])
def test_exercise_windows_with_a_watermark_drop_what_the_answer_key_predicts(
    spark: SparkSession, tmp_path: Path, delay: str
) -> None:
    options = {"config": "messy", "start": START.isoformat(), "end": (START + timedelta(hours=4)).isoformat()}
    events = spark.readStream.format("fleetgen").options(speedup="max", maxIntervalsPerTrigger="1", **options)
    counts = (
        events.load()
        .filter(VALID)
        .withWatermark("timestamp", delay)
        .groupBy(F.window("timestamp", "5 minutes"))
        .count()
    )
    name = f"messy_windows_{delay.split()[0]}"
    query = counts.writeStream.outputMode("update").format("memory").queryName(name).trigger(availableNow=True)
    query.option("checkpointLocation", str(tmp_path / "cp")).start().awaitTermination()
    got = {
        r["w"]["start"]: r["n"]
        for r in spark.sql(f"SELECT window AS w, max(count) AS n FROM {name} GROUP BY window").collect()
    }
    delivered = spark.read.format("fleetgen").options(**options).load().filter(VALID).collect()
    minutes = int(delay.split()[0]) if "minutes" in delay else 0
    predicted = _predicted_window_counts(delivered, timedelta(minutes=minutes))
    assert got == predicted
    dropped = len(delivered) - sum(got.values())
    late = sum(1 for r in delivered if r["timestamp"] < r["interval_start"])
    if minutes >= 30 + 15:  # max_lateness plus an interval: nothing is ever too late
        assert dropped == 0
    else:
        assert 0 < dropped <= late  # only late rows are dropped, never on-time ones


@pytest.mark.slow
def test_exercise_drop_duplicates_within_watermark_gives_the_knob_off_events(
    spark: SparkSession, messy_dir: Pipeline, tmp_path: Path
) -> None:
    feed = spark.readStream.format("delta").load(str(messy_dir.layout.table("driver_events")))
    deduped = feed.withWatermark("timestamp", "45 minutes").dropDuplicatesWithinWatermark(["event_id"])
    out = str(tmp_path / "deduped")
    query = deduped.writeStream.format("delta").option("checkpointLocation", str(tmp_path / "cp"))
    query.trigger(availableNow=True).start(out).awaitTermination()
    plain = spark.read.format("fleetgen").options(
        config="small", start=START.isoformat(), end=(START + timedelta(hours=6)).isoformat()
    )
    cutoff = F.lit(START + timedelta(hours=6) - timedelta(minutes=30))
    clean = plain.load().select(*EVENT_FIELDS)
    result = spark.read.format("delta").load(out).select(*EVENT_FIELDS)
    assert result.count() == result.select("event_id").distinct().count()
    assert result.filter(F.col("timestamp") < cutoff).exceptAll(clean).count() == 0
    assert clean.filter(F.col("timestamp") < cutoff).exceptAll(result).count() == 0
    assert result.exceptAll(clean).count() == 0
    # The answer key: the rows it removed are the duplicate deliveries of batches.
    removed = table(spark, messy_dir.layout, "driver_events").count() - result.count()
    assert removed == table(spark, messy_dir.layout, "batches").agg(F.sum("duplicate_events")).collect()[0][0] > 0


@pytest.mark.slow
def test_a_batches_table_from_before_the_knobs_gains_the_answer_key_columns(
    spark: SparkSession, tmp_path: Path
) -> None:
    layout = DataDir(tmp_path)
    old = "batch_id STRING, interval_start TIMESTAMP, interval_end TIMESTAMP, event_count BIGINT, seed BIGINT, "
    old += "generation_time TIMESTAMP, eligible_companies BIGINT, total_companies BIGINT"
    spark.sql(f"CREATE TABLE delta.`{layout.table('batches')}` ({old}) USING delta")
    pipeline = _backfill(spark, tmp_path, 1, "messy", per_trigger=4)
    batches = table(spark, pipeline.layout, "batches")
    assert {"late_events", "duplicate_events", "bad_records"} <= set(batches.columns)
    rows = batches.collect()
    assert len(rows) == 4 and all(r["late_events"] is not None for r in rows)
    assert sum(r["late_events"] + r["duplicate_events"] + r["bad_records"] for r in rows) > 0
