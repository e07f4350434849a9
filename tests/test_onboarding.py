"""Company onboarding: the MERGE job into delta/companies, the dataset record, discards."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, Row, SparkSession

from fleetgen_spark import ConfigError, cli, load_config
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.spark.scd import CompaniesWriter
from fleetgen_spark.spark.sink import UUID_PATTERN
from fleetgen_spark.spark.tables import ensure_tables
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.dataset import ensure_dataset, load_segments
from fleetgen_spark.storage.lock import release
from fleetgen_spark.storage.logs import configure_logging
from fleetgen_spark.storage.manifests import read_json

START = datetime(2025, 11, 8, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parent.parent


def _onboard(spark: SparkSession, data_dir: Path, hours: float, **overrides: object) -> DataFrame:
    pipeline = Pipeline(
        spark, DataDir(data_dir), load_config("small", **overrides), speedup="max", start=START,
        end=START + timedelta(hours=hours),
    )  # fmt: skip
    pipeline.start_companies(available_now=True).awaitTermination()
    return spark.read.format("delta").load(str(pipeline.layout.table("companies")))


def test_cadence_two_two_one(spark: SparkSession, tmp_path: Path) -> None:
    companies = _onboard(spark, tmp_path, 1.5, companies_per_onboarding=2, company_onboarding_interval="PT30M")
    per_tick = sorted((r["created_at"], r["count"]) for r in companies.groupBy("created_at").count().collect())
    assert [c for _, c in per_tick] == [2, 2, 1]
    assert [t - per_tick[0][0] for t, _ in per_tick] == [timedelta(0), timedelta(minutes=30), timedelta(hours=1)]
    rows = companies.collect()
    assert len({r["company_id"] for r in rows}) == 5
    assert all(r["geography"] == "US" and r["active"] for r in rows)
    assert companies.filter(~companies.company_id.rlike(UUID_PATTERN)).count() == 0
    assert read_json(DataDir(tmp_path).state)["company_count"] == 5


def test_same_seed_same_ids_and_rerun_adds_nothing(spark: SparkSession, tmp_path: Path) -> None:
    first = {r["company_id"] for r in _onboard(spark, tmp_path / "a", 1).collect()}
    second = {r["company_id"] for r in _onboard(spark, tmp_path / "b", 1).collect()}
    assert first == second and len(first) == 5
    # Run again on the same directory with the checkpoint wiped: the MERGE still inserts nothing.
    layout = DataDir(tmp_path / "a")
    subprocess.run(["rm", "-rf", str(layout.checkpoint("companies"))], check=True)
    again = _onboard(spark, tmp_path / "a", 1)
    assert again.count() == 5


def _first_hour(spark: SparkSession) -> tuple[DataFrame, list[Row]]:
    """The small preset's companies of its first hour, as a batch read and as rows."""
    batch = (
        spark.read.format("fleetgen_companies")
        .options(config="small", start="2025-11-08T00:00:00Z", end="2025-11-08T01:00:00Z")
        .load()
    )
    return batch, batch.collect()


def test_two_racing_writers_leave_no_duplicate(spark: SparkSession, tmp_path: Path) -> None:
    layout = DataDir(tmp_path)
    batch, rows = _first_hour(spark)
    errors: list[BaseException] = []

    ensure_tables(spark, layout)  # as a pipeline does before it starts its queries

    def run(query: str) -> None:
        try:
            CompaniesWriter(layout, query)(spark.createDataFrame(rows, batch.schema), 0)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(f"racer{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, [str(e)[:1000] for e in errors]
    table = spark.read.format("delta").load(str(layout.table("companies")))
    assert table.count() == 5 and table.select("company_id").distinct().count() == 5


def test_schema_violations_are_discarded(spark: SparkSession, tmp_path: Path) -> None:
    layout = DataDir(tmp_path)
    ensure_tables(spark, layout)
    good = (
        spark.read.format("fleetgen_companies")
        .options(config="small", start="2025-11-08T00:00:00Z", end="2025-11-08T01:00:00Z")
        .load()
    )
    rows = [r.asDict() for r in good.collect()]
    rows[0]["geography"] = "CA"
    rows[1]["active"] = False
    rows[2]["company_id"] = "not-a-uuid"
    CompaniesWriter(layout)(spark.createDataFrame(rows, good.schema), 0)
    table = spark.read.format("delta").load(str(layout.table("companies")))
    assert table.count() == 2
    discarded = spark.read.format("delta").load(str(layout.table("discarded_events")))
    assert sorted(r["reason"] for r in discarded.collect()) == [
        "inactive_company",
        "invalid_company_id",
        "invalid_geography",
    ]
    assert {r["source"] for r in discarded.collect()} == {"companies"}
    assert (
        table.join(discarded.selectExpr("get_json_object(record, '$.company_id') AS company_id"), "company_id").count()
        == 0
    )
    # A replayed tick (after a crash) discards nothing twice.
    CompaniesWriter(layout)(spark.createDataFrame(rows, good.schema), 0)
    assert spark.read.format("delta").load(str(layout.table("discarded_events"))).count() == 3


def test_raising_the_fleet_onboards_only_the_difference(spark: SparkSession, tmp_path: Path) -> None:
    before = {r["company_id"]: r["created_at"] for r in _onboard(spark, tmp_path, 2).collect()}
    assert len(before) == 5
    after = {r["company_id"]: r["created_at"] for r in _onboard(spark, tmp_path, 4, number_of_companies=8).collect()}
    assert len(after) == 8
    assert {k: after[k] for k in before} == before
    new_ticks = {after[k] for k in set(after) - set(before)}
    assert len(new_ticks) == 1 and min(new_ticks) > max(before.values())
    assert len(load_segments(DataDir(tmp_path))) == 2


def test_dataset_record_keeps_the_drawn_seed(tmp_path: Path) -> None:
    layout = DataDir(tmp_path)
    config = load_config("small").model_copy(update={"seed": None})
    first = ensure_dataset(layout, config, START)
    text = layout.dataset_md.read_text()
    assert f"seed: {first.seed}" in text
    assert ensure_dataset(layout, config, START + timedelta(days=1)) == first
    assert layout.dataset_md.read_text() == text
    with pytest.raises(ConfigError, match="differs from the seed"):
        ensure_dataset(layout, config.with_seed(first.seed + 1))


@pytest.mark.spark  # a JVM in a subprocess
@pytest.mark.slow
def test_onboard_now_command_is_idempotent(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same command twice: the first run in this process (the session's JVM: the command's own code,
    one JVM start less), the second in a process of its own, as a user runs it again."""
    argv = ["onboard", "--now", "--config", "small", "--data-dir", str(tmp_path), "--master", "local[1]"]
    try:
        first = cli.main(argv)
    finally:
        configure_logging(None, stderr=False)  # what the process' exit does: the log files closed,
        release(DataDir(tmp_path))  # and the data directory's lock let go
    out, err = capsys.readouterr()
    assert first == 0, err[-2000:]
    assert "companies: 5 in" in out, out
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    cmd = [sys.executable, "-m", "fleetgen_spark.cli", *argv]
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "companies: 5 in" in again.stdout
    assert "Traceback" not in again.stderr
