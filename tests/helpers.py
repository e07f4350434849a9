"""What several test modules share: one free-port helper, a Delta table and its rows."""

from __future__ import annotations

import socket

from pyspark.sql import DataFrame, SparkSession

from fleetgen_spark.datadir import DataDir

# Changes every run (the wall clock at write time), so never part of a row comparison.
VOLATILE_COLUMNS = ("generation_time", "discarded_at")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def table(spark: SparkSession, layout: DataDir, name: str, version: int | None = None) -> DataFrame:
    """One Delta table of a data directory, at its latest version or at ``version``."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(str(layout.table(name)))


def rows(
    spark: SparkSession, layout: DataDir, name: str, drop: tuple[str, ...] = VOLATILE_COLUMNS
) -> list[tuple[object, ...]]:
    """A table's rows, sorted, columns in name order, without the columns in ``drop``."""
    df = table(spark, layout, name)
    df = df.drop(*[c for c in drop if c in df.columns])
    return sorted(tuple(r) for r in df.select(sorted(df.columns)).collect())
