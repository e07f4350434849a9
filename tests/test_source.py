"""The ``fleetgen`` and ``fleetgen_companies`` sources, read in batch and as streams through Spark."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.errors import AnalysisException, PythonException, StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from fleetgen_spark.core.clock import epoch_seconds
from fleetgen_spark.core.schedule import Segment
from fleetgen_spark.spark.companies import COMPANIES_SCHEMA_DDL
from fleetgen_spark.spark.source import EVENTS_SCHEMA_DDL

S = datetime(2025, 11, 8, 14, 0, tzinfo=timezone.utc)
QUARTER = timedelta(minutes=15)
ISO_INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SPARK_ERRORS = (StreamingQueryException, AnalysisException, PythonException)
STREAM_TIMEOUT_S = 180


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def naive(moment: datetime) -> datetime:
    """How Spark hands back a TIMESTAMP in a UTC session."""
    return moment.replace(tzinfo=None)


def options(start: datetime = S, end: datetime | None = S + 4 * QUARTER, **extra: str) -> dict[str, str]:
    opts = {"config": "small", "start": iso(start), "speedup": "max", **extra}
    if end is not None:
        opts["end"] = iso(end)
    return opts


# Gradual onboarding: 2 companies an hour up to 7, so eligibility changes inside a 6-hour range.
GRADUAL = {"companies_per_onboarding": "2", "number_of_companies": "7", "company_onboarding_interval": "PT1H"}


def read(spark: SparkSession, opts: dict[str, str], source: str = "fleetgen") -> DataFrame:
    return spark.read.format(source).options(**opts).load()


def run_available_now(
    spark: SparkSession, opts: dict[str, str], checkpoint: Path, out: Path, source: str = "fleetgen"
) -> StreamingQuery:
    """One Trigger.AvailableNow run into a parquet directory; returns the finished query."""
    query = (
        spark.readStream.format(source)
        .options(**opts)
        .load()
        .writeStream.format("parquet")
        .option("path", str(out))
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    assert query.awaitTermination(STREAM_TIMEOUT_S), "the AvailableNow run did not finish"
    assert query.exception() is None
    return query


def offsets_of(query: StreamingQuery) -> list[tuple[dict[str, Any] | None, dict[str, Any]]]:
    """(start, end) offsets of every micro-batch the query ran."""
    pairs = []
    for progress in query.recentProgress:
        source = progress.sources[0]
        start = json.loads(source.startOffset) if source.startOffset else None
        pairs.append((start, json.loads(source.endOffset)))
    return pairs


def checkpoint_offsets(checkpoint: Path) -> list[dict[str, Any]]:
    """The source offsets written to a checkpoint, in batch order: a person can read them."""
    files = sorted((checkpoint / "offsets").glob("[0-9]*"), key=lambda p: int(p.name))
    return [json.loads(f.read_text(encoding="utf-8").strip().splitlines()[-1]) for f in files]


@pytest.fixture(autouse=True)
def _no_leftover_queries(spark: SparkSession) -> Iterator[None]:
    yield
    for query in spark.streams.active:
        query.stop()


# --- the fleetgen source, batch ----------------------------------------------------------


def test_schema(spark: SparkSession) -> None:
    df = read(spark, options())
    assert df.schema == StructType.fromDDL(EVENTS_SCHEMA_DDL)
    assert df.columns == [
        "event_id",
        "driver_id",
        "company_id",
        "truck_id",
        "event_type",
        "timestamp",
        "batch_id",
        "interval_start",
        "interval_end",
    ]


def test_rows_do_not_depend_on_the_number_of_partitions(spark: SparkSession) -> None:
    # Seven blocks of companies in each of three non-empty intervals: 21 units of equal weight,
    # so seven partitions really cut the work differently from one.
    opts = options(number_of_companies="700", drivers_per_company="1", event_rate_per_driver="1.0")
    one = read(spark, {**opts, "numPartitions": "1"})
    seven = read(spark, {**opts, "numPartitions": "7"})
    assert one.rdd.getNumPartitions() == 1
    assert seven.rdd.getNumPartitions() == 7
    assert one.count() > 1000
    assert_df_equality(one, seven, ignore_row_order=True)


def test_first_interval_is_empty_because_companies_onboard_at_start(spark: SparkSession) -> None:
    assert read(spark, options(end=S + QUARTER)).count() == 0
    second = read(spark, options(end=S + 2 * QUARTER))
    assert second.count() > 0
    assert {r["batch_id"] for r in second.select("batch_id").distinct().collect()} == {"20251108T141500Z"}


def test_timestamps_lie_inside_their_interval_and_batch_id_names_it(spark: SparkSession) -> None:
    df = read(spark, options(end=S + 8 * QUARTER))
    assert df.count() > 0
    outside = df.filter((F.col("timestamp") < F.col("interval_start")) | (F.col("timestamp") >= F.col("interval_end")))
    assert outside.count() == 0
    wrong_length = df.filter(F.col("interval_end") != F.col("interval_start") + F.expr("INTERVAL 15 MINUTES"))
    assert wrong_length.count() == 0
    wrong_id = df.filter(F.col("batch_id") != F.date_format("interval_start", "yyyyMMdd'T'HHmmss'Z'"))
    assert wrong_id.count() == 0
    starts = {r[0] for r in df.select("interval_start").distinct().collect()}
    assert starts == {naive(S + k * QUARTER) for k in range(1, 8)}


def test_rows_follow_the_contract(spark: SparkSession) -> None:
    df = read(spark, options())
    rows = df.collect()
    assert len({r["event_id"] for r in rows}) == len(rows)
    assert all(uuid.UUID(r["event_id"]).version == 4 for r in rows)
    assert {r["event_type"] for r in rows} == {"start driving", "stopped driving", "delivered"}
    for r in rows:
        assert r["driver_id"].startswith(f"DRV-{r['company_id']}-")
        assert re.fullmatch(r"TRK-100-\d{4}", r["truck_id"])
    # small: five companies of five drivers.
    assert len({r["company_id"] for r in rows}) == 5
    assert len({r["driver_id"] for r in rows}) == 25


def test_config_fields_are_options(spark: SparkSession) -> None:
    base = read(spark, options()).count()
    busier = read(spark, options(event_rate_per_driver="20")).count()
    assert busier > 5 * base
    weights = json.dumps({"delivered": 1.0})
    types = read(spark, options(event_type_weights=weights)).select("event_type").distinct().collect()
    assert [r[0] for r in types] == ["delivered"]
    other_seed = read(spark, options(seed="101")).select("event_id")
    assert other_seed.intersect(read(spark, options()).select("event_id")).count() == 0


# --- the fleetgen source, streaming ------------------------------------------------------


@pytest.fixture(scope="module")
def whole_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[StreamingQuery, Path, Path]:
    """One AvailableNow run over [S, S+75m): five intervals; (query, checkpoint, output)."""
    root = tmp_path_factory.mktemp("whole_run")
    query = run_available_now(spark, options(end=S + 5 * QUARTER), root / "checkpoint", root / "out")
    return query, root / "checkpoint", root / "out"


def test_stream_runs_one_micro_batch_per_interval_by_default(whole_run: tuple[StreamingQuery, Path, Path]) -> None:
    query, _, _ = whole_run
    pairs = offsets_of(query)
    assert [end["next"] for _, end in pairs] == [iso(S + k * QUARTER) for k in range(1, 6)]
    assert pairs[0][0] is None
    for (_, previous), (start, _) in itertools.pairwise(pairs):
        assert start == previous
    # The first interval is empty (companies onboard at S), every later one has events.
    assert [p.numInputRows > 0 for p in query.recentProgress] == [False, True, True, True, True]


def test_stream_equals_batch_read(spark: SparkSession, whole_run: tuple[StreamingQuery, Path, Path]) -> None:
    _, _, out = whole_run
    streamed = spark.read.parquet(str(out))
    batch = read(spark, options(end=S + 5 * QUARTER))
    assert batch.count() > 0
    assert_df_equality(streamed, batch, ignore_row_order=True, ignore_nullable=True)


def test_checkpoint_offsets_are_readable_json(whole_run: tuple[StreamingQuery, Path, Path]) -> None:
    _, checkpoint, _ = whole_run
    offsets = checkpoint_offsets(checkpoint)
    assert len(offsets) == 5
    for offset in offsets:
        assert set(offset) == {"start", "next", "seed", "from"}
        assert ISO_INSTANT.match(offset["start"]) and ISO_INSTANT.match(offset["next"])
        assert offset["start"] == iso(S)
        assert offset["seed"] == 100
    assert offsets[-1]["next"] == iso(S + 5 * QUARTER)


def test_two_runs_through_one_checkpoint_equal_one_run(
    spark: SparkSession, tmp_path: Path, whole_run: tuple[StreamingQuery, Path, Path]
) -> None:
    checkpoint, out = tmp_path / "checkpoint", tmp_path / "out"
    first = run_available_now(spark, options(end=S + 2 * QUARTER), checkpoint, out)
    assert len(first.recentProgress) == 2
    assert checkpoint_offsets(checkpoint)[-1]["next"] == iso(S + 2 * QUARTER)

    second = run_available_now(spark, options(end=S + 5 * QUARTER), checkpoint, out)
    assert [end["next"] for _, end in offsets_of(second)] == [iso(S + k * QUARTER) for k in range(3, 6)]
    offsets = checkpoint_offsets(checkpoint)
    assert [o["next"] for o in offsets] == [iso(S + k * QUARTER) for k in range(1, 6)]

    _, _, whole_out = whole_run
    assert_df_equality(spark.read.parquet(str(out)), spark.read.parquet(str(whole_out)), ignore_row_order=True)


def test_a_past_start_on_the_wall_clock_catches_up_in_larger_micro_batches(spark: SparkSession, tmp_path: Path) -> None:
    opts = {**options(end=S + 5 * QUARTER), "speedup": "1", "maxIntervalsPerTrigger": "3"}
    query = run_available_now(spark, opts, tmp_path / "checkpoint", tmp_path / "out")
    assert [end["next"] for _, end in offsets_of(query)] == [iso(S + 3 * QUARTER), iso(S + 5 * QUARTER)]
    batch = read(spark, options(end=S + 5 * QUARTER))
    assert_df_equality(spark.read.parquet(str(tmp_path / "out")), batch, ignore_row_order=True, ignore_nullable=True)


# --- bad options -------------------------------------------------------------------------

BAD_OPTIONS = [
    pytest.param({"colour": "red"}, "'colour' = 'red'", id="unknown-option"),
    pytest.param({"drivers_per_company": "-3"}, "'drivers_per_company' = '-3'", id="negative-drivers"),
    pytest.param({"end": iso(S - timedelta(hours=1))}, "'end' = '2025-11-08T13:00:00Z'", id="end-before-start"),
    pytest.param({"end": None}, "'speedup' = 'max'", id="max-without-end"),
    pytest.param({"start": "yesterday"}, "'start' = 'yesterday'", id="malformed-start"),
    pytest.param({"numPartitions": "0"}, "'numPartitions' = '0'", id="zero-partitions"),
]


def bad(update: dict[str, str | None]) -> dict[str, str]:
    opts: dict[str, str | None] = {**options(), **update}
    return {k: v for k, v in opts.items() if v is not None}


@pytest.mark.parametrize(("update", "expected"), BAD_OPTIONS)
def test_bad_option_fails_the_stream_naming_option_and_value(
    spark: SparkSession, tmp_path: Path, update: dict[str, str | None], expected: str
) -> None:
    with pytest.raises(SPARK_ERRORS) as info:
        query = (
            spark.readStream.format("fleetgen")
            .options(**bad(update))
            .load()
            .writeStream.format("noop")
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination(STREAM_TIMEOUT_S)
    assert expected in str(info.value)


@pytest.mark.parametrize(("update", "expected"), BAD_OPTIONS)
def test_bad_option_fails_the_batch_read_naming_option_and_value(
    spark: SparkSession, update: dict[str, str | None], expected: str
) -> None:
    with pytest.raises(SPARK_ERRORS) as info:
        read(spark, bad(update)).count()
    assert expected in str(info.value)


def test_batch_read_needs_start_and_end(spark: SparkSession) -> None:
    with pytest.raises(SPARK_ERRORS) as info:
        spark.read.format("fleetgen").option("config", "small").load().count()
    assert "'start' and 'end'" in str(info.value)


# --- the fleetgen_companies source -------------------------------------------------------


def test_companies_schema(spark: SparkSession) -> None:
    df = read(spark, options(), source="fleetgen_companies")
    assert df.schema == StructType.fromDDL(COMPANIES_SCHEMA_DDL)


def test_companies_onboard_on_their_cadence(spark: SparkSession) -> None:
    rows = read(spark, options(end=S + timedelta(hours=6), **GRADUAL), source="fleetgen_companies").collect()
    ids = [r["company_id"] for r in rows]
    assert len(ids) == 7
    assert len(set(ids)) == 7
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    created = sorted(r["created_at"] for r in rows)
    assert created == [naive(S + timedelta(hours=h)) for h in (0, 0, 1, 1, 2, 2, 3)]
    assert {r["geography"] for r in rows} == {"US"}
    assert {r["active"] for r in rows} == {True}
    assert all(r["company_name"] for r in rows)


def test_company_ids_are_stable_for_a_seed(spark: SparkSession) -> None:
    def ids(**extra: str) -> set[str]:
        df = read(spark, options(end=S + timedelta(hours=6), **GRADUAL, **extra), source="fleetgen_companies")
        return {r[0] for r in df.select("company_id").collect()}

    first = ids()
    assert ids() == first
    assert ids(numPartitions="3") == first
    assert ids(seed="101").isdisjoint(first)


def test_companies_end_is_exclusive(spark: SparkSession) -> None:
    df = read(spark, options(end=S + timedelta(hours=2), **GRADUAL), source="fleetgen_companies")
    assert (
        sorted(r[0] for r in df.select("created_at").collect()) == [naive(S)] * 2 + [naive(S + timedelta(hours=1))] * 2
    )


def test_companies_stream_runs_one_micro_batch_per_tick_and_equals_batch_read(
    spark: SparkSession, tmp_path: Path
) -> None:
    opts = options(end=S + timedelta(hours=3), **GRADUAL)
    query = run_available_now(spark, opts, tmp_path / "checkpoint", tmp_path / "out", source="fleetgen_companies")
    assert [p.numInputRows for p in query.recentProgress] == [2, 2, 2]
    for offset in checkpoint_offsets(tmp_path / "checkpoint"):
        assert ISO_INSTANT.match(offset["next"])
    streamed = spark.read.parquet(str(tmp_path / "out"))
    batch = read(spark, opts, source="fleetgen_companies")
    assert_df_equality(streamed, batch, ignore_row_order=True, ignore_nullable=True)


def test_every_event_belongs_to_a_company_created_before_its_interval(spark: SparkSession) -> None:
    opts = options(end=S + timedelta(hours=6), **GRADUAL)
    events = read(spark, opts)
    companies = read(spark, opts, source="fleetgen_companies")
    assert events.count() > 0
    assert events.join(companies, "company_id", "left_anti").count() == 0
    joined = events.join(companies, "company_id")
    assert joined.filter(F.col("created_at") >= F.col("interval_start")).count() == 0
    # Eligibility grows with the onboarding ticks: 2 companies from S+15m, 4 after S+1h, ...
    per_interval = {
        r["interval_start"]: r["companies"]
        for r in events.groupBy("interval_start").agg(F.countDistinct("company_id").alias("companies")).collect()
    }
    assert per_interval[naive(S + QUARTER)] == 2
    assert per_interval[naive(S + timedelta(hours=1))] == 2
    assert per_interval[naive(S + timedelta(hours=1) + QUARTER)] == 4
    assert per_interval[naive(S + timedelta(hours=2) + QUARTER)] == 6
    assert per_interval[naive(S + timedelta(hours=5, minutes=45))] == 7
    assert naive(S) not in per_interval


def test_a_data_directory_governs_who_exists_when(spark: SparkSession, tmp_path: Path) -> None:
    """With dataDir, the recorded schedule (begun ten hours before S) decides, not the options' start."""
    path = tmp_path / "manifests" / "onboarding.json"
    path.parent.mkdir(parents=True)
    segment = Segment(epoch_seconds(S - timedelta(hours=10)), 5, 5, 1800)
    path.write_text(json.dumps({"segments": [segment.to_dict()]}), encoding="utf-8")
    opts = options(dataDir=str(tmp_path))
    # Everyone onboarded long before S: no tick in range, and every interval has all five companies.
    assert read(spark, opts, source="fleetgen_companies").count() == 0
    events = read(spark, opts)
    per_interval = events.groupBy("interval_start").agg(F.countDistinct("company_id").alias("n")).collect()
    assert sorted((r["interval_start"], r["n"]) for r in per_interval) == [
        (naive(S + k * QUARTER), 5) for k in range(4)
    ]
