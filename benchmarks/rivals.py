"""The workload and the generators fleetgen is measured against, all on fleetgen's event schema.

- ``Workload``: a fleet and a range of intervals that yields about the asked number of rows.
- ``sql_events``: the same columns from Spark SQL expressions over ``spark.range`` (JVM only).
- ``dbldatagen_events``: the same columns built with dbldatagen (JVM only, the reference generator).
- ``CachedBatchDataSource`` (``fleetgen_cached``): a Python data source that yields one
  pre-built Arrow batch of EVENT_SCHEMA over and over: the transport ceiling, what any
  Python data source costs when generation is free. Read as a batch or as a stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.datasource import DataSource, DataSourceReader, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, SupportsTriggerAvailableNow
from pyspark.sql.types import StructType

from fleetgen_spark.core.config import EVENT_TYPES
from fleetgen_spark.core.generate import EVENT_SCHEMA, EventSpec, event_batches
from fleetgen_spark.spark.source import EVENTS_SCHEMA_DDL

__all__ = ["EVENT_COLUMNS", "CachedBatchDataSource", "Workload", "dbldatagen_events", "sql_events"]

EVENT_COLUMNS = tuple(EVENT_SCHEMA.names)
WEIGHTS = (0.40, 0.35, 0.25)
START = datetime(2025, 11, 8, 0, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Workload:
    """A fleet (companies x drivers x rate) over ``intervals`` intervals of events.

    Every company is onboarded on the first tick at ``start``; a company is eligible from the
    next interval on, so the range is one interval longer than the intervals with events.
    """

    companies: int
    drivers: int
    rate: float
    intervals: int
    seed: int = 200
    interval_s: int = 900
    start: datetime = START

    @classmethod
    def for_rows(cls, rows: int) -> Workload:
        """A scaling-like fleet (20 drivers, 5 events each per interval) of about ``rows`` events."""
        drivers, rate = 20, 5.0
        per_company = drivers * rate
        intervals = max(2, min(40, rows // 100_000))
        companies = max(1, round(rows / (per_company * intervals)))
        return cls(companies, drivers, rate, intervals)

    @property
    def expected_rows(self) -> int:
        return round(self.companies * self.drivers * self.rate * self.intervals)

    @property
    def start_s(self) -> int:
        return int(self.start.timestamp())

    @property
    def first_event_s(self) -> int:
        return self.start_s + self.interval_s

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.start_s + (self.intervals + 1) * self.interval_s, tz=timezone.utc)

    def config_overrides(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "number_of_companies": self.companies,
            "drivers_per_company": self.drivers,
            "event_rate_per_driver": self.rate,
            "company_onboarding_interval": "PT1H",
            "interval": f"PT{self.interval_s // 60}M",
        }

    def source_options(self, **extra: str) -> dict[str, str]:
        options = {k: str(v) for k, v in self.config_overrides().items()}
        options.update(
            start=self.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            end=self.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            speedup="max",
            maxIntervalsPerTrigger=str(self.intervals + 1),
        )
        options.update(extra)
        return options


# --- the JVM generators ------------------------------------------------------------------


def _uuid_like(hex32: Column) -> Column:
    """A 32-hex-digit string cut into the 8-4-4-4-12 groups of a UUID."""
    return F.concat_ws(
        "-",
        F.substring(hex32, 1, 8),
        F.substring(hex32, 9, 4),
        F.substring(hex32, 13, 4),
        F.substring(hex32, 17, 4),
        F.substring(hex32, 21, 12),
    )


def _event_type(u: Column) -> Column:
    return (
        F.when(u < F.lit(WEIGHTS[0]), F.lit(EVENT_TYPES[0]))
        .when(u < F.lit(WEIGHTS[0] + WEIGHTS[1]), F.lit(EVENT_TYPES[1]))
        .otherwise(F.lit(EVENT_TYPES[2]))
    )


def _finish(df: DataFrame, w: Workload) -> DataFrame:
    """From columns (k interval index, n company, seq driver, u type draw, t time draw) to the event schema."""
    start_s = F.lit(w.first_event_s) + F.col("k") * F.lit(w.interval_s)
    company_id = _uuid_like(F.md5(F.concat(F.lit(f"{w.seed}-"), F.col("n").cast("string"))))
    return df.select(
        F.expr("uuid()").alias("event_id"),
        F.concat(F.lit("DRV-"), company_id, F.lit("-"), F.lpad(F.col("seq").cast("string"), 3, "0")).alias("driver_id"),
        company_id.alias("company_id"),
        F.concat(
            F.lit(f"TRK-{w.seed}-"), F.lpad((F.col("n") * F.lit(w.drivers) + F.col("seq")).cast("string"), 4, "0")
        ).alias("truck_id"),
        _event_type(F.col("u")).alias("event_type"),
        F.timestamp_micros(start_s * F.lit(1_000_000) + F.floor(F.col("t") * F.lit(w.interval_s * 1_000_000))).alias(
            "timestamp"
        ),
        F.date_format(F.timestamp_seconds(start_s), "yyyyMMdd'T'HHmmss'Z'").alias("batch_id"),
        F.timestamp_seconds(start_s).alias("interval_start"),
        F.timestamp_seconds(start_s + F.lit(w.interval_s)).alias("interval_end"),
    )


def sql_events(spark: SparkSession, w: Workload, rows: int, partitions: int) -> DataFrame:
    """fleetgen's columns from Spark SQL expressions over ``spark.range`` (no Python at run time)."""
    base = spark.range(0, rows, 1, partitions).select(
        (F.col("id") * F.lit(w.intervals) / F.lit(rows)).cast("long").alias("k"),
        F.pmod(F.xxhash64(F.col("id"), F.lit(1)), F.lit(w.companies)).alias("n"),
        F.pmod(F.xxhash64(F.col("id"), F.lit(2)), F.lit(w.drivers)).alias("seq"),
        F.rand(w.seed).alias("u"),
        F.rand(w.seed + 1).alias("t"),
    )
    return _finish(base, w)


def dbldatagen_events(spark: SparkSession, w: Workload, rows: int, partitions: int) -> DataFrame:
    """fleetgen's columns built by dbldatagen's DataGenerator (random columns, then expressions)."""
    import dbldatagen as dg

    span_us = w.interval_s * 1_000_000
    company_hex = f"md5(concat('{w.seed}-', cast(n as string)))"
    company_id = (
        f"concat_ws('-', substring({company_hex}, 1, 8), substring({company_hex}, 9, 4), "
        f"substring({company_hex}, 13, 4), substring({company_hex}, 17, 4), substring({company_hex}, 21, 12))"
    )
    spec = (
        dg.DataGenerator(spark, name="fleet_events", rows=rows, partitions=partitions, randomSeed=w.seed)
        .withColumn("k", "long", minValue=0, maxValue=w.intervals - 1, random=True, omit=True)
        .withColumn("n", "long", minValue=0, maxValue=w.companies - 1, random=True, omit=True)
        .withColumn("seq", "long", minValue=0, maxValue=w.drivers - 1, random=True, omit=True)
        .withColumn("t", "double", minValue=0.0, maxValue=1.0, random=True, omit=True)
        .withColumn("event_id", "string", expr="uuid()")
        .withColumn("company_id", "string", expr=company_id, baseColumn="n")
        .withColumn(
            "driver_id",
            "string",
            expr="concat('DRV-', company_id, '-', lpad(cast(seq as string), 3, '0'))",
            baseColumn=["company_id", "seq"],
        )
        .withColumn(
            "truck_id",
            "string",
            expr=f"concat('TRK-{w.seed}-', lpad(cast(n * {w.drivers} + seq as string), 4, '0'))",
            baseColumn=["n", "seq"],
        )
        .withColumn("event_type", "string", values=list(EVENT_TYPES), weights=[40, 35, 25], random=True)
        .withColumn(
            "interval_start",
            "timestamp",
            expr=f"timestamp_seconds({w.first_event_s} + k * {w.interval_s})",
            baseColumn="k",
        )
        .withColumn(
            "interval_end",
            "timestamp",
            expr=f"timestamp_seconds({w.first_event_s} + (k + 1) * {w.interval_s})",
            baseColumn="k",
        )
        .withColumn(
            "timestamp",
            "timestamp",
            expr=f"timestamp_micros(unix_micros(interval_start) + cast(floor(t * {span_us}) as bigint))",
            baseColumn=["interval_start", "t"],
        )
        .withColumn(
            "batch_id",
            "string",
            expr="date_format(interval_start, \"yyyyMMdd'T'HHmmss'Z'\")",
            baseColumn="interval_start",
        )
    )
    return spec.build().select(*EVENT_COLUMNS)


# --- the transport ceiling ---------------------------------------------------------------


# A plain dict, not functools.lru_cache: the source is pickled by value into the workers,
# and an lru_cache wrapper would be pickled by reference to this (unimportable) module.
_BATCHES: dict[int, pa.RecordBatch] = {}


def _cached_batch(rows: int) -> pa.RecordBatch:
    """``rows`` real fleetgen events (one block of a fleet large enough), built once per worker."""
    if rows in _BATCHES:
        return _BATCHES[rows]
    drivers = max(1, -(-rows // (100 * 5)))
    spec = EventSpec(200, 900, drivers, 5.0, (0.40, 0.75, 1.0))
    table = pa.Table.from_batches(list(event_batches(spec, int(START.timestamp()), 0, 100, max_rows=rows * 2)))
    while table.num_rows < rows:
        table = pa.concat_tables([table, table])
    _BATCHES[rows] = table.slice(0, rows).combine_chunks().to_batches()[0]
    return _BATCHES[rows]


class _Share(InputPartition):
    def __init__(self, rows: int) -> None:
        super().__init__(rows)
        self.rows = rows


def _shares(rows: int, partitions: int) -> list[InputPartition]:
    share, extra = divmod(rows, partitions)
    return [_Share(share + (1 if i < extra else 0)) for i in range(partitions)]


def _repeat_batch(partition: InputPartition, batch_rows: int) -> Iterator[pa.RecordBatch]:
    if not isinstance(partition, _Share):
        raise TypeError(f"fleetgen_cached cannot read {partition!r}")
    batch = _cached_batch(batch_rows)
    left = partition.rows
    while left >= batch_rows:
        yield batch
        left -= batch_rows
    if left:
        yield batch.slice(0, left)


class _CachedBatchReader(DataSourceReader):
    def __init__(self, options: dict[str, str]) -> None:
        self.rows = int(options.get("rows", "1000000"))
        self.batch_rows = int(options.get("batchRows", "10000"))
        self.partitions_ = int(options.get("numPartitions", "2"))

    def partitions(self) -> Sequence[InputPartition]:
        return _shares(self.rows, self.partitions_)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        return _repeat_batch(partition, self.batch_rows)


class _CachedStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """All ``rows`` in the first micro-batch: the same work as the batch read, plus a stream's overhead."""

    def __init__(self, options: dict[str, str]) -> None:
        self.batch = _CachedBatchReader(options)

    def initialOffset(self) -> dict[str, Any]:
        return {"rows": 0}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadAllAvailable()

    def latestOffset(self, start: dict[str, Any], limit: ReadLimit) -> dict[str, Any]:
        return {"rows": self.batch.rows}

    def prepareForTriggerAvailableNow(self) -> None:
        """Everything is available at once anyway."""

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> Sequence[InputPartition]:
        return _shares(int(end["rows"]) - int(start["rows"]), self.batch.partitions_)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        return _repeat_batch(partition, self.batch.batch_rows)

    def commit(self, end: dict[str, Any]) -> None:
        """Nothing to release."""


class CachedBatchDataSource(DataSource):
    """``fleetgen_cached``: yields one pre-built Arrow batch of EVENT_SCHEMA repeatedly.

    Options: ``rows`` (total), ``batchRows`` (rows per yielded batch), ``numPartitions``.
    """

    @classmethod
    def name(cls) -> str:
        return "fleetgen_cached"

    def schema(self) -> str:
        return EVENTS_SCHEMA_DDL

    def reader(self, schema: StructType) -> DataSourceReader:
        return _CachedBatchReader(dict(self.options))

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return _CachedStreamReader(dict(self.options))
