"""Reads a data directory for the report: small aggregates of its Delta tables, its logs and its config.

Every table is read through Spark and reduced there (counts per type, per reason, per
onboarding time), so only a few rows per interval reach Python whatever the data size.
Tables that do not exist yet are listed as missing; the report shows what exists.
Timestamps cross from Spark as epoch microseconds: ``collect()`` would turn them into
naive datetimes in the Python process's own time zone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from fleetgen_spark.core.clock import iso
from fleetgen_spark.core.exceptions import DataDirError, FleetGenError
from fleetgen_spark.core.shifts import HOS_OFF_DUTY_S
from fleetgen_spark.report.model import Expected, ReportInputs
from fleetgen_spark.storage.datadir import DATASET_MD, DataDir
from fleetgen_spark.storage.dataset import Dataset, read_dataset
from fleetgen_spark.storage.logs import read_logs

__all__ = ["TABLES", "asked", "check_data_dir", "read_durations", "read_inputs", "shift_summary"]

TABLES = ("batches", "driver_events", "companies", "discarded_events")
Progress = Callable[[str], None]


def _present(layout: DataDir) -> list[str]:
    return [name for name in (*TABLES, "companies_history") if layout.has_commits(name)]


def check_data_dir(layout: DataDir, have_config: bool = False) -> None:
    """Refuse, with one line saying what is missing, a directory the report cannot read."""
    root = layout.uri
    if not layout.is_present():
        raise DataDirError(f"--data-dir {root}: no such directory")
    tables = _present(layout)
    has_dataset = layout.exists(DATASET_MD)
    if not has_dataset and not tables:
        raise DataDirError(
            f"{root} is not a fleetgen data directory (no manifests/dataset.md, no tables under delta/); "
            "write one first, e.g. fleetgen backfill --start ... --end ... --data-dir " + root
        )
    if not tables:
        raise DataDirError(
            f"{root} has no tables yet ({', '.join('delta/' + t for t in TABLES)} have no commits); "
            "let the pipeline finish at least one interval first"
        )
    if not has_dataset and not have_config:
        raise DataDirError(
            f"{layout.location(DATASET_MD)} is missing, so what was asked is unknown; "
            "pass --config with the config this directory was generated with"
        )


def _micros_to_time(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_datetime(frame[column], unit="us", utc=True)
    return frame


def _load(spark: SparkSession, layout: DataDir, name: str) -> DataFrame:
    return spark.read.format("delta").load(str(layout.table(name)))


def _read_batches(spark: SparkSession, layout: DataDir) -> pd.DataFrame:
    table = _load(spark, layout, "batches")
    stamps = [f.name for f in table.schema.fields if f.dataType.typeName() == "timestamp"]
    columns = [F.unix_micros(F.col(c)).alias(c) if c in stamps else F.col(c) for c in table.columns]
    frame: pd.DataFrame = table.select(*columns).toPandas()
    return _micros_to_time(frame, stamps).sort_values("interval_start").reset_index(drop=True)


def _read_events(spark: SparkSession, layout: DataDir, inputs: ReportInputs) -> None:
    events = _load(spark, layout, "driver_events")
    inputs.event_types = {r["event_type"]: int(r["count"]) for r in events.groupBy("event_type").count().collect()}
    if inputs.realism_column("late_events") or inputs.realism_column("duplicate_events"):
        step = inputs.expected.interval_s
        key = (F.floor(F.unix_seconds("timestamp") / step) * step).alias("k")
        distinct = events.dropDuplicates(["event_id"]).groupBy(key).count().collect()
        inputs.event_time_counts = {int(r["k"]): int(r["count"]) for r in distinct}
    if inputs.realism_column("late_events"):
        seconds = (F.unix_micros("interval_start") - F.unix_micros("timestamp")) / 1e6
        late = events.filter(F.col("timestamp") < F.col("interval_start")).select(seconds.alias("s"))
        rows = late.groupBy(F.floor(F.col("s") / 60).alias("m")).agg(F.count("*").alias("n"), F.max("s").alias("x"))
        found = rows.collect()
        inputs.lateness_minutes = {int(r["m"]): int(r["n"]) for r in found}
        inputs.lateness_max_s = max((float(r["x"]) for r in found), default=None)
    if inputs.expected.event_model == "shift":
        inputs.shifts = shift_summary(events)


def shift_summary(events: DataFrame) -> pd.DataFrame:
    """One row per driver shift (driver_id, on_duty_s, driving_s, violations) of the shift event model.

    A gap of ``HOS_OFF_DUTY_S`` or more while stopped separates two shifts. Driving
    time runs from a ``start driving`` to the driver's next event; a violation is an event
    that breaks the duty cycle: ``start driving`` while driving, ``stopped driving`` while
    stopped, ``delivered`` while driving. The first event of a shift is not judged (the
    data may begin in the middle of one).
    """
    by_time = Window.partitionBy("driver_id").orderBy("timestamp", "event_id")
    before = by_time.rowsBetween(Window.unboundedPreceding, -1)
    moves = F.when(F.col("event_type").isin("start driving", "stopped driving"), F.col("event_type"))
    seconds = F.unix_micros("timestamp") / 1e6
    rows = (
        events.dropDuplicates(["event_id"])
        .select("driver_id", "event_id", "event_type", "timestamp", seconds.alias("t"))
        .withColumn("gap", F.col("t") - F.lag("t").over(by_time))
        .withColumn("state", F.last(moves, ignorenulls=True).over(before))  # the last move before this event
    )
    driving = F.col("state") == "start driving"
    # A long gap while driving is a long drive, not a rest: it does not end the shift.
    new = F.col("gap").isNull() | ((F.col("gap") >= HOS_OFF_DUTY_S) & ~F.coalesce(driving, F.lit(False)))
    rows = rows.withColumn("new", new.cast("int")).withColumn(
        "shift", F.sum("new").over(by_time.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    )
    violation = (
        (driving & F.col("event_type").isin("start driving", "delivered"))
        | ((F.col("state") == "stopped driving") & (F.col("event_type") == "stopped driving"))
    ) & (F.col("new") == 0)
    summary = rows.groupBy("driver_id", "shift").agg(
        (F.max("t") - F.min("t")).alias("on_duty_s"),
        F.sum(F.when(driving & (F.col("new") == 0), F.col("gap")).otherwise(0.0)).alias("driving_s"),
        F.sum(violation.cast("int")).alias("violations"),
    )
    frame: pd.DataFrame = summary.toPandas()
    return frame


def _read_companies(spark: SparkSession, layout: DataDir, inputs: ReportInputs, history: bool) -> None:
    table = _load(spark, layout, "companies")
    ticks = table.groupBy(F.unix_micros("created_at").alias("time")).agg(
        F.count("*").alias("n"), F.sum(F.col("active").cast("long")).alias("a")
    )
    by_tick: pd.DataFrame = ticks.toPandas()
    by_tick = by_tick.sort_values("time")
    frame = pd.DataFrame({"time": by_tick["time"], "onboarded": by_tick["n"].cumsum(), "active": by_tick["a"].cumsum()})
    inputs.companies_rows = int(by_tick["n"].sum())
    if history:
        frame = _active_from_history(spark, layout, frame)
        inputs.active_from_history = True
    inputs.companies = _micros_to_time(frame.reset_index(drop=True), ["time"])


def _active_from_history(spark: SparkSession, layout: DataDir, onboarded: pd.DataFrame) -> pd.DataFrame:
    """Active companies at each change, from the SCD type 2 table: +1 at valid_from, -1 at valid_to."""
    history = _load(spark, layout, "companies_history").filter(F.col("active"))
    starts = history.groupBy(F.unix_micros("valid_from").alias("time")).agg(F.count("*").alias("d"))
    ends = (
        history.filter(F.col("valid_to").isNotNull())
        .groupBy(F.unix_micros("valid_to").alias("time"))
        .agg((-F.count("*")).alias("d"))
    )
    changes: pd.DataFrame = starts.unionByName(ends).groupBy("time").agg(F.sum("d").alias("d")).toPandas()
    times = sorted(set(onboarded["time"]) | set(changes["time"]))
    steps = pd.DataFrame({"time": times})
    steps = steps.merge(changes, on="time", how="left").fillna({"d": 0})
    steps["active"] = steps["d"].cumsum().astype(int)
    steps = steps.merge(onboarded[["time", "onboarded"]], on="time", how="left")
    steps["onboarded"] = steps["onboarded"].ffill().fillna(0).astype(int)
    return steps[["time", "onboarded", "active"]]


def _read_discards(spark: SparkSession, layout: DataDir) -> dict[str, int]:
    rows = _load(spark, layout, "discarded_events").groupBy("source", "reason").count().collect()
    return {f"{r['source']}: {r['reason']}": int(r["count"]) for r in rows}


def read_durations(layout: DataDir) -> pd.DataFrame | None:
    """The "micro-batch done" records of the JSON logs (timestamp, duration_ms, intervals, events), oldest first."""
    rows: list[dict[str, Any]] = []
    for record in read_logs(layout, limit=2**62):
        meta = record.get("metadata") or {}
        if record.get("message") == "micro-batch done" and "duration_ms" in meta:
            rows.append(
                {
                    "timestamp": record.get("timestamp"),
                    "duration_ms": int(meta["duration_ms"]),
                    "intervals": int(meta.get("intervals", 0)),
                    "events": int(meta.get("events", 0)),
                }
            )
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
    return frame.sort_values("timestamp").reset_index(drop=True)


def _timed(progress: Progress, what: str, read: Callable[[], str]) -> None:
    began = time.monotonic()
    said = read()
    progress(f"read {what}: {said} ({time.monotonic() - began:.1f} s)")


def asked(layout: DataDir, config: Mapping[str, Any] | None = None) -> tuple[Dataset | None, Expected]:
    """The data directory's record and what it asked for (``config`` instead of the recorded one when given)."""
    dataset: Dataset | None = None
    try:
        dataset = read_dataset(layout)
        return dataset, Expected.from_config(config if config is not None else dataset.config if dataset else {})
    except FleetGenError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise DataDirError(
            f"{layout.location(DATASET_MD)}: cannot read the recorded config ({type(err).__name__}: {err}); "
            "pass --config with the config this directory was generated with"
        ) from err


def read_inputs(
    spark: SparkSession,
    layout: DataDir,
    config: Mapping[str, Any] | None = None,
    progress: Progress = print,
) -> ReportInputs:
    """Read what the report needs from ``layout``; ``config`` replaces the recorded one when given."""
    check_data_dir(layout, have_config=config is not None)
    dataset, expected = asked(layout, config)
    inputs = ReportInputs(
        data_dir=layout.shown(),
        expected=expected,
        seed=dataset.seed if dataset else None,
        start=iso(dataset.start) if dataset else None,
    )
    present = set(_present(layout))
    inputs.missing = [f"delta/{t}: not written yet" for t in TABLES if t not in present]

    def batches() -> str:
        inputs.batches = _read_batches(spark, layout)
        return f"{len(inputs.batches)} intervals"

    def events() -> str:
        _read_events(spark, layout, inputs)
        return f"{sum((inputs.event_types or {}).values())} events"

    def companies() -> str:
        _read_companies(spark, layout, inputs, "companies_history" in present)
        return f"{inputs.companies_rows} companies"

    def discards() -> str:
        inputs.discards = _read_discards(spark, layout)
        return f"{sum(inputs.discards.values())} records"

    for name, read in (("batches", batches), ("driver_events", events), ("companies", companies)):
        if name in present:
            _timed(progress, f"delta/{name}", read)
    if "discarded_events" in present:
        _timed(progress, "delta/discarded_events", discards)
    inputs.durations = read_durations(layout)
    logged = 0 if inputs.durations is None else len(inputs.durations)
    progress(f"read manifests/logs: {logged} micro-batch records")
    if inputs.durations is None:
        inputs.missing.append("manifests/logs: no 'micro-batch done' records")
    return inputs
