"""The two streaming queries of a data directory: onboarding into companies, events into Delta."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.listener import StreamingQueryListener
from pyspark.sql.streaming.query import StreamingQuery

from fleetgen_spark.core.clock import Clock, epoch_seconds, from_epoch, iso, parse_speedup
from fleetgen_spark.core.config import Config, format_duration
from fleetgen_spark.core.exceptions import GenerationError
from fleetgen_spark.core.options import parse_options
from fleetgen_spark.spark.failures import first_line
from fleetgen_spark.spark.ledger import Ledger
from fleetgen_spark.spark.scd import CompaniesWriter
from fleetgen_spark.spark.sink import EventsWriter
from fleetgen_spark.spark.tables import ensure_tables
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.dataset import Dataset, ensure_dataset, record_event_shape
from fleetgen_spark.storage.lock import hold, log_takeover
from fleetgen_spark.storage.logs import ensure_logging, get_logger, log_event

__all__ = ["COMPANIES_WAIT_S", "Pipeline", "ProgressListener", "first_line", "source_options"]

_log = get_logger("pipeline")


def source_options(config: Config, dataset: Dataset, layout: DataDir, **extra: str | None) -> dict[str, str]:
    """Every config field as a source option, plus the dataset's seed and start."""
    values = config.to_yaml_dict()
    options = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in values.items() if v is not None}
    options.update(seed=str(dataset.seed), start=iso(dataset.start), dataDir=layout.uri)
    if layout.conf:
        options["dataDirConf"] = json.dumps(layout.conf, sort_keys=True)
    options.update({k: v for k, v in extra.items() if v is not None})
    return options


class ProgressListener(StreamingQueryListener):
    """Logs every micro-batch's progress of the fleetgen queries, and a query that dies at ERROR.

    On Spark Connect the server runs a listener in a Python worker of its own: there its records go
    to the JSON log of ``data_dir`` only (see :func:`ensure_logging`).
    """

    def __init__(self, data_dir: DataDir) -> None:
        self.data_dir = data_dir

    def onQueryStarted(self, event: Any) -> None:
        ensure_logging(self.data_dir)
        log_event(_log, "query started", name=event.name, id=str(event.id))

    def onQueryProgress(self, event: Any) -> None:
        ensure_logging(self.data_dir)
        p = event.progress
        log_event(
            _log,
            "query progress",
            name=p.name,
            batch=p.batchId,
            rows=p.numInputRows,
            rows_per_s=round(p.processedRowsPerSecond or 0.0, 1),
            duration_ms=p.durationMs.get("triggerExecution"),
        )

    def onQueryIdle(self, event: Any) -> None:
        """Idle ticks are not worth a log line."""

    def onQueryTerminated(self, event: Any) -> None:
        """Logged at INFO, with the error when there is one: whoever runs the query (the service's
        watch, a command's wait) says at ERROR, once, that generation stopped."""
        ensure_logging(self.data_dir)
        details = {"error": first_line(event.exception)} if event.exception else {}
        log_event(_log, "query terminated", logging.INFO, id=str(event.id), **details)


@dataclass
class Pipeline:
    """The companies and events queries of one data directory, built from its dataset record.

    Building one takes the data directory for this process (``lock``), checks the directory's
    identity (seed, start, interval) and creates every table that does not exist yet.
    """

    spark: SparkSession
    layout: DataDir
    config: Config
    speedup: str = "1"
    end: datetime | None = None
    start: datetime | None = None
    max_intervals_per_trigger: int = 1
    num_partitions: int | None = None
    dataset: Dataset = field(init=False)
    _anchor: tuple[datetime, float] | None = field(default=None, init=False, repr=False)
    _queries: list[StreamingQuery] = field(default_factory=list, init=False, repr=False)
    _empty: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        log_takeover(hold(self.layout))
        self.dataset = ensure_dataset(self.layout, self.config, self.start)
        self.config = self.config.with_seed(self.dataset.seed)
        # Tables this pipeline has just created are empty until its queries run: no need to read them.
        self._empty = set(ensure_tables(self.spark, self.layout))
        written = self._ledger().written_until
        record_event_shape(self.layout, self.config, written, epoch_seconds(self.dataset.start))

    def _ledger(self) -> Ledger:
        return Ledger() if {"batches", "driver_events"} <= self._empty else Ledger.load(self.spark, self.layout)

    def options(self, **extra: str | None) -> dict[str, str]:
        return source_options(
            self.config,
            self.dataset,
            self.layout,
            speedup=self.speedup,
            end=iso(self.end) if self.end else None,
            **extra,
        )

    def _round(self) -> tuple[Ledger, dict[str, str]]:
        """What a query start needs to know: the ledger, and the clock anchor both queries share.

        A start with neither query running begins a new round: its simulated clock reads the
        first interval the tables lack at this wall-clock instant, for both queries alike.
        """
        ledger = self._ledger()
        ledger.write_manifest(self.layout)  # the manifest agrees with the tables from the start
        resume = ledger.written_until or epoch_seconds(self.dataset.start)
        if self._anchor is None or not any(q.isActive for q in self._queries):
            self._anchor = (from_epoch(resume), time.time())
        sim, wall = self._anchor
        return ledger, {"resumeFrom": iso(from_epoch(resume)), "clockAnchor": f"{iso(sim)}@{wall:.6f}"}

    def start_companies(self, available_now: bool = False) -> StreamingQuery:
        writer = CompaniesWriter(self.layout)
        _, extra = self._round()
        last = None
        if "companies" not in self._empty:
            table = self.spark.read.format("delta").load(self.layout.table("companies"))
            newest = F.coalesce("updated_at", "created_at").cast("long")  # ensure_tables gave old tables updated_at
            last = table.agg(F.max(newest).alias("m")).collect()[0]["m"]
        self._empty.discard("companies")
        # A new checkpoint begins after the last tick the table holds (the MERGE would skip it anyway).
        extra["resumeFrom"] = iso(from_epoch(int(last) + 1)) if last is not None else iso(self.dataset.start)
        # Catching up (a backfill, a resume after a long pause) takes several ticks per micro-batch:
        # with company churn every onboarding instant is a tick, each a MERGE of about a second.
        extra["maxIntervalsPerTrigger"] = str(self.max_intervals_per_trigger)
        reader = self.spark.readStream.format("fleetgen_companies").options(**self.options(**extra)).load()
        stream = (
            reader.writeStream.queryName(f"fleetgen_companies_{epoch_seconds(self.dataset.start)}")
            .option("checkpointLocation", self.layout.checkpoint(writer.query))
            .foreachBatch(writer)
        )
        return self._started((stream.trigger(availableNow=True) if available_now else stream).start())

    def start_events(self, available_now: bool = False) -> StreamingQuery:
        ledger, extra = self._round()
        self._empty -= {"batches", "driver_events", "discarded_events"}
        extra["maxIntervalsPerTrigger"] = str(self.max_intervals_per_trigger)
        if self.num_partitions:
            extra["numPartitions"] = str(self.num_partitions)
        options = self.options(**extra)
        writer = EventsWriter(
            self.layout,
            parse_options(options),
            epoch_seconds(self.dataset.start),
            ledger=ledger,
            # Live, the events of a new company wait for its MERGE (at high speedups a MERGE can
            # take longer than an interval of wall time); a backfill onboards everything first.
            wait_for_companies_s=0.0 if available_now else COMPANIES_WAIT_S,
        )
        reader = self.spark.readStream.format("fleetgen").options(**options).load()
        stream = (
            reader.writeStream.queryName(f"fleetgen_events_{epoch_seconds(self.dataset.start)}")
            .option("checkpointLocation", self.layout.checkpoint(writer.query))
            .foreachBatch(writer)
        )
        return self._started((stream.trigger(availableNow=True) if available_now else stream).start())

    def _started(self, query: StreamingQuery) -> StreamingQuery:
        self._queries = [q for q in self._queries if q.isActive] + [query]
        return query

    def run_available_now(
        self,
        on_progress: Callable[[StreamingQuery], None] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """Onboard every due tick and generate every available interval, then return; ``say`` hears
        what is under way.

        The two queries run side by side: the events writer checks eligibility against the
        onboarding plan, not the companies table, and a backfill does not wait for companies
        (``wait_for_companies_s`` 0), so neither needs the other to finish first. On 2 cores that
        overlaps the companies MERGE with the events query's first micro-batch (which starts once
        the companies query runs its first trigger, see :func:`_until_triggered`). A query that
        fails stops the other and raises :class:`GenerationError` with the cause in one line (the
        full error is in the JSON log).
        """
        if say is not None:
            say("onboarding companies and generating events ...")
        companies = self.start_companies(True)
        try:
            _until_triggered(companies)
            events = self.start_events(True)
        except BaseException:
            companies.stop()
            raise
        _await_all([companies, events], on_progress)

    def written_until(self) -> datetime | None:
        """The end of the last interval the tables hold (None: none yet)."""
        until = self._ledger().written_until
        return from_epoch(until) if until is not None else None

    def simulated_now(self) -> datetime | None:
        """The clock the queries follow, read now; None before they start, or with no pacing (``max``)."""
        speed = parse_speedup(self.speedup)
        if self._anchor is None or speed is None:
            return None
        return Clock(self.config.interval_seconds, speed).now(*self._anchor)

    def describe(self) -> dict[str, Any]:
        return {
            "data_dir": self.layout.uri,
            "seed": self.dataset.seed,
            "start": iso(self.dataset.start),
            "interval": format_duration(self.config.interval),
            "speedup": self.speedup,
            "end": iso(self.end) if self.end else None,
        }


# How long a live events micro-batch waits for the companies it needs (a MERGE takes 1-2 s here).
COMPANIES_WAIT_S = 10.0


# Spark waits 10 s, fixed, for a Python process it starts to connect back (PythonWorkerFactory),
# and each Python streaming source starts one on the driver when its query initialises. Two queries
# initialising at once on a busy 2-core machine were seen to miss it ("Python worker failed to
# connect back"), so the second query starts once the first is past its initialisation.
_TRIGGER_WAIT_S = 30.0


def _until_triggered(query: StreamingQuery) -> None:
    """Wait (at most ``_TRIGGER_WAIT_S``) until ``query`` runs its first trigger or has ended."""
    deadline = time.monotonic() + _TRIGGER_WAIT_S
    while query.isActive and not query.status["isTriggerActive"] and query.lastProgress is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _await_all(queries: list[StreamingQuery], on_progress: Callable[[StreamingQuery], None] | None) -> None:
    """Wait until every query has ended; ``on_progress`` hears the last one about once a second.

    The first query that fails stops the others and raises :class:`GenerationError` (what a stopped
    query had half written is finished exactly once by the next run: the ledger's orphans).
    """
    waiting = queries[0]
    try:
        while True:
            for waiting in queries:
                if not waiting.isActive:
                    waiting.awaitTermination()  # re-raises the query's error, if any
            active = [q for q in queries if q.isActive]
            if not active:
                return
            if on_progress is not None:
                on_progress(queries[-1])
            waiting = active[0]
            waiting.awaitTermination(1)
    except StreamingQueryException as err:
        cause = first_line(err)
        for other in queries:
            if other.isActive:
                other.stop()
        log_event(_log, "query failed: generation stopped", logging.ERROR, name=waiting.name, error=cause)
        raise GenerationError(f"the {waiting.name} query failed: {cause}") from None
