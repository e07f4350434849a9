"""Golden hashes of today's generated rows: every realism knob, while off, must leave them bit-identical.

The hashes were taken before any knob existed (commit eb75459). A change that moves one of them
changes what every existing data directory, checkpoint and course exercise expects: it is a
breaking change of the dataset definition, never a refactor.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from pyspark.sql import Row, SparkSession

from fleetgen_spark.core.company_rows import company_batch
from fleetgen_spark.core.config import load_config
from fleetgen_spark.core.generate import event_batches
from fleetgen_spark.core.schedule import blocks
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.spark.source import event_spec
from fleetgen_spark.storage.datadir import DataDir

S = 1_762_560_000  # 2025-11-08T00:00:00Z


def _digest(tables: list[pa.Table]) -> str:
    sha = hashlib.sha256()
    for table in tables:
        # Values, not buffers: a buffer may hold bytes outside its array's slice.
        for name in table.column_names:
            sha.update(name.encode())
            sha.update(repr(table.column(name).to_pylist()).encode())
    return sha.hexdigest()


def _events(preset: str, intervals: int, n_companies: int) -> str:
    config = load_config(preset)
    assert config.seed is not None
    spec = event_spec(config, config.seed)
    tables = []
    for k in range(intervals):
        start = S + k * config.interval_seconds
        for block, _, n in blocks(n_companies):
            batches = list(event_batches(spec, start, block, n))
            tables.append(pa.Table.from_batches(batches) if batches else pa.table({}))
    return _digest(tables)


GOLDEN = {
    ("events", "base"): "59b132837e03b80a5064de1a69fb961e26ecce8d923e0b0ff77a1084ce4dd685",
    ("events", "small"): "c97cb54a48478537c8a553b1ab4eb188be334ca5b7fdbe5b13006a6a4a91c840",
    ("events", "scaling"): "0ce217be8bb03f392074d9af6b34b29ee5c4202f2c62e199bb84de2c839ef08d",
    ("companies", "base"): "f43644bf014f245f150e634a0ec1f5a5d4d9ff7a29599c054f340fc8c1672d75",
}


@pytest.mark.parametrize(
    ("preset", "intervals", "companies"), [("base", 4, 250), ("small", 8, 5), ("scaling", 2, 1000)]
)
def test_events_of_each_preset_are_what_they_always_were(preset: str, intervals: int, companies: int) -> None:
    assert _events(preset, intervals, companies) == GOLDEN[("events", preset)]


def test_companies_are_what_they_always_were() -> None:
    """The columns the hash was taken on; ``updated_at`` came later (issue 15) and equals created_at."""
    batches = [company_batch(42, first, 150, S + first) for first in (0, 150, 1234)]
    tables = [pa.Table.from_batches([b]).drop_columns(["updated_at"]) for b in batches]
    assert _digest(tables) == GOLDEN[("companies", "base")]
    assert all(b.column("updated_at").equals(b.column("created_at")) for b in batches)


def test_a_batch_read_through_spark_is_what_it_always_was(spark: SparkSession) -> None:
    """The whole source path (onboarding schedule, eligibility, partitions) for a small config."""
    rows = (
        spark.read.format("fleetgen")
        .option("config", "small")
        .option("start", "2025-11-08T00:00:00Z")
        .option("end", "2025-11-08T06:00:00Z")
        .option("companies_per_onboarding", "2")
        .load()
        .orderBy("event_id")
        .collect()
    )
    assert (len(rows), _rows_digest(rows)) == (GOLDEN_SOURCE_ROWS, GOLDEN_SOURCE)


def _rows_digest(rows: list[Row]) -> str:
    return hashlib.sha256("\n".join("|".join(str(v) for v in row) for row in rows).encode()).hexdigest()


def test_the_pipeline_writes_what_the_source_always_made(spark: SparkSession, tmp_path: Path) -> None:
    """The same rows through the whole pipeline (data directory record, ledger, sinks) into Delta."""
    start = datetime(2025, 11, 8, tzinfo=timezone.utc)
    config = load_config("small", companies_per_onboarding=2)
    # 24 intervals in three micro-batches: the rows cross micro-batch edges without paying for 24 of them.
    pipeline = Pipeline(
        spark, DataDir(tmp_path), config, speedup="max", start=start, end=start + timedelta(hours=6),
        max_intervals_per_trigger=8,
    )  # fmt: skip
    pipeline.run_available_now()
    table = spark.read.format("delta").load(str(pipeline.layout.table("driver_events")))
    rows = table.drop("event_date").orderBy("event_id").collect()
    assert (len(rows), _rows_digest(rows)) == (GOLDEN_SOURCE_ROWS, GOLDEN_SOURCE)


GOLDEN_SOURCE_ROWS = 1116
GOLDEN_SOURCE = "41475dd90d02fbd3d36d731b38a5fb4ffd92d22da6355840abf26701dc50f82e"
