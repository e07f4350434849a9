"""The Delta tables of a data directory: their schemas, their creation, and retried writes.

Every table exists (empty) from the pipeline's first run, so a notebook can read any of them at
once. Tables are created with SQL (``CREATE TABLE IF NOT EXISTS delta.`path```), which works on a
classic and a Spark Connect session alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import BooleanType, DateType, LongType, StringType, StructField, StructType, TimestampType

from fleetgen_spark.core.company_rows import COMPANY_SCHEMA
from fleetgen_spark.core.generate import EVENT_SCHEMA
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import get_logger, log_event

__all__ = [
    "BATCHES_SCHEMA",
    "COMPANIES_HISTORY_SCHEMA",
    "COMPANIES_SCHEMA",
    "DISCARDED_SCHEMA",
    "EVENT_STATS_COLUMNS",
    "TABLES",
    "ensure_tables",
    "is_conflict",
    "retry_conflicts",
    "sql_path",
]

_log = get_logger("sink")
T = TypeVar("T")

# Delta statistics only where they can skip files: times, interval and type. The ids are random
# UUIDs, so their per-file min/max span everything; collecting them cost ~1 us/row (measured).
EVENT_STATS_COLUMNS = "timestamp,batch_id,interval_start,interval_end,event_type"

# The tables hold what the sources make (the same Arrow schemas, so they can never drift apart);
# driver_events adds the date it is partitioned by.
EVENTS_TABLE_SCHEMA = StructType([*from_arrow_schema(EVENT_SCHEMA).fields, StructField("event_date", DateType(), True)])
COMPANIES_SCHEMA = from_arrow_schema(COMPANY_SCHEMA)

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
        # The answer key of the realism knobs (0 while off). Nullable: a table written before they
        # existed gains them by schema evolution, its older rows null.
        StructField("late_events", LongType(), True),
        StructField("duplicate_events", LongType(), True),
        StructField("bad_records", LongType(), True),
    ]
)

# SCD type 2 of the companies: one row per version, valid in [valid_from, valid_to); the current one open.
COMPANIES_HISTORY_SCHEMA = StructType(
    [
        *[f for f in COMPANIES_SCHEMA.fields if f.name != "updated_at"],
        StructField("valid_from", TimestampType(), False),
        StructField("valid_to", TimestampType(), True),
        StructField("is_current", BooleanType(), False),
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

# name -> (schema, partition column, table properties)
# Change Data Feed on the companies tables: a downstream stream reads their changes (readChangeFeed).
_CDF = {"delta.enableChangeDataFeed": "true"}
TABLES: dict[str, tuple[StructType, str | None, dict[str, str]]] = {
    "companies": (COMPANIES_SCHEMA, None, _CDF),
    "companies_history": (COMPANIES_HISTORY_SCHEMA, None, _CDF),
    "driver_events": (EVENTS_TABLE_SCHEMA, "event_date", {"delta.dataSkippingStatsColumns": EVENT_STATS_COLUMNS}),
    "batches": (BATCHES_SCHEMA, None, {}),
    "discarded_events": (DISCARDED_SCHEMA, None, {}),
}


def sql_path(layout: DataDir, table: str) -> str:
    """``delta.`path``` of a table, for SQL (a backtick in the path is doubled, as SQL quotes it)."""
    return "delta.`" + str(layout.table(table)).replace("`", "``") + "`"


def _create_sql(layout: DataDir, name: str) -> str:
    schema, partition, properties = TABLES[name]
    columns = ", ".join(
        f"`{f.name}` {f.dataType.simpleString().upper()}{'' if f.nullable else ' NOT NULL'}" for f in schema.fields
    )
    sql = f"CREATE TABLE IF NOT EXISTS {sql_path(layout, name)} ({columns}) USING delta"
    if partition:
        sql += f" PARTITIONED BY ({partition})"
    if properties:
        sql += " TBLPROPERTIES (" + ", ".join(f"'{k}' = '{v}'" for k, v in properties.items()) + ")"
    return sql


def ensure_tables(spark: SparkSession, layout: DataDir) -> list[str]:
    """Create every table of the data directory that does not exist yet (empty); name those created.

    A companies table written by an older release gains what this one expects (``updated_at``,
    Change Data Feed), and a new companies_history starts from the companies already there.
    """
    created = [name for name in TABLES if not layout.has_commits(name)]
    # Side by side: each CREATE is a commit of its own, and on a new JVM most of one is loading the
    # classes they all need (the first took ~5 s, the next ones ~0.5 s each on 2 cores).
    with ThreadPoolExecutor(max_workers=max(1, len(created)), thread_name_prefix="fleetgen-create") as pool:
        futures = [
            pool.submit(retry_conflicts, lambda name=name: spark.sql(_create_sql(layout, name)), f"create {name}")
            for name in created
        ]
    for future in futures:
        future.result()  # the first error, if any, as it was raised
    if "companies" not in created:
        _upgrade_companies(spark, layout, history_created="companies_history" in created)
    return created


def _upgrade_companies(spark: SparkSession, layout: DataDir, history_created: bool) -> None:
    companies = sql_path(layout, "companies")
    if "updated_at" not in spark.read.format("delta").load(str(layout.table("companies"))).columns:
        # Every version so far was a company's first: updated_at = created_at.
        spark.sql(f"ALTER TABLE {companies} ADD COLUMNS (updated_at TIMESTAMP)")
        spark.sql(f"UPDATE {companies} SET updated_at = created_at")
        spark.sql(f"ALTER TABLE {companies} SET TBLPROPERTIES ('delta.enableChangeDataFeed' = 'true')")
    if history_created:
        spark.sql(
            f"INSERT INTO {sql_path(layout, 'companies_history')} SELECT company_id, company_name, geography, "
            f"active, created_at, updated_at AS valid_from, NULL AS valid_to, true AS is_current FROM {companies}"
        )


# Delta's optimistic-concurrency conflicts, by error condition: another writer committed first and
# a retry sees its rows. A table being created by another writer also counts (its directory exists
# before its first commit).
_CONFLICT_CONDITIONS = (
    "DELTA_CONCURRENT",  # DELTA_CONCURRENT_APPEND, _WRITE, _DELETE_READ, _TRANSACTION, ...
    "DELTA_PROTOCOL_CHANGED",
    "DELTA_METADATA_CHANGED",
    "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION",
    "DELTA_TABLE_NOT_FOUND",
    "DELTA_PATH_EXISTS",
    "TABLE_OR_VIEW_ALREADY_EXISTS",
)


def _condition(err: BaseException) -> str:
    get = getattr(err, "getCondition", None)
    java = getattr(err, "java_exception", None)
    if get is None and java is not None:  # a Py4JJavaError that PySpark did not convert (seen from threads)
        get = java.getCondition
    try:
        return str(get() or "") if callable(get) else ""
    except Exception:  # an error object without a JVM behind it any more
        return ""


def is_conflict(err: BaseException) -> bool:
    """Whether ``err`` is a Delta commit conflict that a retry resolves (typed, not by message)."""
    from delta.exceptions import base

    # Delta's Python conflict classes are siblings, not subclasses of one base: name them all.
    conflicts = (
        base.DeltaConcurrentModificationException,
        base.ConcurrentWriteException,
        base.MetadataChangedException,
        base.ProtocolChangedException,
        base.ConcurrentAppendException,
        base.ConcurrentDeleteReadException,
        base.ConcurrentDeleteDeleteException,
        base.ConcurrentTransactionException,
    )
    if isinstance(err, conflicts):
        return True
    condition = _condition(err)
    return any(condition.startswith(c) for c in _CONFLICT_CONDITIONS)


def retry_conflicts(action: Callable[[], T], what: str, attempts: int = 8) -> T:
    """Run a Delta write, retrying (with a growing pause) while a concurrent writer wins the commit."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as err:
            if attempt == attempts or not is_conflict(err):
                raise
            log_event(_log, f"{what}: concurrent writer, retrying", logging.WARNING, attempt=attempt)
            time.sleep(0.2 * attempt)
    raise RuntimeError("unreachable")
