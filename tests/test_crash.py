"""Crash safety: a backfill killed with SIGKILL and restarted ends equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import Datasets, small_backfill
from pyspark.sql import SparkSession

from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.manifests import read_json

START = datetime(2025, 11, 8, tzinfo=timezone.utc)
HOURS = 12
ROOT = Path(__file__).resolve().parent.parent


def _command(data_dir: Path) -> list[str]:
    end = START + timedelta(hours=HOURS)
    return [
        sys.executable, "-m", "fleetgen_spark.cli", "backfill", "--config", "small",
        "--start", START.isoformat(), "--end", end.isoformat(), "--data-dir", str(data_dir),
        "--master", "local[1]", "--max-intervals-per-trigger", "4",
    ]  # fmt: skip


def _commits(table: Path) -> set[str]:
    log = table / "_delta_log"
    return {p.name for p in log.glob("*.json")} if log.is_dir() else set()


def _wait_to_kill(proc: subprocess.Popen[bytes], layout: DataDir, mode: str, rng: random.Random) -> bool:
    """Wait for the moment to kill; False if the process finished on its own first."""
    events_log = Path(layout.table("driver_events")) / "_delta_log"
    deadline = time.monotonic() + 300
    # Let the job get going: wait until the events table has its first commit.
    while not _commits(Path(layout.table("driver_events"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    if mode == "commit":
        # Kill inside (or straight after) a Delta commit of driver_events: a temporary commit
        # file is visible, or a new commit has landed and the batches commit of that
        # micro-batch has not yet followed.
        seen = _commits(Path(layout.table("driver_events")))
        while proc.poll() is None and time.monotonic() < deadline:
            names = {p.name for p in events_log.iterdir()} if events_log.is_dir() else set()
            landed = {n for n in names if n.endswith(".json")} - seen
            if landed or any(n.endswith(".tmp") for n in names):
                return True
            time.sleep(0.002)
        return False
    pause = rng.uniform(0.5, 6.0)
    end = time.monotonic() + pause
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return True


def _rows(spark: SparkSession, layout: DataDir, table: str, drop: tuple[str, ...] = ()) -> list[tuple[object, ...]]:
    df = spark.read.format("delta").load(str(layout.table(table))).drop(*drop)
    return sorted(tuple(r) for r in df.select(sorted(df.columns)).collect())


@pytest.mark.slow
def test_backfill_killed_and_restarted_equals_uninterrupted_run(
    spark: SparkSession, datasets: Datasets, tmp_path: Path
) -> None:
    crashed = DataDir(tmp_path / "crashed")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    rng = random.Random(20251108)
    kills = 0
    for mode in ("random", "commit", "random", "random"):
        log = (tmp_path / f"run{kills}.log").open("wb")
        proc = subprocess.Popen(
            _command(crashed.root), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if _wait_to_kill(proc, crashed, mode, rng):
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=600)
    assert kills >= 3, "the backfill finished before it could be killed three times"

    final = subprocess.run(_command(crashed.root), cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-3000:]

    reference = datasets.get(*small_backfill(spark, START, START + timedelta(hours=HOURS), per_trigger=HOURS * 4))

    events = _rows(spark, crashed, "driver_events")
    assert events == _rows(spark, reference, "driver_events")
    ids = [r["event_id"] for r in spark.read.format("delta").load(str(crashed.table("driver_events"))).collect()]
    assert len(ids) == len(set(ids)), "duplicate event_id after crashes"
    assert _rows(spark, crashed, "batches", ("generation_time",)) == _rows(
        spark, reference, "batches", ("generation_time",)
    )
    assert _rows(spark, crashed, "companies") == _rows(spark, reference, "companies")
    assert len(_rows(spark, crashed, "batches")) == HOURS * 4

    manifest = read_json(crashed.batch_manifest)
    assert manifest["batch_count"] == HOURS * 4
    assert manifest["total_events"] == len(events)
    assert json.loads(crashed.batch_manifest.read_text()) == manifest  # a whole, parseable file
