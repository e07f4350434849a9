"""The two streaming queries of a data directory: onboarding into companies, events into Delta."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming.listener import StreamingQueryListener
from pyspark.sql.streaming.query import StreamingQuery

from fleetgen_spark.clock import epoch_seconds, iso
from fleetgen_spark.config import Config, format_duration
from fleetgen_spark.dataset import Dataset, ensure_dataset, onboarding_plan
from fleetgen_spark.logs import get_logger, log_event
from fleetgen_spark.manifests import Layout
from fleetgen_spark.options import parse_options
from fleetgen_spark.sink import CompaniesWriter, EventsWriter
from fleetgen_spark.source import event_spec

__all__ = ["Pipeline", "ProgressListener", "source_options"]

_log = get_logger("pipeline")


def source_options(config: Config, dataset: Dataset, layout: Layout, **extra: str | None) -> dict[str, str]:
    """Every config field as a source option, plus the dataset's seed and start."""
    values = config.to_yaml_dict()
    options = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in values.items() if v is not None}
    options.update(seed=str(dataset.seed), start=iso(dataset.start), dataDir=str(layout.root))
    options.update({k: v for k, v in extra.items() if v is not None})
    return options


class ProgressListener(StreamingQueryListener):
    """Logs every micro-batch's progress of the fleetgen queries (Spark's own logs stay at WARN)."""

    def onQueryStarted(self, event: Any) -> None:
        log_event(_log, "query started", name=event.name, id=str(event.id))

    def onQueryProgress(self, event: Any) -> None:
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
        log_event(_log, "query terminated", id=str(event.id), error=event.exception)


@dataclass
class Pipeline:
    """The companies and events queries of one data directory, built from its dataset record."""

    spark: SparkSession
    layout: Layout
    config: Config
    speedup: str = "1"
    end: datetime | None = None
    start: datetime | None = None
    max_intervals_per_trigger: int = 1
    num_partitions: int | None = None
    dataset: Dataset = field(init=False)

    def __post_init__(self) -> None:
        self.dataset = ensure_dataset(self.layout, self.config, self.start)
        self.config = self.config.with_seed(self.dataset.seed)

    def options(self, **extra: str | None) -> dict[str, str]:
        return source_options(
            self.config,
            self.dataset,
            self.layout,
            speedup=self.speedup,
            end=iso(self.end) if self.end else None,
            **extra,
        )

    def start_companies(self, available_now: bool = False) -> StreamingQuery:
        writer = CompaniesWriter(self.layout)
        reader = self.spark.readStream.format("fleetgen_companies").options(**self.options()).load()
        stream = (
            reader.writeStream.queryName(f"fleetgen_companies_{epoch_seconds(self.dataset.start)}")
            .option("checkpointLocation", str(self.layout.checkpoint(writer.query)))
            .foreachBatch(writer)
        )
        return (stream.trigger(availableNow=True) if available_now else stream).start()

    def start_events(self, available_now: bool = False) -> StreamingQuery:
        opts = parse_options(self.options())
        plan = onboarding_plan(opts, epoch_seconds(self.dataset.start))
        writer = EventsWriter(self.layout, plan, event_spec(self.config, self.dataset.seed))
        extra = {"maxIntervalsPerTrigger": str(self.max_intervals_per_trigger)}
        if self.num_partitions:
            extra["numPartitions"] = str(self.num_partitions)
        reader = self.spark.readStream.format("fleetgen").options(**self.options(**extra)).load()
        stream = (
            reader.writeStream.queryName(f"fleetgen_events_{epoch_seconds(self.dataset.start)}")
            .option("checkpointLocation", str(self.layout.checkpoint(writer.query)))
            .foreachBatch(writer)
        )
        return (stream.trigger(availableNow=True) if available_now else stream).start()

    def run_available_now(self, on_progress: Callable[[StreamingQuery], None] | None = None) -> None:
        """Onboard every due tick, then generate every available interval, then return."""
        self.start_companies(True).awaitTermination()  # re-raises the query's error, if any
        query = self.start_events(True)
        while query.isActive:
            if on_progress is not None:
                on_progress(query)
            query.awaitTermination(1)
        query.awaitTermination()

    def describe(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.layout.root),
            "seed": self.dataset.seed,
            "start": iso(self.dataset.start),
            "interval": format_duration(self.config.interval),
            "speedup": self.speedup,
            "end": iso(self.end) if self.end else None,
        }
