"""What several test modules share: one free-port helper, a Delta table's rows, and datasets built once.

A dataset (a data directory after a bounded backfill) costs seconds of Spark to build: six CREATE
TABLEs, the ledger jobs, a companies MERGE, then the micro-batches. `Datasets` builds each named one
once per test session; a test that reads it takes the original, a test that changes it takes a copy.
A data directory is relocatable: Delta's log names its files relative to the table, and a streaming
checkpoint holds offsets, a query id and no path (checked: no file of a built one names its folder).
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from fleetgen_spark.core.config import load_config
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.lock import release

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


# The process' own lock and lease: a copy is a new directory nobody holds yet.
_NOT_COPIED = shutil.ignore_patterns(".fleetgen.lock", ".fleetgen.lease")


class Datasets:
    """Data directories built once per session under ``root``, by name; handed out as is or copied."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, DataDir] = {}

    def get(self, name: str, build: Callable[[Path], object]) -> DataDir:
        """The dataset ``name``, built by ``build(folder)`` the first time. Read it, never change it."""
        if name not in self._built:
            folder = self.root / name
            build(folder)
            self._built[name] = DataDir(folder)
        return self._built[name]

    def copy(self, name: str, build: Callable[[Path], object], to: Path) -> DataDir:
        """A copy of the dataset ``name`` at ``to`` (which must not exist yet), to change at will."""
        shutil.copytree(self.get(name, build).root, to, ignore=_NOT_COPIED)
        return DataDir(to)


def living_backfill(spark: SparkSession, start: datetime, end: datetime) -> tuple[str, Callable[[Path], object]]:
    """The name and the build of a backfill of the living preset, 32 intervals a trigger: the README's
    `fleetgen backfill --config living` (test_living) and test_churn's uninterrupted run are this one."""

    def build(root: Path) -> None:
        Pipeline(
            spark, DataDir(root), load_config("living"), speedup="max", start=start, end=end,
            max_intervals_per_trigger=32,
        ).run_available_now()  # fmt: skip

    return f"living-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}-by-32", build


def small_backfill(
    spark: SparkSession, start: datetime, end: datetime, per_trigger: int
) -> tuple[str, Callable[[Path], object]]:
    """The name and the build of a backfill of the small preset as it ships, ``per_trigger`` intervals a
    trigger: the uninterrupted run that test_crash and test_storage compare a killed or submitted one with.
    The rows do not depend on how many intervals a trigger takes (test_exactly_once resumes by 1, 2 and 3
    and compares with a run by 4), so a reference takes its whole range in one or a few micro-batches."""

    def build(root: Path) -> None:
        layout = DataDir(root)
        Pipeline(
            spark, layout, load_config("small"), speedup="max", start=start, end=end,
            max_intervals_per_trigger=per_trigger,
        ).run_available_now()  # fmt: skip
        release(layout)  # read by the tests that share it, never written again

    return f"small-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}-by-{per_trigger}", build
