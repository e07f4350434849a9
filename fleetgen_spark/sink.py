"""The Delta writes: events appended exactly once, companies MERGEd, bad records discarded.

Both writers run inside ``foreachBatch``. Spark replays a micro-batch after a crash with
the same epoch id and offsets, and the source makes the same rows from the same offsets,
so an append finds its own commit the second time and writes nothing (``appends``), and a
MERGE on ``company_id`` inserts nothing twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

from fleetgen_spark.appends import append_once, has_commits
from fleetgen_spark.clock import batch_id, epoch_seconds, from_epoch, iso, parse_instant
from fleetgen_spark.config import EVENT_TYPES
from fleetgen_spark.generate import EVENT_SCHEMA, EventSpec, company_ids
from fleetgen_spark.logs import get_logger, log_event
from fleetgen_spark.manifests import Layout, read_json, update_json, utc_now_iso, write_json_atomic
from fleetgen_spark.schedule import OnboardingPlan

__all__ = ["BATCHES_SCHEMA", "CompaniesWriter", "EventsWriter", "epoch_range", "query_id"]

_log = get_logger("sink")
T = TypeVar("T")

# Delta statistics only where they can skip files: times, interval and type. The ids are random
# UUIDs, so their per-file min/max span everything; collecting them cost ~1 us/row (measured).
EVENT_STATS_COLUMNS = "timestamp,batch_id,interval_start,interval_end,event_type"

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"

BATCHES_SCHEMA = StructType(
    [
        StructField("batch_id", StringType(), False),
        StructField("interval_start", TimestampType(), False),
        StructField("interval_end", TimestampType(), False),
        StructField("event_count", LongType(), False),
        StructField("seed", LongType(), False),
        StructField("generation_time", TimestampType(), False),
        StructField("eligible_companies", LongType(), False),
        StructField("total_companies", LongType(), False),
    ]
)

DISCARDED_SCHEMA = StructType(
    [
        StructField("discarded_at", TimestampType(), False),
        StructField("source", StringType(), False),
        StructField("reason", StringType(), False),
        StructField("batch_id", StringType(), True),
        StructField("record", StringType(), False),
    ]
)


def _observed(observation: Observation, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """An Observation's metrics, or None when the observed plan did not report in time
    (Observation.get would block forever on a plan that never ran)."""
    deadline = time.monotonic() + timeout_s
    handle = observation._jo  # the JVM Observation: its future is the only non-blocking view
    if handle is None:
        return None
    future = handle.future()
    while not future.isCompleted():
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)
    try:
        return observation.get
    except Exception:  # a plan that scanned no partition completes without a metrics row
        return None


def _offsets_line(checkpoint: Path, epoch: int) -> dict[str, Any]:
    lines = (checkpoint / "offsets" / str(epoch)).read_text(encoding="utf-8").splitlines()
    # Spark's offset log: "v1", the batch metadata, then one line per source.
    return dict(json.loads(lines[2]))


def epoch_range(checkpoint: Path, epoch: int) -> tuple[int, int, dict[str, Any]]:
    """The ``[from, to)`` epoch seconds a micro-batch covers, read from Spark's offset log.

    Spark writes the log before it runs the batch, so this is the exact range the source
    was asked for, empty intervals included. The first batch starts at the offsets' start.
    """
    end = _offsets_line(checkpoint, epoch)
    previous = _offsets_line(checkpoint, epoch - 1) if epoch > 0 else {"next": end["start"]}
    return (
        epoch_seconds(parse_instant(previous["next"], "offset")),
        epoch_seconds(parse_instant(end["next"], "offset")),
        end,
    )


def query_id(checkpoint: Path) -> str:
    """The streaming query's id, stable across restarts from the same checkpoint."""
    return str(read_json(checkpoint / "metadata")["id"])


# Delta's optimistic-concurrency conflicts: another writer committed first; a retry sees its rows.
_CONFLICTS = (
    "DELTA_CONCURRENT",
    "DELTA_PROTOCOL_CHANGED",
    "DELTA_METADATA_CHANGED",
    "ConcurrentAppend",
    "already exists",
    # A table being created by another writer: its directory exists before its first commit.
    "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION",
    "DELTA_TABLE_NOT_FOUND",
    "DELTA_PATH_EXISTS",  # created by another writer since we looked
)


def _retry(action: Callable[[], T], what: str, attempts: int = 8) -> T:
    """Run a Delta write, retrying when a concurrent writer won the race for a commit."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as err:  # Delta's conflicts surface as Py4J/Spark errors of several classes
            text = str(err)
            if attempt == attempts or not any(k in text for k in _CONFLICTS):
                raise
            log_event(_log, f"{what}: concurrent writer, retrying", attempt=attempt)
            time.sleep(0.2 * attempt)
    raise RuntimeError("unreachable")


def _write_discards(df: DataFrame, source: str, path: Path, app_id: str, epoch: int) -> int:
    """Append invalid records (reason code + the raw record as JSON) to delta/discarded_events."""
    rows = df.select(
        F.current_timestamp().alias("discarded_at"),
        F.lit(source).alias("source"),
        F.col("_reason").alias("reason"),
        (F.col("batch_id") if "batch_id" in df.columns else F.lit(None).cast("string")).alias("batch_id"),
        F.to_json(F.struct(*[F.col(c) for c in df.columns if not c.startswith("_")])).alias("record"),
    ).collect()
    if not rows:
        return 0
    out = df.sparkSession.createDataFrame(rows, DISCARDED_SCHEMA)
    # Both queries may create the table at the same moment: the loser retries and finds it.
    _retry(lambda: append_once(out, path, app_id, epoch), f"append {source} discards")
    for row in rows:
        log_event(_log, "record discarded", source=source, reason=row["reason"], record=row["record"])
    return len(rows)


@dataclass
class EventsWriter:
    """``foreachBatch`` target of the events query: driver_events, batches, discards, manifest."""

    layout: Layout
    plan: OnboardingPlan
    spec: EventSpec
    query: str = "driver_events"
    # (JVM session, company count, DataFrame) of the last eligibility table built; see _company_created_at.
    _created: tuple[Any, int, DataFrame] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def interval_s(self) -> int:
        return self.spec.interval_s

    def __call__(self, df: DataFrame, epoch: int) -> None:
        began = time.monotonic()
        checkpoint = self.layout.checkpoint(self.query)
        from_s, to_s, _ = epoch_range(checkpoint, epoch)
        app_id = f"fleetgen-{self.query}-{query_id(checkpoint)}"
        starts = list(range(from_s, to_s, self.interval_s))
        if not starts:
            return  # Spark's first batch of a new query may cover no interval: nothing to write
        batch_ids = [batch_id(from_epoch(s)) for s in starts]
        checked = self._validate(df, starts)
        counts: dict[str, int] | None = None
        invalid: int | None = None
        if not any(self.plan.onboarded_before(s) for s in starts):
            counts, invalid = dict.fromkeys(batch_ids, 0), 0  # nobody eligible yet: nothing to append
        else:
            counts, invalid = self._append_events(checked, batch_ids, app_id, epoch)
        discarded = 0
        if invalid != 0:  # records to discard, or a replay that cannot tell: append_once keeps it once
            bad = checked.filter(F.col("_reason").isNotNull()).drop("_created_at")
            discarded = _write_discards(bad, "events", self.layout.table("discarded_events"), app_id, epoch)
        if counts is None:  # a replay after a crash: count what the first attempt committed
            counts = self._counts_in_table(df.sparkSession, batch_ids)
        rows = self._batch_rows(starts, counts)
        batches = df.sparkSession.createDataFrame(rows, BATCHES_SCHEMA)
        append_once(batches, self.layout.table("batches"), app_id, epoch)
        self._record(epoch, app_id, rows, int((time.monotonic() - began) * 1000), discarded)

    def _append_events(
        self, checked: DataFrame, batch_ids: list[str], app_id: str, epoch: int
    ) -> tuple[dict[str, int] | None, int | None]:
        """Append the valid events once; return per-interval and invalid counts, seen in the same pass."""
        valid = F.col("_reason").isNull()
        observation = Observation(f"fleetgen-{app_id}-{epoch}")
        metrics = [F.count_if(valid & (F.col("batch_id") == b)).alias(b) for b in batch_ids]
        observed = checked.observe(observation, F.count_if(~valid).alias("_invalid"), *metrics)
        wrote = append_once(
            observed.filter(valid).select(*EVENT_SCHEMA.names, F.to_date("timestamp").alias("event_date")),
            self.layout.table("driver_events"),
            app_id,
            epoch,
            partition_by="event_date",
            # applied when the table is created
            **{"delta.dataSkippingStatsColumns": EVENT_STATS_COLUMNS},
        )
        seen = _observed(observation) if wrote else None
        if seen is None:  # a replay of a committed epoch, or no metrics row: count from the table
            return None, None
        return {b: int(seen[b]) for b in batch_ids}, int(seen["_invalid"])

    def _counts_in_table(self, spark: SparkSession, batch_ids: list[str]) -> dict[str, int]:
        """Per-interval rows actually in driver_events (the slow path, only after a crash)."""
        table = spark.read.format("delta").load(str(self.layout.table("driver_events")))
        found = table.filter(F.col("batch_id").isin(*batch_ids)).groupBy("batch_id").count().collect()
        counts = dict.fromkeys(batch_ids, 0)
        counts.update({r["batch_id"]: int(r["count"]) for r in found})
        return counts

    def _validate(self, df: DataFrame, starts: list[int]) -> DataFrame:
        """Add ``_reason``: null for a valid event, else why it must not reach driver_events."""
        eligible_max = max((self.plan.onboarded_before(s) for s in starts), default=0)
        created = self._company_created_at(df.sparkSession, eligible_max)
        joined = df.join(F.broadcast(created), on="company_id", how="left")
        reason: Column = (
            F.when(F.col("truck_id").isNull(), F.lit("missing_truck_id"))
            .when(
                (F.col("timestamp") < F.col("interval_start")) | (F.col("timestamp") >= F.col("interval_end")),
                F.lit("timestamp_outside_interval"),
            )
            .when(~F.col("event_type").isin(*EVENT_TYPES), F.lit("unknown_event_type"))
            .when(
                F.col("_created_at").isNull() | (F.col("_created_at") >= F.col("interval_start")),
                F.lit("company_not_eligible"),
            )
        )
        return joined.withColumn("_reason", reason)

    def _company_created_at(self, spark: SparkSession, count: int) -> DataFrame:
        """(company_id, _created_at) of the first ``count`` companies, built in numpy/Arrow.

        Kept from one micro-batch to the next until a tick onboards more companies (a live
        query runs many intervals per tick): building it cost ~40 ms for 100 companies and
        grows with the fleet. Spark hands each micro-batch a new Python session object around
        the same JVM session, so the JVM session is what is compared.
        """
        cached = self._created
        if cached is not None and cached[1] == count and cached[0].equals(spark._jsparkSession):
            return cached[2]
        created = np.zeros(count, dtype=np.int64)
        for tick in self.plan.ticks(self.plan.start, 2**62):
            if tick.first >= count:
                break
            created[tick.first : tick.first + tick.count] = tick.time * 1_000_000
        table = pa.table(
            {
                "company_id": company_ids(self.seed, 0, count),
                "_created_at": pa.array(created, type=pa.timestamp("us", tz="UTC")),
            }
        )
        frame = spark.createDataFrame(table)
        self._created = (spark._jsparkSession, count, frame)
        return frame

    def _batch_rows(self, starts: list[int], counts: dict[str, int]) -> list[tuple[Any, ...]]:
        now = datetime.now().astimezone()
        rows = []
        for s in starts:
            bid = batch_id(from_epoch(s))
            eligible = self.plan.onboarded_before(s)
            total = self.plan.onboarded_before(s + self.interval_s)
            rows.append(
                (
                    bid,
                    from_epoch(s),
                    from_epoch(s + self.interval_s),
                    counts.get(bid, 0),
                    self.seed,
                    now,
                    eligible,
                    total,
                )
            )
            log_event(
                _log,
                f"batch {bid} written",
                interval=f"{iso(from_epoch(s))}/{iso(from_epoch(s + self.interval_s))}",
                event_count=counts.get(bid, 0),
                eligible_companies_count=eligible,
                total_companies_count=total,
                seed=self.seed,
            )
        return rows

    def _record(self, epoch: int, app_id: str, rows: list[tuple[Any, ...]], duration_ms: int, discarded: int) -> None:
        """Advance the batch manifest once per epoch: a replayed epoch is not counted twice."""
        manifest = read_json(self.layout.batch_manifest)
        if manifest.get("app_id") == app_id and int(manifest.get("epoch", -1)) >= epoch:
            return
        if manifest.get("app_id") not in (None, app_id):
            manifest = {}  # a new checkpoint starts a new count
        if rows:
            manifest.update(
                last_batch_id=rows[-1][0],
                batch_count=int(manifest.get("batch_count", 0)) + len(rows),
                total_events=int(manifest.get("total_events", 0)) + sum(int(r[3]) for r in rows),
            )
        manifest.update(app_id=app_id, epoch=epoch, last_updated=utc_now_iso())
        manifest.setdefault("batch_count", 0)
        manifest.setdefault("total_events", 0)
        manifest.setdefault("last_batch_id", None)
        write_json_atomic(self.layout.batch_manifest, manifest)
        if rows:
            update_json(
                self.layout.state,
                last_driver_batch=rows[-1][0],
                last_driver_interval_end=iso(rows[-1][2]),
                batches_generated_count=manifest["batch_count"],
            )
        log_event(
            _log,
            "micro-batch done",
            epoch=epoch,
            intervals=len(rows),
            events=sum(int(r[3]) for r in rows),
            discarded=discarded,
            duration_ms=duration_ms,
        )


@dataclass
class CompaniesWriter:
    """``foreachBatch`` target of the onboarding query: MERGE into delta/companies."""

    layout: Layout
    query: str = "companies"

    def __call__(self, df: DataFrame, epoch: int) -> None:
        from delta.tables import DeltaTable

        checkpoint = self.layout.checkpoint(self.query)
        app_id = f"fleetgen-{self.query}-{query_id(checkpoint)}"
        spark = df.sparkSession
        reason = (
            F.when(~F.col("company_id").rlike(UUID_PATTERN), F.lit("invalid_company_id"))
            .when(F.col("geography") != F.lit("US"), F.lit("invalid_geography"))
            .when(~F.col("active"), F.lit("inactive_company"))
        )
        checked = df.withColumn("_reason", reason).persist()
        try:
            good = checked.filter(F.col("_reason").isNull()).drop("_reason")
            table = self.layout.table("companies")
            path = str(table)

            def merge() -> None:
                if not has_commits(table):
                    # A new table: create it with this batch (1.5-2 s less than creating it and
                    # MERGEing into it). "errorifexists" fails if a racing writer created it first;
                    # the retry then MERGEs, so nothing is inserted twice either way.
                    good.write.format("delta").mode("errorifexists").save(path)
                    return
                target = DeltaTable.forPath(spark, path).alias("t")
                target.merge(good.alias("s"), "t.company_id = s.company_id").whenNotMatchedInsertAll().execute()

            _retry(merge, "merge companies")
            latest = good.agg(F.max("created_at").alias("m"), F.count("*").alias("n")).collect()[0]
            discarded = _write_discards(
                checked.filter(F.col("_reason").isNotNull()),
                "companies",
                self.layout.table("discarded_events"),
                app_id,
                epoch,
            )
        finally:
            checked.unpersist()
        total = spark.read.format("delta").load(path).count()
        if latest["m"] is not None:
            update_json(
                self.layout.state,
                last_company_batch=batch_id(latest["m"]),
                last_company_tick=iso(latest["m"]),
                company_count=total,
            )
        log_event(_log, "companies merged", epoch=epoch, onboarded=int(latest["n"]), discarded=discarded, total=total)
