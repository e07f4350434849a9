"""The Delta writes of the two queries: events appended exactly once per interval, companies MERGEd.

Both writers run inside ``foreachBatch`` and use public APIs only (no JVM handles), so they run on
a classic and on a Spark Connect session. Exactly once is by interval, through the ``batches``
ledger (see :mod:`fleetgen_spark.spark.ledger`), not by checkpoint: a replayed micro-batch, a query
whose checkpoint was deleted and a crash between two commits all write each interval once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from fleetgen_spark.core.churn import Churn, churn_of, inactive_spans
from fleetgen_spark.core.clock import batch_id, from_epoch, iso
from fleetgen_spark.core.company_rows import company_ids
from fleetgen_spark.core.config import EVENT_TYPES
from fleetgen_spark.core.exceptions import GenerationError
from fleetgen_spark.core.generate import EVENT_SCHEMA, EventSpec
from fleetgen_spark.core.messy import AnswerKey, answer_key, lookback
from fleetgen_spark.core.options import SourceOptions
from fleetgen_spark.core.schedule import OnboardingPlan
from fleetgen_spark.spark.checkpoint import epoch_range
from fleetgen_spark.spark.failures import batch_errors
from fleetgen_spark.spark.ledger import Ledger
from fleetgen_spark.spark.source import delivery_reach, event_specs
from fleetgen_spark.spark.tables import BATCHES_SCHEMA, DISCARDED_SCHEMA, retry_conflicts
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.dataset import event_shapes, onboarding_plan
from fleetgen_spark.storage.logs import ensure_logging, get_logger, log_event

__all__ = ["UUID_PATTERN", "EventsWriter", "append_table", "discard_rows", "log_discards"]

_log = get_logger("sink")

# An inactivity span still open ends after every interval (9999-12-31T23:59:59Z, Spark's last instant).
_END_OF_TIME_S = 253_402_300_799

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


def append_table(df: DataFrame, layout: DataDir, table: str, tag: str, merge_schema: bool = False) -> None:
    """Append to an existing table, retried on commit conflicts; ``tag`` shows in DESCRIBE HISTORY.

    ``merge_schema`` adds the columns a table created by an older release lacks (batches' answer key).
    """
    writer = df.write.format("delta").mode("append").option("userMetadata", tag)
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    retry_conflicts(lambda: writer.save(str(layout.table(table))), f"append {table}")


def discard_rows(df: DataFrame, source: str) -> DataFrame:
    """Invalid records as discarded_events rows: reason code and the raw record as JSON."""
    return df.select(
        F.current_timestamp().alias("discarded_at"),
        F.lit(source).alias("source"),
        F.col("_reason").alias("reason"),
        (F.col("batch_id") if "batch_id" in df.columns else F.lit(None).cast("string")).alias("batch_id"),
        F.to_json(F.struct(*[F.col(c) for c in df.columns if not c.startswith("_")])).alias("record"),
    )


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def log_discards(rows: list[Any], source: str) -> None:
    for row in rows:
        log_event(_log, "record discarded", source=source, reason=row["reason"], record=row["record"])


@dataclass
class EventsWriter:
    """``foreachBatch`` target of the events query: driver_events, discards, then the batches ledger.

    ``options`` are the events source's (with the dataset's seed); the onboarding plan is read
    again for every micro-batch, so a change recorded meanwhile governs the writer and the
    sources alike. ``wait_for_companies_s`` > 0 makes a micro-batch wait (at most that long) until
    the companies query has MERGEd every company eligible in its intervals.
    """

    layout: DataDir
    options: SourceOptions
    sim_start_s: int
    ledger: Ledger | None = None
    wait_for_companies_s: float = 0.0
    query: str = "driver_events"
    # (company count, DataFrame) of the last eligibility table built; see _company_created_at.
    _created: tuple[int, DataFrame] | None = field(default=None, init=False, repr=False, compare=False)
    # ((churn, companies, instants), DataFrame) of the last inactivity spans built; see _inactive_spans.
    _spans: tuple[tuple[Churn, int, int], DataFrame] | None = field(default=None, init=False, repr=False, compare=False)
    # (plan, spec per interval, delivery reach, allowed lateness s), see _messy.
    _specs: tuple[OnboardingPlan, Callable[[int], EventSpec], int, int] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def seed(self) -> int:
        seed = self.options.config.seed
        if seed is None:
            raise GenerationError("the events writer needs the dataset's seed")
        return seed

    @property
    def interval_s(self) -> int:
        return self.options.config.interval_seconds

    def __call__(self, df: DataFrame, epoch: int) -> None:
        ensure_logging(self.layout)  # on Spark Connect this runs in a Python worker of the server
        with batch_errors(self.query, epoch):
            self._write(df, epoch)

    def _write(self, df: DataFrame, epoch: int) -> None:
        began = time.monotonic()
        spark = df.sparkSession
        if self.ledger is None:
            self.ledger = Ledger.load(spark, self.layout)
        ledger = self.ledger
        epoch_from, to_s = epoch_range(self.layout, self.query, epoch)
        # The ledger's end, or the simulation start: every interval from there on must be written.
        from_s = self.sim_start_s if ledger.written_until is None else ledger.written_until
        if epoch_from > from_s:
            raise GenerationError(
                f"micro-batch {epoch} starts at {iso(from_epoch(epoch_from))}, after the last interval recorded "
                f"in {self.layout.table('batches')} ({iso(from_epoch(from_s))}): the intervals between would be "
                "lost; the checkpoint does not belong to these tables (remove checkpoints/ to resume from the tables)"
            )
        starts = list(range(from_s, to_s, self.interval_s))
        if not starts:
            return  # a replay of intervals the ledger has, or a micro-batch with no interval: nothing to write
        if epoch_from < from_s:
            df = df.filter(F.col("interval_start") >= F.lit(from_epoch(from_s)))
        plan = onboarding_plan(self.options, self.sim_start_s)
        self._wait_for_companies(plan, starts[-1])
        tag = f"fleetgen/{batch_id(from_epoch(starts[0]))}-{batch_id(from_epoch(starts[-1]))}"
        fresh = [s for s in starts if s not in ledger.orphans]
        if len(fresh) < len(starts):  # rows of these intervals reached driver_events before a crash
            df = df.filter(F.col("interval_start").cast("long").isin(*fresh))
        checked = self._validate(df, starts, plan)
        counts: dict[int, int] = {s: ledger.orphans.get(s, 0) for s in starts}
        invalid = 0
        appending = time.monotonic()
        if any(plan.onboarded_before(s) for s in fresh):
            appended, invalid = self._append_events(checked, fresh, tag)
            counts.update(appended)
        append_s = time.monotonic() - appending
        discarded = 0
        if invalid:
            bad = checked.filter(F.col("_reason").isNotNull()).drop("_created_at")
            if ledger.orphan_discards:
                bad = bad.filter(~F.col("interval_start").cast("long").isin(*ledger.orphan_discards))
            rows = discard_rows(bad, "events").collect()
            if rows:
                append_table(spark.createDataFrame(rows, DISCARDED_SCHEMA), self.layout, "discarded_events", tag)
                log_discards(rows, "events")
            discarded = len(rows)
        batch_rows = self._batch_rows(plan, starts, counts)
        recording = time.monotonic()
        append_table(spark.createDataFrame(batch_rows, BATCHES_SCHEMA), self.layout, "batches", tag, merge_schema=True)
        ledger.record(batch_rows, self.interval_s)
        timings = {
            "duration_ms": _ms(time.monotonic() - began),
            "append_ms": _ms(append_s),
            "ledger_ms": _ms(time.monotonic() - recording),
        }
        self._record(epoch, ledger, batch_rows, timings, discarded)

    def _wait_for_companies(self, plan: OnboardingPlan, last_start: int) -> None:
        """Hold the micro-batch (at most ``wait_for_companies_s``) until delta/companies has every company
        eligible in its intervals. Past that it goes on and says so: a stopped companies query (a pause
        stops both) must not hold a pause or a shutdown up."""
        if self.wait_for_companies_s <= 0:
            return
        needed = plan.onboarded_before(last_start)
        deadline = time.monotonic() + self.wait_for_companies_s
        while (self.layout.read_state().company_count or 0) < needed:
            if time.monotonic() > deadline:
                log_event(
                    _log,
                    "events written before their companies: the companies query is behind or stopped",
                    logging.WARNING,
                    needed=needed,
                    interval=iso(from_epoch(last_start)),
                    waited_s=self.wait_for_companies_s,
                )
                return
            time.sleep(0.1)

    def _append_events(self, checked: DataFrame, starts: list[int], tag: str) -> tuple[dict[int, int], int]:
        """Append the valid events; return rows per interval and invalid rows, seen in the same pass."""
        valid = F.col("_reason").isNull()
        observation = Observation(f"fleetgen-events-{tag}")
        names = [batch_id(from_epoch(s)) for s in starts]
        metrics = [F.count_if(valid & (F.col("batch_id") == b)).alias(b) for b in names]
        observed = checked.observe(observation, F.count_if(~valid).alias("_invalid"), *metrics)
        rows = observed.filter(valid).select(*EVENT_SCHEMA.names, F.to_date("timestamp").alias("event_date"))
        append_table(rows, self.layout, "driver_events", tag)
        # The source gave at least one partition (someone was eligible), so the metrics row exists.
        seen = observation.get
        return {s: int(seen[b]) for s, b in zip(starts, names, strict=True)}, int(seen["_invalid"])

    def _validate(self, df: DataFrame, starts: list[int], plan: OnboardingPlan) -> DataFrame:
        """Add ``_reason``: null for a valid event, else why it must not reach driver_events."""
        eligible_max = max((plan.onboarded_before(s) for s in starts), default=0)
        created = self._company_created_at(df.sparkSession, plan, eligible_max)
        joined = df.join(F.broadcast(created), on="company_id", how="left")
        churn = churn_of(self.options.config.company_churn_rate, plan)
        inactive = F.lit(False)
        if churn is not None:
            joined = self._join_inactive(joined, churn, eligible_max, starts[-1])
            inactive = F.col("_off_from").isNotNull()
        lateness = self._messy(plan)[2]
        # A late or re-sent event is valid up to max_lateness before its delivery interval (none while off).
        earliest = F.col("interval_start") - F.expr(f"INTERVAL {lateness} SECONDS")
        reason: Column = (
            F.when(F.col("truck_id").isNull(), F.lit("missing_truck_id"))
            .when(
                (F.col("timestamp") < earliest) | (F.col("timestamp") >= F.col("interval_end")),
                F.lit("timestamp_outside_interval"),
            )
            .when(~F.col("event_type").isin(*EVENT_TYPES), F.lit("unknown_event_type"))
            .when(
                F.col("_created_at").isNull() | (F.col("_created_at") >= F.col("interval_start")) | inactive,
                F.lit("company_not_eligible"),
            )
        )
        return joined.withColumn("_reason", reason).drop("_off_from", "_off_to")

    def _join_inactive(self, events: DataFrame, churn: Churn, count: int, last_start: int) -> DataFrame:
        """Add ``_off_from``: set when the event's company was inactive at the start of the event's own
        interval (the one its timestamp falls in: a late event was made while its company was active)."""
        step = self.interval_s
        own = F.timestamp_seconds(F.floor(F.unix_seconds("timestamp") / step) * step)
        spans = self._inactive_spans(events.sparkSession, churn, count, last_start)
        on = (F.col("company_id") == F.col("_company_id")) & (own >= F.col("_off_from")) & (own < F.col("_off_to"))
        # A company's spans never overlap, so an event matches at most one: no row is repeated.
        return events.join(F.broadcast(spans), on=on, how="left").drop("_company_id")

    def _inactive_spans(self, spark: SparkSession, churn: Churn, count: int, last_start: int) -> DataFrame:
        """(_company_id, _off_from, _off_to) of every span a company was inactive, up to ``last_start``;
        kept until a later onboarding instant or a bigger fleet can change it."""
        key = (churn, count, churn.plan.cadence_count(last_start + 1))
        if self._spans is not None and self._spans[0] == key:
            return self._spans[1]
        company, off_from, off_to = inactive_spans(self.seed, churn, count, last_start)
        us = pa.timestamp("us", tz="UTC")
        table = pa.table(
            {
                "_company_id": company_ids(self.seed, 0, count).take(pa.array(company)),
                "_off_from": pa.array(off_from * 1_000_000, type=us),
                "_off_to": pa.array(np.where(off_to < 0, _END_OF_TIME_S, off_to) * 1_000_000, type=us),
            }
        )
        # The schema given: Spark Connect cannot infer one from an empty table (no company inactive yet).
        frame = spark.createDataFrame(table, schema="_company_id string, _off_from timestamp, _off_to timestamp")
        self._spans = (key, frame)
        return frame

    def _company_created_at(self, spark: SparkSession, plan: OnboardingPlan, count: int) -> DataFrame:
        """(company_id, _created_at) of the first ``count`` companies, built in numpy/Arrow.

        Kept from one micro-batch to the next until a tick onboards more companies (a live
        query runs many intervals per tick): building it cost ~40 ms for 100 companies and
        grows with the fleet. A writer serves one run of one query, whose micro-batches all
        share one session, so the table stays valid for the writer's life.
        """
        if self._created is not None and self._created[0] == count:
            return self._created[1]
        created = np.zeros(count, dtype=np.int64)
        for tick in plan.ticks(plan.start, 2**62):
            if tick.first >= count:
                break
            created[tick.first : tick.first + tick.count] = tick.time * 1_000_000
        table = pa.table(
            {
                "company_id": company_ids(self.seed, 0, count),
                "_created_at": pa.array(created, type=pa.timestamp("us", tz="UTC")),
            }
        )
        # The schema given: Spark Connect cannot infer one from an empty table (nobody eligible yet).
        frame = spark.createDataFrame(table, schema="company_id string, _created_at timestamp")
        self._created = (count, frame)
        return frame

    def _messy(self, plan: OnboardingPlan) -> tuple[Callable[[int], EventSpec], int, int]:
        """(spec in force per interval, intervals a delivery looks back, seconds of lateness validation allows)."""
        if self._specs is None or self._specs[0] != plan:
            spec_at = event_specs(self.options, self.seed, plan)
            reach = delivery_reach(self.options, self.seed)
            specs = [spec_at(t) for t, _ in event_shapes(self.options)]
            lateness = max((s.max_lateness_s for s in specs if lookback(s)), default=0)
            self._specs = (plan, spec_at, reach, lateness)
        return self._specs[1:]

    def _answer_key(self, plan: OnboardingPlan, starts: list[int]) -> dict[int, AnswerKey]:
        """The late, duplicate and bad records of each interval, recomputed from the generation draws.

        Nothing to compute (and no Spark job either way) while every knob is off.
        """
        spec_at, reach, _ = self._messy(plan)
        if not reach and not any(spec_at(s).messy for s in starts):
            return {}
        return answer_key(spec_at, plan.onboarded_before, reach, starts)

    def _batch_rows(self, plan: OnboardingPlan, starts: list[int], counts: dict[int, int]) -> list[tuple[Any, ...]]:
        now = datetime.now().astimezone()
        keys = self._answer_key(plan, starts)
        rows = []
        for s in starts:
            bid = batch_id(from_epoch(s))
            eligible = plan.onboarded_before(s)
            total = plan.onboarded_before(s + self.interval_s)
            key = keys.get(s, AnswerKey())
            rows.append(
                (
                    bid,
                    from_epoch(s),
                    from_epoch(s + self.interval_s),
                    counts[s],
                    self.seed,
                    now,
                    eligible,
                    total,
                    key.late_events,
                    key.duplicate_events,
                    key.bad_records,
                )
            )
            log_event(
                _log,
                f"batch {bid} written",
                interval=f"{iso(from_epoch(s))}/{iso(from_epoch(s + self.interval_s))}",
                event_count=counts[s],
                eligible_companies_count=eligible,
                total_companies_count=total,
                seed=self.seed,
            )
        return rows

    def _record(
        self, epoch: int, ledger: Ledger, rows: list[tuple[Any, ...]], timings: dict[str, int], discarded: int
    ) -> None:
        """The manifest and the state file follow the ledger (written after the tables, never before).

        ``timings``: the whole micro-batch (``duration_ms``), its driver_events append with the
        validation it runs (``append_ms``) and its batches append (``ledger_ms``), for the log.
        """
        ledger.write_manifest(self.layout)
        self.layout.update_state(
            last_driver_batch=ledger.last_batch_id,
            last_driver_interval_end=iso(rows[-1][2]),
            batches_generated_count=ledger.batch_count,
        )
        log_event(
            _log,
            "micro-batch done",
            epoch=epoch,
            intervals=len(rows),
            events=sum(int(r[3]) for r in rows),
            discarded=discarded,
            **timings,
        )
