"""The control state machine: start, pause, resume, clean and shut down one data directory's queries.

A :class:`Controller` holds the onboarding and events queries of a data directory and changes their
state one request at a time, saving and logging each change. Pausing stops the queries after their
current micro-batch; resuming starts them again from their checkpoints, so intervals missed meanwhile
are generated on resume and the dataset has no holes. The paused flag lives in
``manifests/generator_state.json`` and survives a restart. The REST API and the signals that drive a
controller live in :mod:`fleetgen_spark.service`.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from fleetgen_spark.clock import parse_speedup
from fleetgen_spark.config import Config
from fleetgen_spark.exceptions import FleetGenError, OptionError
from fleetgen_spark.logs import RUN_ID, get_logger, log_event
from fleetgen_spark.manifests import Layout, read_json, update_json
from fleetgen_spark.pipeline import Pipeline

__all__ = [
    "CLEANED",
    "SHUTDOWN_GRACE_S",
    "Controller",
    "ServiceError",
    "check_speedup",
]

CLEANED = ("delta", "checkpoints", "manifests")
# SIGTERM must end the process within 30 s: wait this long for a batch in flight, then cut it short.
SHUTDOWN_GRACE_S = 15.0
_log = get_logger("service")  # same component as service.py: the controller logs as part of the service


class ServiceError(FleetGenError):
    """A request the service cannot honour in its current state (answered with ``status_code``)."""

    def __init__(self, message: str, status_code: int = 409) -> None:
        super().__init__(message)
        self.status_code = status_code


def check_speedup(speedup: str) -> None:
    """The service follows a clock: ``max`` (everything up to an end, at once) is for ``fleetgen backfill``."""
    if parse_speedup(speedup) is None:
        raise OptionError(
            f"--speedup {speedup!r}: the service needs a paced clock, 1 (wall clock) or a number N > 1; "
            "use `fleetgen backfill --start ... --end ...` to generate a range at full speed"
        )


class Controller:
    """Starts, pauses, resumes and cleans the queries of one data directory; each change is saved and logged.

    Every change holds one lock, so a pause from a signal and a resume from the API run one after the other.
    """

    def __init__(
        self, spark: SparkSession, layout: Layout, config: Config, speedup: str = "1", stop_grace_s: float = 120.0
    ) -> None:
        check_speedup(speedup)
        self.spark = spark
        self.layout = layout
        self.config = config
        self.speedup = speedup
        self.stop_grace_s = stop_grace_s
        self.paused = False
        self.stopped = False
        self.started_at = time.monotonic()
        self._lock = threading.Lock()
        self._pipeline: Pipeline | None = None
        self._queries: dict[str, StreamingQuery] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover the saved state: a directory that was paused stays paused, otherwise both queries run."""
        saved = read_json(self.layout.state)
        with self._lock:
            self._pipeline = Pipeline(self.spark, self.layout, self.config, speedup=self.speedup)
            self.paused = saved.get("paused") is True
            if saved:
                self._event("RECOVER", "start", recovered_paused=self.paused, saved_at=saved.get("updated_at"))
            if not self.paused:
                self._start_queries()
            self.save()

    def pause(self, trigger: str) -> bool:
        """Stop both queries after their current micro-batch; False when already paused."""
        with self._lock:
            self._check_open()
            if self.paused:
                return False
            self._stop_queries()
            self.paused = True
            self.save()
            self._event("PAUSE", trigger)
            return True

    def resume(self, trigger: str) -> bool:
        """Start the queries again from their checkpoints; False when they are all running already."""
        with self._lock:
            self._check_open()
            if not self.paused and all(q.isActive for q in self._queries.values()) and self._queries:
                return False
            if self._pipeline is None:  # cleaned: a fresh dataset starts now
                self._pipeline = Pipeline(self.spark, self.layout, self.config, speedup=self.speedup)
            self._start_queries()
            self.paused = False
            self.save()
            self._event("RESUME", trigger)
            return True

    def clean(self, trigger: str) -> list[str]:
        """Remove tables, checkpoints and manifests of a paused service; it stays paused."""
        with self._lock:
            self._check_open()
            if not self.paused or any(q.isActive for q in self._queries.values()):
                raise ServiceError("clean needs a paused service: POST /pause (or `fleetgen pause`) first, then clean")
            removed = [name for name in CLEANED if (self.layout.root / name).exists()]
            for name in CLEANED:
                _remove_tree(self.layout.root / name)
            self._pipeline = None
            self._queries = {}
            _forget_delta_tables(self.spark)
            self.save()
            self._event("CLEAN", trigger, removed=removed)
            return removed

    def shutdown(self, trigger: str) -> None:
        """Stop the queries for good, keeping the paused flag as it was for the next start."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
            self._stop_queries(min(self.stop_grace_s, SHUTDOWN_GRACE_S))
            self.save()
            self._event("SHUTDOWN", trigger)

    # -- state ------------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the service's part of generator_state.json (the sinks write the batch part)."""
        update_json(
            self.layout.state, paused=self.paused, status=self.status, service_run_id=RUN_ID, service_pid=os.getpid()
        )

    @property
    def status(self) -> str:
        return "paused" if self.paused else "running"

    def counts(self) -> dict[str, Any]:
        manifest = read_json(self.layout.batch_manifest)
        state = read_json(self.layout.state)
        return {
            "batches_generated_count": int(manifest.get("batch_count", 0)),
            "total_events": int(manifest.get("total_events", 0)),
            "last_driver_batch": state.get("last_driver_batch"),
            "last_company_batch": state.get("last_company_batch"),
        }

    def health(self) -> dict[str, Any]:
        """What GET /health answers; reads files and query handles only, so it never waits for the lock."""
        state = read_json(self.layout.state)
        pipeline = self._pipeline
        return {
            "status": self.status,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "pid": os.getpid(),  # for kill -USR1 / -USR2
            **self.counts(),
            "last_company_batch_time": state.get("last_company_tick"),
            "last_driver_batch_time": _batch_start(state.get("last_driver_batch")),
            "last_generated_at": read_json(self.layout.batch_manifest).get("last_updated"),
            "dataset": pipeline.describe() if pipeline is not None else None,
            "queries": {role: _query_state(q) for role, q in dict(self._queries).items()},
        }

    # -- inside the lock --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.stopped:
            raise ServiceError("the service is shutting down", status_code=503)

    def _start_queries(self) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("no pipeline to start")
        starters: dict[str, Callable[[], StreamingQuery]] = {
            "companies": pipeline.start_companies,
            "events": pipeline.start_events,
        }
        try:
            for role, start in starters.items():
                query = self._queries.get(role)
                if query is None or not query.isActive:
                    self._queries[role] = start()
        except Exception as err:  # half a pipeline is worse than none: stop what did start
            self._stop_queries(0.0)
            first_line = _first_line(err)
            log_event(_log, "could not start the queries", logging.ERROR, error=first_line)
            raise ServiceError(f"could not start the queries: {first_line}", status_code=500) from err

    def _stop_queries(self, grace_s: float | None = None) -> None:
        grace = self.stop_grace_s if grace_s is None else grace_s
        active = [q for q in self._queries.values() if q.isActive]
        with ThreadPoolExecutor(max_workers=max(1, len(active))) as pool:
            for done in [pool.submit(_stop_after_batch, q, grace) for q in active]:
                done.result()

    def _event(self, name: str, trigger: str, **metadata: Any) -> None:
        log_event(_log, name, event=name, trigger=trigger, status=self.status, **self.counts(), **metadata)


def _stop_after_batch(query: StreamingQuery, grace_s: float) -> None:
    """Let the micro-batch in flight finish (waiting at most ``grace_s``), then stop the query.

    While the clock is ahead Spark starts the next batch as soon as one ends, so the stop lands
    at that batch's very start, before its writes; after ``grace_s`` it cuts the batch in flight
    short. Both are safe: the batch's offsets are logged but not committed, the restart replays
    it with the same rows, and the sinks' idempotent writes skip what was already written.
    """
    in_flight = _last_batch(query) + 1
    deadline = time.monotonic() + grace_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        if _last_batch(query) >= in_flight:
            break
        time.sleep(0.05)
    try:
        query.stop()
    except Exception as err:  # a query that failed is stopped already; its error shows in /health
        log_event(_log, "query did not stop cleanly", logging.WARNING, name=query.name, error=str(err)[:500])


def _last_batch(query: StreamingQuery) -> int:
    progress = query.lastProgress
    return int(progress.batchId) if progress is not None else -1


def _query_state(query: StreamingQuery) -> dict[str, Any]:
    """A query's Spark state with Spark's own names: id, runId, name, isActive, status, lastProgress."""
    progress = query.lastProgress
    error = query.exception() if not query.isActive else None
    return {
        "id": str(query.id),
        "runId": str(query.runId),
        "name": query.name,
        "isActive": query.isActive,
        "status": dict(query.status),
        "lastProgress": (
            {"batchId": progress.batchId, "timestamp": progress.timestamp, "numInputRows": progress.numInputRows}
            if progress is not None
            else None
        ),
        "exception": _first_line(getattr(error, "desc", error)) if error is not None else None,
    }


def _first_line(error: Any) -> str:
    """A Spark error's first line (its full text carries Python and JVM stack traces)."""
    text = str(error).strip()
    return text.splitlines()[0][:500] if text else type(error).__name__


def _batch_start(batch_id: Any) -> str | None:
    """``20251108T141500Z`` as ``2025-11-08T14:15:00Z``."""
    if not isinstance(batch_id, str):
        return None
    try:
        moment = datetime.strptime(batch_id, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _remove_tree(path: Path) -> None:
    """rmtree that retries: a log line written meanwhile may recreate a folder under manifests/."""
    for attempt in range(5):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.1 * (attempt + 1))
    shutil.rmtree(path)


def _forget_delta_tables(spark: SparkSession) -> None:
    """Drop Delta's cached table logs, so tables recreated at the same paths start from version 0."""
    jvm = spark._jvm
    if jvm is None:  # Spark Connect keeps no table cache in this process
        return
    try:
        jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    except Exception as err:  # not fatal: Delta re-lists the log on the next write anyway
        log_event(_log, "could not clear Delta's table cache", error=str(err))
