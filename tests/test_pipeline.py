"""The event pipeline into Delta: batches, manifest, discards and logs agree with driver_events."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import table
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from fleetgen_spark import load_config
from fleetgen_spark.core.options import parse_options
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.spark.sink import EventsWriter
from fleetgen_spark.spark.tables import ensure_tables
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import RUN_ID, configure_logging, read_logs
from fleetgen_spark.storage.manifests import read_json, write_json_atomic

START = datetime(2025, 11, 8, tzinfo=timezone.utc)


def _backfill(spark: SparkSession, data_dir: Path, hours: int, **overrides: object) -> Pipeline:
    config = load_config("small", **overrides)
    pipeline = Pipeline(
        spark,
        DataDir(data_dir),
        config,
        speedup="max",
        start=START,
        end=START + timedelta(hours=hours),
        max_intervals_per_trigger=5,
    )
    pipeline.run_available_now()
    return pipeline


@pytest.fixture(scope="module")
def backfilled(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    data_dir = tmp_path_factory.mktemp("pipeline")
    configure_logging(DataDir(data_dir), stderr=False)
    # Gradual onboarding (2 companies an hour) so eligibility changes inside the range.
    return _backfill(spark, data_dir, 4, companies_per_onboarding=2, company_onboarding_interval="PT1H")


def test_one_batches_row_per_interval_including_empty_ones(spark: SparkSession, backfilled: Pipeline) -> None:
    batches = table(spark, backfilled.layout, "batches").orderBy("interval_start").collect()
    assert len(batches) == 16
    assert [b["interval_start"].replace(tzinfo=None) for b in batches] == [
        (START + timedelta(minutes=15 * i)).replace(tzinfo=None) for i in range(16)
    ]
    # Companies onboard at START, so the first interval has nobody eligible: an empty batch, still recorded.
    assert batches[0]["event_count"] == 0 and batches[0]["eligible_companies"] == 0
    assert batches[1]["eligible_companies"] == 2
    assert batches[-1]["eligible_companies"] == 5
    assert len({b["batch_id"] for b in batches}) == 16


def test_batches_counts_equal_driver_events(spark: SparkSession, backfilled: Pipeline) -> None:
    events = table(spark, backfilled.layout, "driver_events")
    per_batch = {r["batch_id"]: r["count"] for r in events.groupBy("batch_id").count().collect()}
    batches = {r["batch_id"]: r["event_count"] for r in table(spark, backfilled.layout, "batches").collect()}
    assert sum(batches.values()) == events.count() > 0
    assert {k: v for k, v in batches.items() if v} == per_batch
    assert events.select("event_id").distinct().count() == events.count()
    assert "event_date" in events.columns


def test_manifest_equals_tables(spark: SparkSession, backfilled: Pipeline) -> None:
    manifest = read_json(backfilled.layout.batch_manifest)
    batches = table(spark, backfilled.layout, "batches")
    assert manifest["batch_count"] == batches.count()
    assert manifest["total_events"] == table(spark, backfilled.layout, "driver_events").count()
    assert manifest["last_batch_id"] == batches.agg(F.max("batch_id")).collect()[0][0]
    state = read_json(backfilled.layout.state)
    assert state["last_driver_batch"] == manifest["last_batch_id"]
    assert state["company_count"] == 5


def test_every_event_belongs_to_an_eligible_company(spark: SparkSession, backfilled: Pipeline) -> None:
    events = table(spark, backfilled.layout, "driver_events")
    companies = table(spark, backfilled.layout, "companies")
    joined = events.join(companies, "company_id", "left")
    assert joined.filter(F.col("created_at").isNull()).count() == 0
    assert joined.filter(F.col("created_at") >= F.col("interval_start")).count() == 0


def test_logs_are_json_with_one_run_id(backfilled: Pipeline) -> None:
    files = list((backfilled.layout.manifests / "logs").rglob("generator.log.jsonl"))
    assert files
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert {line["run_id"] for line in lines} == {RUN_ID}
    assert {"timestamp", "level", "component", "run_id", "message", "metadata"} <= set(lines[0])
    written = [line for line in lines if line["message"].startswith("batch ")]
    assert len(written) == 16
    assert {"interval", "event_count", "eligible_companies_count", "total_companies_count", "seed"} <= set(
        written[0]["metadata"]
    )
    # Each micro-batch says where its time went: the driver_events append and the batches append.
    done = [line["metadata"] for line in lines if line["message"] == "micro-batch done"]
    assert done
    for timing in done:
        assert timing["ledger_ms"] > 0 and timing["append_ms"] + timing["ledger_ms"] <= timing["duration_ms"]
    assert any(timing["append_ms"] > 0 for timing in done)
    assert read_logs(backfilled.layout, min_level="ERROR") == []
    assert len(read_logs(backfilled.layout, limit=3)) == 3


def test_invalid_records_go_to_discarded_never_to_driver_events(spark: SparkSession, tmp_path: Path) -> None:
    layout = DataDir(tmp_path)
    start_s = int(START.timestamp())
    checkpoint = Path(layout.checkpoint("driver_events"))
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "metadata").write_text('{"id":"test-query"}')
    offset = {"start": "2025-11-08T00:00:00Z", "next": "2025-11-08T00:30:00Z", "seed": 7}
    (checkpoint / "offsets" / "0").write_text("v1\n{}\n" + json.dumps(offset) + "\n")
    options = parse_options({"config": "small", "seed": "7", "start": "2025-11-08T00:00:00Z"})
    ensure_tables(spark, layout)
    good = (
        spark.read.format("fleetgen")
        .options(config="small", seed="7", start="2025-11-08T00:00:00Z", end="2025-11-08T00:30:00Z")
        .load()
    )
    sample = good.limit(4).collect()
    bad_rows = [
        sample[0].asDict() | {"truck_id": None},
        sample[1].asDict() | {"event_type": "refuelled"},
        sample[2].asDict() | {"timestamp": datetime(2025, 11, 8, 1, 0)},
        sample[3].asDict() | {"company_id": "00000000-0000-4000-8000-000000000000"},
    ]
    nullable = StructType([StructField(f.name, f.dataType, True) for f in good.schema])
    bad = spark.createDataFrame(bad_rows, nullable)
    batch = good.unionByName(bad)
    EventsWriter(layout, options, start_s)(batch, 0)

    discarded = spark.read.format("delta").load(str(layout.table("discarded_events")))
    reasons = sorted(r["reason"] for r in discarded.collect())
    assert reasons == sorted(
        ["missing_truck_id", "unknown_event_type", "timestamp_outside_interval", "company_not_eligible"]
    )
    events = spark.read.format("delta").load(str(layout.table("driver_events")))
    assert events.count() == good.count()
    bad_ids = {r["record"] for r in discarded.collect()}
    assert all(json.loads(r)["event_id"] for r in bad_ids)
    batches = spark.read.format("delta").load(str(layout.table("batches")))
    assert batches.agg(F.sum("event_count")).collect()[0][0] == good.count()

    # A replay of the same epoch (as after a crash, by a new writer that reads the ledger) writes nothing twice.
    EventsWriter(layout, options, start_s)(batch, 0)
    assert spark.read.format("delta").load(str(layout.table("driver_events"))).count() == good.count()
    assert spark.read.format("delta").load(str(layout.table("discarded_events"))).count() == 4
    assert spark.read.format("delta").load(str(layout.table("batches"))).count() == 2
    assert read_json(layout.batch_manifest)["batch_count"] == 2


def test_atomic_json_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    for i in range(3):
        write_json_atomic(target, {"i": i})
    assert json.loads(target.read_text()) == {"i": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
