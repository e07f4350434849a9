"""Exactly once, by interval: the ``batches`` table is the ledger of what a data directory holds.

Each interval is appended to ``driver_events`` (and its bad records to ``discarded_events``) and
then recorded by one row in ``batches``. A query that starts (after a crash, a pause, or with its
checkpoint deleted) reads the ledger once and writes only the intervals after it, so nothing is
appended twice whatever happened to the checkpoints or to the Delta log (OPTIMIZE, checkpoints,
log cleanup: the ledger is table data, not commit metadata). One process writes a data directory
at a time (``lock``), so the ledger read at the start stays true while the query runs.

A crash between the ``driver_events`` commit and the ``batches`` commit of a micro-batch leaves
rows of intervals the ledger does not list: the ledger finds them at load time (``orphans``), and
the next micro-batch records those intervals with the rows already there instead of appending
them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fleetgen_spark.core.clock import batch_id, from_epoch
from fleetgen_spark.storage.datadir import BatchManifest, DataDir, utc_now_iso

__all__ = ["Ledger"]


def _load(spark: SparkSession, layout: DataDir, table: str) -> DataFrame:
    return spark.read.format("delta").load(str(layout.table(table)))


@dataclass
class Ledger:
    """What ``batches`` says was written, kept up to date by the one writer of the directory."""

    written_until: int | None = None  # epoch s: the end of the last interval recorded
    batch_count: int = 0
    total_events: int = 0
    last_batch_id: str | None = None
    # Intervals (start, epoch s) beyond the ledger that a crash left in driver_events: start -> rows.
    orphans: dict[int, int] = field(default_factory=dict)
    # Intervals beyond the ledger whose bad records already reached discarded_events.
    orphan_discards: frozenset[int] = frozenset()

    @classmethod
    def load(cls, spark: SparkSession, layout: DataDir) -> Ledger:
        """Read the ledger and the rows a crash may have left beyond it (three small Spark jobs)."""
        row = (
            _load(spark, layout, "batches")
            .agg(
                F.count(F.lit(1)).alias("n"),
                F.sum("event_count").alias("events"),
                F.max(F.col("interval_end").cast("long")).alias("until"),
                F.max("batch_id").alias("last"),
            )
            .collect()[0]
        )
        until = None if row["until"] is None else int(row["until"])
        events = _load(spark, layout, "driver_events")
        discards = _load(spark, layout, "discarded_events").filter(F.col("source") == "events")
        if until is not None:
            events = events.filter(F.col("interval_start") >= F.lit(from_epoch(until)))
            discards = discards.filter(F.col("batch_id") >= F.lit(batch_id(from_epoch(until))))
        orphans = {
            int(r["s"]): int(r["count"])
            for r in events.groupBy(F.col("interval_start").cast("long").alias("s")).count().collect()
        }
        discarded = {str(r["batch_id"]) for r in discards.select("batch_id").distinct().collect()}
        return cls(
            written_until=until,
            batch_count=int(row["n"]),
            total_events=int(row["events"] or 0),
            last_batch_id=row["last"],
            orphans=orphans,
            orphan_discards=frozenset(_starts_of(discarded)),
        )

    def record(self, rows: list[tuple[Any, ...]], interval_s: int) -> None:
        """Advance past the ``batches`` rows just committed (batch_id, start, end, event_count, ...)."""
        if not rows:
            return
        self.batch_count += len(rows)
        self.total_events += sum(int(r[3]) for r in rows)
        self.last_batch_id = str(rows[-1][0])
        ends = [int(r[1].timestamp()) + interval_s for r in rows]
        self.written_until = max(ends)
        for start in [e - interval_s for e in ends]:
            self.orphans.pop(start, None)
        self.orphan_discards = frozenset(s for s in self.orphan_discards if s >= self.written_until)

    def manifest(self) -> BatchManifest:
        """``batch_manifest.json``: the ledger's totals, so the manifest always agrees with the tables."""
        return BatchManifest(
            last_batch_id=self.last_batch_id,
            batch_count=self.batch_count,
            total_events=self.total_events,
            last_updated=utc_now_iso(),
        )

    def write_manifest(self, layout: DataDir) -> None:
        layout.write_manifest(self.manifest())


def _starts_of(batch_ids: set[str]) -> list[int]:
    """Epoch seconds of ``YYYYMMDDTHHMMSSZ`` batch ids."""
    return [
        int(datetime.strptime(b, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp())
        for b in batch_ids
        if b and b != "None"
    ]
