"""The answer key of a data directory, for grading: what its tables should hold, from the generator.

Nothing here reads a learner's table or the data directory's Delta tables: the rows come from the
same pure functions and planner that the sources run (``read_events``, ``read_companies``), driven by
the data directory's records (``dataset.md``, the recorded onboarding and event shapes, the batch
manifest that says how far it was generated). Pure Python, numpy and Arrow: no Spark.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fleetgen_spark.core.clock import epoch_seconds, iso
from fleetgen_spark.core.company_rows import COMPANY_SCHEMA
from fleetgen_spark.core.config import EVENT_TYPES, load_config
from fleetgen_spark.core.exceptions import DataDirError
from fleetgen_spark.core.generate import EVENT_SCHEMA
from fleetgen_spark.core.options import SourceOptions, parse_options
from fleetgen_spark.spark.companies import company_partitions, read_companies
from fleetgen_spark.spark.pipeline import source_options
from fleetgen_spark.spark.source import EventPartition, FleetgenBatchReader, read_events
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.dataset import Dataset, read_dataset

__all__ = [
    "EVENT_FIELDS",
    "HISTORY_COLUMNS",
    "Generated",
    "Stream",
    "appended_windows",
    "bad_reason",
    "company_versions",
    "drives",
    "event_stream",
    "generated",
    "history",
    "table_rows",
]

EVENT_FIELDS = ("event_id", "driver_id", "company_id", "truck_id", "event_type", "timestamp")
HISTORY_COLUMNS = (
    "company_id",
    "company_name",
    "geography",
    "active",
    "created_at",
    "valid_from",
    "valid_to",
    "is_current",
)
Row = dict[str, Any]


@dataclass(frozen=True)
class Generated:
    """What a data directory says about itself: its dataset, the source options its pipeline uses, and
    the end of the intervals it holds (``[dataset.start, end)``)."""

    layout: DataDir
    dataset: Dataset
    options: SourceOptions
    end: datetime

    @property
    def max_lateness(self) -> timedelta:
        return timedelta(seconds=self.options.config.max_lateness_seconds)

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.options.config.interval_seconds)

    def starts(self) -> list[datetime]:
        """The starts of the intervals the data directory holds, in order."""
        n = (self.end - self.dataset.start) // self.interval
        return [self.dataset.start + i * self.interval for i in range(n)]


def generated(layout: DataDir) -> Generated:
    """The data directory's record, or one line saying why it cannot be graded against."""
    dataset = read_dataset(layout)
    manifest = layout.read_manifest() if layout.has_manifest() else None
    if dataset is None or manifest is None or not manifest.last_batch_id:
        raise DataDirError(
            f"{layout}: no generated intervals to grade against; backfill it first, e.g. "
            f"fleetgen backfill --config messy --start 2025-11-08T00:00:00Z --end 2025-11-08T06:00:00Z "
            f"--data-dir {layout}"
        )
    config = load_config(None, **dataset.config)
    last = datetime.strptime(manifest.last_batch_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    end = last + timedelta(seconds=config.interval_seconds)
    given = source_options(config, dataset, layout, end=iso(end), speedup="max")
    return Generated(layout, dataset, parse_options(given), end)


@dataclass(frozen=True)
class Stream:
    """The raw delivered stream of a data directory: every valid delivery, and the bad records."""

    valid: list[Row]  # as delivered: late and duplicate deliveries included, bad records not
    bad: list[Row]

    def unique(self) -> list[Row]:
        """The events, one row per event_id (its first delivery)."""
        seen: dict[str, Row] = {}
        for row in self.valid:
            seen.setdefault(row["event_id"], row)
        return list(seen.values())


def _rows(partitions: list[EventPartition]) -> list[Row]:
    batches = [b for p in partitions for b in read_events(p)]
    rows: list[Row] = pa.Table.from_batches(batches, schema=EVENT_SCHEMA).to_pylist()
    return rows


def _without_bad(partition: EventPartition) -> EventPartition:
    """The same units with no bad records drawn (bad records are extra rows from a stream of their own)."""
    units = tuple(
        replace(
            u,
            spec=replace(u.spec, bad_record_fraction=0.0),
            earlier=tuple((t, n, replace(s, bad_record_fraction=0.0)) for t, n, s in u.earlier),
        )
        for u in partition.units
    )
    return EventPartition(units)


def event_stream(gen: Generated) -> Stream:
    """Every row the events source delivered into the data directory's intervals, valid and bad."""
    reader = FleetgenBatchReader(gen.options)
    start_s = epoch_seconds(gen.dataset.start)
    partitions = reader.planner.partitions(gen.dataset.seed, start_s, start_s, epoch_seconds(gen.end))
    every = _rows(partitions)
    valid = _rows([_without_bad(p) for p in partitions])
    known = {r["event_id"] for r in valid}
    return Stream(valid, [r for r in every if r["event_id"] not in known])


def bad_reason(row: Row, max_lateness: timedelta) -> str:
    """The reason code validation gives a bad record (each has exactly one defect)."""
    if row["truck_id"] is None:
        return "missing_truck_id"
    if row["event_type"] not in EVENT_TYPES:
        return "unknown_event_type"
    if not row["interval_start"] - max_lateness <= row["timestamp"] < row["interval_end"]:
        return "timestamp_outside_interval"
    return "company_not_eligible"


def company_versions(gen: Generated) -> list[Row]:
    """Every version the companies source emitted up to the data directory's end (its change feed)."""
    start_s = epoch_seconds(gen.dataset.start)
    parts = company_partitions(gen.options, gen.dataset.seed, start_s, start_s, epoch_seconds(gen.end))
    batches = [b for p in parts for b in read_companies(p)]
    rows: list[Row] = pa.Table.from_batches(batches, schema=COMPANY_SCHEMA).to_pylist()
    return rows


def history(versions: list[Row], as_of: datetime | None = None) -> list[Row]:
    """SCD type 2 of the versions known at ``as_of`` (all when None): one row per (company, updated_at),
    ``[valid_from, valid_to)`` with ``valid_to`` the next version's ``updated_at``, null while current."""
    by_company: dict[str, dict[datetime, Row]] = defaultdict(dict)
    for v in versions:
        if as_of is None or v["updated_at"] <= as_of:
            by_company[v["company_id"]][v["updated_at"]] = v
    rows: list[Row] = []
    for company in by_company.values():
        ordered = [company[t] for t in sorted(company)]
        for i, v in enumerate(ordered):
            following = ordered[i + 1]["updated_at"] if i + 1 < len(ordered) else None
            rows.append(
                {
                    **{k: v[k] for k in HISTORY_COLUMNS[:5]},
                    "valid_from": v["updated_at"],
                    "valid_to": following,
                    "is_current": following is None,
                }
            )
    return rows


def drives(events: list[Row]) -> list[Row]:
    """Driving sessions: each ``start driving`` whose driver's next move is a ``stopped driving``.

    A drive under way when the data begins (a stop first) or still under way at its end (a start last)
    is no session. ``events`` counts the driver's events from the start to the stop, both included.
    """
    by_driver: dict[str, list[Row]] = defaultdict(list)
    for e in events:
        by_driver[e["driver_id"]].append(e)
    sessions: list[Row] = []
    for driver, rows in by_driver.items():
        rows.sort(key=lambda r: (r["timestamp"], r["event_id"]))
        opened: int | None = None
        for i, r in enumerate(rows):
            if r["event_type"] == "start driving":
                opened = i
            elif r["event_type"] == "stopped driving" and opened is not None:
                begun = rows[opened]["timestamp"]
                sessions.append(
                    {
                        "driver_id": driver,
                        "session_start": begun,
                        "session_end": r["timestamp"],
                        "events": i - opened + 1,
                    }
                )
                opened = None
    return sessions


def appended_windows(valid: list[Row], starts: list[datetime], window: timedelta, delay: timedelta) -> list[Row]:
    """What Spark's append mode emits for ``count`` per (event-time window, event_type) under
    ``withWatermark("timestamp", delay)``, the rows arriving one interval per micro-batch.

    Spark's rules (a single stateful operator, Spark 3.4 and later): the watermark after micro-batch
    ``k`` is the largest timestamp seen in batches ``0..k`` minus the delay (never going back); a row
    of batch ``k`` is dropped as late when its window ended at or before the watermark that batch
    ``k - 1`` ran with; a window is emitted, once, when its end is at or before the watermark a batch
    runs with, and the stream's last (no-data) batch runs with the watermark of all the rows.
    ``starts`` are the intervals, one micro-batch each, empty ones too (they move the watermarks on).
    """
    batches: dict[datetime, list[Row]] = defaultdict(list)
    for row in valid:
        batches[row["interval_start"]].append(row)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    counts: dict[tuple[datetime, str], int] = defaultdict(int)
    seen = late_for = running = epoch  # the watermark starts at the epoch
    for start in starts:
        for row in batches.get(start, []):
            begins = epoch + (row["timestamp"] - epoch) // window * window
            if begins + window > late_for:
                counts[begins, row["event_type"]] += 1
            seen = max(seen, row["timestamp"])
        late_for, running = running, max(running, seen - delay)
    return [
        {"window_start": begins, "window_end": begins + window, "event_type": kind, "count": n}
        for (begins, kind), n in sorted(counts.items())
        if begins + window <= running
    ]


def table_rows(table: pa.Table) -> list[Row]:
    """A learner's table as rows, every timestamp an aware UTC datetime at microseconds."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            column = table.column(i)
            if field.type.tz is None:
                column = pc.assume_timezone(column, "UTC")
            table = table.set_column(i, field.name, pc.cast(column, pa.timestamp("us", tz="UTC"), safe=False))
    rows: list[Row] = table.to_pylist()
    return rows
