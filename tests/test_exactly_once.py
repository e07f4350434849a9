"""Exactly once by interval: whatever happens to checkpoints, the Delta log or a second process.

Each scenario ends compared row for row with an uninterrupted run of the same range.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import Datasets
from helpers import rows as _rows
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fleetgen_spark import ConfigError, OptionError, load_config
from fleetgen_spark.datadir import DataDir
from fleetgen_spark.dataset import check_start, ensure_dataset
from fleetgen_spark.exceptions import GenerationError
from fleetgen_spark.lock import DataDirBusy, hold, release
from fleetgen_spark.manifests import read_json
from fleetgen_spark.pipeline import Pipeline
from fleetgen_spark.tables import TABLES, sql_path

START = datetime(2025, 11, 8, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parent.parent
# Gradual onboarding, so companies keep arriving inside the range.
SMALL = {"companies_per_onboarding": 2, "company_onboarding_interval": "PT1H"}


def _pipeline(spark: SparkSession, data_dir: Path | DataDir, hours: float, **kwargs: object) -> Pipeline:
    return Pipeline(
        spark,
        data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir),
        load_config("small", **SMALL),
        speedup="max",
        start=START,
        end=START + timedelta(hours=hours),
        **kwargs,  # type: ignore[arg-type]
    )


def _backfill(spark: SparkSession, data_dir: Path | DataDir, hours: float, **kwargs: object) -> Pipeline:
    pipeline = _pipeline(spark, data_dir, hours, **kwargs)
    pipeline.run_available_now()
    return pipeline


def _copy_of_backfill(spark: SparkSession, datasets: Datasets, hours: float, per_trigger: int, to: Path) -> DataDir:
    """A copy, at ``to``, of the session's one backfill of ``hours`` by ``per_trigger`` intervals a trigger."""
    return datasets.copy(
        f"exactly-once-{hours}h-by-{per_trigger}",
        lambda root: _backfill(spark, root, hours, max_intervals_per_trigger=per_trigger),
        to,
    )


def reference_backfill(spark: SparkSession, datasets: Datasets) -> DataDir:
    """The session's uninterrupted backfill of three hours (shared with test_storage). Read only."""
    return datasets.get("exactly-once-3h-by-4", lambda root: _backfill(spark, root, 3, max_intervals_per_trigger=4))


def _assert_equal_to(spark: SparkSession, got: DataDir, reference: DataDir) -> None:
    for table in ("driver_events", "batches", "companies", "discarded_events"):
        assert _rows(spark, got, table) == _rows(spark, reference, table), table
    events = spark.read.format("delta").load(str(got.table("driver_events")))
    assert events.select("event_id").distinct().count() == events.count()
    batches = spark.read.format("delta").load(str(got.table("batches")))
    manifest = got.read_manifest()
    assert manifest.batch_count == batches.count()
    assert manifest.total_events == events.count()
    assert manifest.last_batch_id == batches.agg(F.max("batch_id")).collect()[0][0]


@pytest.fixture(scope="module")
def reference(spark: SparkSession, datasets: Datasets) -> DataDir:
    """An uninterrupted backfill of three hours."""
    return reference_backfill(spark, datasets)


@pytest.mark.parametrize("removed", ["all", "driver_events", "companies"])
def test_deleted_checkpoints_resume_after_the_ledger(
    spark: SparkSession, datasets: Datasets, tmp_path: Path, reference: DataDir, removed: str
) -> None:
    layout = _copy_of_backfill(spark, datasets, 2, 3, tmp_path / "data")
    shutil.rmtree(layout.root / "checkpoints" / ("" if removed == "all" else removed))
    _backfill(spark, layout, 2, max_intervals_per_trigger=3)  # the same command again: nothing to add
    _backfill(spark, layout, 3, max_intervals_per_trigger=2)  # and on to the end
    _assert_equal_to(spark, layout, reference)


def test_a_crash_between_the_two_commits_of_a_micro_batch(
    spark: SparkSession, datasets: Datasets, tmp_path: Path, reference: DataDir
) -> None:
    """driver_events committed, batches not, Spark's commit log not: the replay records, never re-appends."""
    layout = _copy_of_backfill(spark, datasets, 2, 4, tmp_path / "data")
    batches = sql_path(layout, "batches")
    version = spark.sql(f"DESCRIBE HISTORY {batches}").agg(F.max("version")).collect()[0][0]
    spark.sql(f"RESTORE TABLE {batches} TO VERSION AS OF {version - 1}")
    commits = Path(layout.checkpoint("driver_events")) / "commits"
    last = max(commits.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    last.unlink()
    (commits / f".{last.name}.crc").unlink(missing_ok=True)  # Hadoop's checksum beside it
    assert spark.read.format("delta").load(str(layout.table("batches"))).count() == 4  # 8 intervals, 4 lost
    _backfill(spark, layout, 3, max_intervals_per_trigger=4)
    _assert_equal_to(spark, layout, reference)


def test_the_same_crash_with_the_checkpoints_gone(
    spark: SparkSession, datasets: Datasets, tmp_path: Path, reference: DataDir
) -> None:
    layout = _copy_of_backfill(spark, datasets, 2, 4, tmp_path / "data")
    batches = sql_path(layout, "batches")
    version = spark.sql(f"DESCRIBE HISTORY {batches}").agg(F.max("version")).collect()[0][0]
    spark.sql(f"RESTORE TABLE {batches} TO VERSION AS OF {version - 1}")
    shutil.rmtree(layout.root / "checkpoints")
    _backfill(spark, layout, 3, max_intervals_per_trigger=1)
    _assert_equal_to(spark, layout, reference)


def test_delta_log_cleanup_and_maintenance_then_a_replay(
    spark: SparkSession, tmp_path: Path, reference: DataDir
) -> None:
    layout = _backfill(spark, tmp_path, 2, max_intervals_per_trigger=1).layout
    tables = ("driver_events", "batches")
    for table in tables:
        path = sql_path(layout, table)
        spark.sql(
            f"ALTER TABLE {path} SET TBLPROPERTIES ('delta.logRetentionDuration' = 'interval 0 hours', "
            "'delta.checkpointInterval' = '2', 'delta.deletedFileRetentionDuration' = 'interval 0 hours')"
        )
        spark.sql(f"OPTIMIZE {path}")
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        for table in tables:
            spark.sql(f"VACUUM {sql_path(layout, table)} RETAIN 0 HOURS")
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    _backfill(spark, tmp_path, 2.5, max_intervals_per_trigger=1)  # commits enough for a Delta checkpoint
    # Delta's log cleanup cuts off at a whole day (it truncates the cutoff time to the day) and keeps
    # everything after the newest checkpoint older than that: age the log by three days, and the
    # next checkpoint's cleanup removes every commit file before the aged checkpoint.
    aged = time.time() - 3 * 86400
    for table in tables:
        for path in (Path(layout.table(table)) / "_delta_log").iterdir():
            os.utime(path, (aged, aged))
    _backfill(spark, tmp_path, 3, max_intervals_per_trigger=1)
    # driver_events is where a replay would append twice. (Its log is cleaned here; the batches log,
    # with the same settings, kept its files at its next checkpoint: not needed by the scenario.)
    first_commit = Path(layout.table("driver_events")) / "_delta_log" / f"{0:020d}.json"
    assert not first_commit.exists(), "the log cleanup did not run: the scenario tests nothing"
    shutil.rmtree(layout.root / "checkpoints")
    _backfill(spark, tmp_path, 3, max_intervals_per_trigger=2)
    _assert_equal_to(spark, layout, reference)


def test_every_table_exists_after_a_clean_run(spark: SparkSession, reference: DataDir) -> None:
    layout = reference  # a clean run: read only
    for table in TABLES:
        spark.read.format("delta").load(str(layout.table(table))).count()
    assert spark.read.format("delta").load(str(layout.table("discarded_events"))).count() == 0


def test_a_checkpoint_that_skips_recorded_intervals_fails_loudly(
    spark: SparkSession, datasets: Datasets, tmp_path: Path
) -> None:
    layout = _copy_of_backfill(spark, datasets, 2, 4, tmp_path / "data")
    spark.sql(f"RESTORE TABLE {sql_path(layout, 'batches')} TO VERSION AS OF 0")  # the ledger is empty again
    with pytest.raises(GenerationError) as caught:
        _backfill(spark, layout, 3)
    message = str(caught.value)
    assert "\n" not in message and "query failed" in message and "would be lost" in message


def test_identity_is_enforced(tmp_path: Path) -> None:
    layout = DataDir(tmp_path)
    dataset = ensure_dataset(layout, load_config("small"), START)
    with pytest.raises(ConfigError, match=r"interval PT30M differs from the interval PT15M recorded"):
        ensure_dataset(layout, load_config("small", interval="PT30M"), START)
    with pytest.raises(ConfigError, match=r"seed 7 differs from the seed 100 recorded"):
        ensure_dataset(layout, load_config("small", seed=7), START)
    with pytest.raises(ConfigError, match=r"start 2025-11-08T01:00:00Z differs from the start 2025-11-08T00:00:00Z"):
        check_start(layout, dataset, START + timedelta(hours=1))


def test_an_unsupported_data_directory_is_refused_in_one_line() -> None:
    allowed = "use a local path, file:, s3a://bucket/prefix or hdfs://host:port/path"
    for uri in ("abfss://c@a.dfs.core.windows.net/x", "dbfs:/tmp/fleet", "gs://bucket/x", "s3://bucket/x"):
        with pytest.raises(OptionError, match="is not supported") as refused:
            DataDir(uri)
        assert allowed in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(OptionError, match="write it s3a://"):
        DataDir("s3://bucket/x")


def test_a_file_uri_is_a_local_data_directory(tmp_path: Path) -> None:
    assert DataDir(f"file://{tmp_path}").root == DataDir(tmp_path).root == tmp_path.resolve()
    assert DataDir(f"file:{tmp_path}").table("batches") == str(tmp_path.resolve() / "delta" / "batches")


def test_the_lock_is_per_directory_and_reentrant(tmp_path: Path) -> None:
    layout = DataDir(tmp_path)
    hold(layout, "test")
    hold(layout, "test again")  # the same process may build several pipelines on one directory
    assert f"pid {os.getpid()} (test)" in layout.lock_path.read_text()
    release(layout)
    code = "import sys; from fleetgen_spark import datadir, lock; lock.hold(datadir.DataDir(sys.argv[1]))"
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


def test_a_second_process_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    layout = DataDir(tmp_path / "busy")
    hold(layout, "fleetgen run --config small")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fleetgen_spark.cli", "backfill", "--config", "small",
             "--start", "2025-11-08T00:00:00Z", "--end", "2025-11-08T01:00:00Z", "--data-dir", str(layout.root)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        release(layout)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"fleetgen backfill: error: data directory {layout.root} is in use by pid {os.getpid()} "
        "(fleetgen run --config small); one fleetgen process writes a data directory at a time: "
        "stop it, or use another --data-dir"
    ]
    assert sorted(p.name for p in layout.root.iterdir()) == [".fleetgen.lock"]


def test_busy_is_a_fleetgen_error() -> None:
    assert issubclass(DataDirBusy, ValueError)


@pytest.mark.slow
def test_two_racing_events_now_leave_no_duplicate(spark: SparkSession, tmp_path: Path) -> None:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    command = [
        sys.executable, "-m", "fleetgen_spark.cli", "events", "--now", "--config", "small",
        "--data-dir", str(tmp_path), "--master", "local[1]",
    ]  # fmt: skip
    procs = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "is in use by pid" in refused and "Traceback" not in refused
    events = spark.read.format("delta").load(str(DataDir(tmp_path).table("driver_events")))
    assert events.count() == events.select("event_id").distinct().count()
    batches = spark.read.format("delta").load(str(DataDir(tmp_path).table("batches")))
    assert batches.count() == batches.select("batch_id").distinct().count() >= 1


def test_a_drivers_per_company_change_applies_from_the_next_interval_with_trucks_kept(
    spark: SparkSession, datasets: Datasets, tmp_path: Path, reference: DataDir
) -> None:
    layout = _copy_of_backfill(spark, datasets, 2, 4, tmp_path / "data")
    config = load_config("small", **SMALL, drivers_per_company=7)
    Pipeline(spark, layout, config, speedup="max", start=START, end=START + timedelta(hours=3)).run_available_now()
    events = spark.read.format("delta").load(str(layout.table("driver_events")))
    before = events.filter(F.col("interval_start") < F.lit(START + timedelta(hours=2)))
    after = events.filter(F.col("interval_start") >= F.lit(START + timedelta(hours=2)))
    # What was generated keeps its rows; the change governs the intervals after it.
    old = spark.read.format("delta").load(str(reference.table("driver_events")))
    expected = old.filter(F.col("interval_start") < F.lit(START + timedelta(hours=2)))
    assert sorted(map(tuple, before.collect())) == sorted(map(tuple, expected.collect()))
    seqs = {int(r["driver_id"][-3:]) for r in after.select("driver_id").distinct().collect()}
    assert seqs == set(range(7))
    assert {int(r["driver_id"][-3:]) for r in before.select("driver_id").distinct().collect()} == set(range(5))
    # A driver keeps its truck; every driver has a truck of its own.
    trucks = events.select("driver_id", "truck_id").distinct().collect()
    by_driver: dict[str, set[str]] = {}
    for r in trucks:
        by_driver.setdefault(r["driver_id"], set()).add(r["truck_id"])
    assert all(len(t) == 1 for t in by_driver.values()), "a driver changed trucks"
    assert len({next(iter(t)) for t in by_driver.values()}) == len(by_driver), "two drivers share a truck"
    # The same config again records no new change.
    shapes = read_json(layout.manifests / "event_shapes.json")["shapes"]
    Pipeline(spark, layout, config, speedup="max", start=START, end=START + timedelta(hours=3))
    assert read_json(layout.manifests / "event_shapes.json")["shapes"] == shapes
    assert [s["drivers_per_company"] for s in shapes] == [5, 7]


def _companies_over_time(spark: SparkSession, layout: DataDir) -> list[tuple[datetime, int]]:
    """(commit time, companies in the table) for every version of delta/companies."""
    history = spark.sql(f"DESCRIBE HISTORY {sql_path(layout, 'companies')}").select("version", "timestamp").collect()
    path = str(layout.table("companies"))
    return sorted(
        (r["timestamp"], spark.read.format("delta").option("versionAsOf", r["version"]).load(path).count())
        for r in history
    )


@pytest.mark.slow
def test_companies_never_lag_events_across_pause_and_resume(spark: SparkSession, tmp_path: Path) -> None:
    """At a high speedup, stopped and started three times: an event's company is in the table first."""
    config = load_config("small", companies_per_onboarding=1, company_onboarding_interval="PT15M")
    start = datetime.now(timezone.utc) - timedelta(days=1)
    pipeline = Pipeline(spark, DataDir(tmp_path), config, speedup="3600", start=start)
    layout = pipeline.layout

    def written() -> int:
        return int(read_json(layout.state).get("batches_generated_count", 0))

    for _ in range(3):
        before = written()
        companies, events = pipeline.start_companies(), pipeline.start_events()
        deadline = time.monotonic() + 300
        while written() < before + 2 and time.monotonic() < deadline:  # two micro-batches a round
            time.sleep(0.2)
        events.stop()  # as a pause does: the events query first, so it never waits for a stopped one
        companies.stop()
    batches = spark.read.format("delta").load(str(layout.table("batches"))).collect()
    assert len(batches) >= 4 and max(b["eligible_companies"] for b in batches) >= 2
    timeline = _companies_over_time(spark, layout)
    for batch in batches:
        known = max((n for at, n in timeline if at <= batch["generation_time"]), default=0)
        assert known >= batch["eligible_companies"], (batch, timeline)
