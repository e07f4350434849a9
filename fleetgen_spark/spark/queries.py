"""Running streaming queries from the outside: stop one after its micro-batch, read its state, forget
Delta's cached logs. What the service's controller does to the queries a pipeline started.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from fleetgen_spark.spark.failures import first_line
from fleetgen_spark.storage.logs import get_logger, log_event

__all__ = ["forget_delta_tables", "last_batch", "query_state", "stop_after_batch"]

_log = get_logger("service")  # the controller's component, as before these moved out of service/control.py


def stop_after_batch(query: StreamingQuery, grace_s: float, hurry: threading.Event) -> None:
    """Let the micro-batch in flight finish (waiting at most ``grace_s``, or until ``hurry``), then stop the query.

    While the clock is ahead Spark starts the next batch as soon as one ends, so the stop lands
    at that batch's very start, before its writes; after ``grace_s`` it cuts the batch in flight
    short. Both are safe: the batch's offsets are logged but not committed, the restart replays
    it with the same rows, and the sinks' idempotent writes skip what was already written.
    """
    deadline = time.monotonic() + grace_s
    # A query stopped while it initializes its sources leaves Spark's Python source runner to time out
    # connecting back (a CANNOT_OPEN_SOCKET traceback on stderr): let it get that far first.
    while query.isActive and query.status.get("message") == "Initializing sources" and not hurry.is_set():
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    in_flight = last_batch(query) + 1
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline and not hurry.is_set():
        if last_batch(query) >= in_flight:
            break
        time.sleep(0.05)
    try:
        query.stop()
    except Exception as err:  # a query that failed is stopped already; its error shows in /health
        log_event(_log, "query did not stop cleanly", logging.WARNING, name=query.name, error=str(err)[:500])


def last_batch(query: StreamingQuery) -> int:
    progress = query.lastProgress
    return int(progress.batchId) if progress is not None else -1


def query_state(query: StreamingQuery) -> dict[str, Any]:
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
        "exception": first_line(error) if error is not None else None,
    }


def forget_delta_tables(spark: SparkSession) -> None:
    """Drop Delta's cached table logs, so tables recreated at the same paths start from version 0."""
    try:
        jvm = spark._jvm
    except AttributeError:  # Spark Connect: no JVM handle (the server re-lists the log on the next write)
        return
    if jvm is None:
        return
    try:
        jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    except Exception as err:  # not fatal: Delta re-lists the log on the next write anyway
        log_event(_log, "could not clear Delta's table cache", error=str(err))
