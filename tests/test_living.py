"""The README's "Living entities" exercises, run as pasted on the data `fleetgen backfill --config living` makes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from helpers import Datasets, living_backfill
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from test_readme import _section  # one reader of README sections for every README test

from fleetgen_spark.core.churn import Churn, state_at
from fleetgen_spark.core.company_rows import company_batch
from fleetgen_spark.core.config import load_config
from fleetgen_spark.core.names import company_names
from fleetgen_spark.core.schedule import OnboardingPlan

SECTION = _section("Living entities")
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION, re.DOTALL)


def _backfill_range() -> tuple[datetime, datetime]:
    """The --start and --end of the README's backfill command."""
    found = re.search(r"fleetgen backfill --config living --start (\S+) --end (\S+) --data-dir data-living", SECTION)
    assert found is not None, "the README's backfill command changed"
    return tuple(datetime.fromisoformat(v.replace("Z", "+00:00")) for v in found.groups())  # type: ignore[return-value]


@pytest.fixture(scope="module")
def living(
    spark: SparkSession, datasets: Datasets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The README's data-living directory (what its backfill command writes, a copy of the session's one),
    and a namespace to run blocks in."""
    root = tmp_path_factory.mktemp("living")
    layout = datasets.copy(*living_backfill(spark, *_backfill_range()), root / "data-living")
    yield {"root": root, "config": load_config("living"), "layout": layout, "namespace": {"spark": spark, "F": F}}


def _run(living: dict[str, Any], index: int) -> dict[str, Any]:
    """Run a README block as pasted; only its relative path is made absolute (Spark resolves a relative
    path against the JVM's working directory, which a test cannot move)."""
    code = BLOCKS[index].replace('"data-living/', f'"{living["root"]}/data-living/')
    namespace: dict[str, Any] = living["namespace"]
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_exercise_scd2_name_at_a_time(living: dict[str, Any]) -> None:
    ns = _run(living, 0)
    rows = ns["name_then"].collect()
    assert len(rows) == 1
    # The model's answer: the company's version in force at that instant.
    config = living["config"]
    start, _ = _backfill_range()
    plan = OnboardingPlan.from_config(config, int(start.timestamp()))
    ids = company_batch(config.seed, 0, config.number_of_companies, 0).column("company_id").to_pylist()
    index = ids.index(ns["changed"])
    at = int(datetime(2025, 11, 9, 12, tzinfo=timezone.utc).timestamp())
    assert re.search(r'at = "2025-11-09 12:00:00"', BLOCKS[0])
    active, names = state_at(config.seed, Churn(config.company_churn_rate, plan), index // 100, at)
    assert (rows[0]["company_name"], rows[0]["active"]) == (company_names(names[index % 100 : index % 100 + 1])[0],
                                                            bool(active[index % 100]))  # fmt: skip


@pytest.mark.slow
def test_exercise_stream_static_join_loses_no_event(spark: SparkSession, living: dict[str, Any]) -> None:
    events = spark.read.format("delta").load(str(living["layout"].table("driver_events")))
    for _ in range(2):  # pasted twice in one session: the memory sink starts afresh, no checkpoint in the way
        _run(living, 1)
        assert spark.table("events_named").count() == events.count() > 0


@pytest.mark.slow
def test_exercise_change_data_feed_has_one_insert_per_version(spark: SparkSession, living: dict[str, Any]) -> None:
    history = spark.read.format("delta").load(str(living["layout"].table("companies_history")))
    runs = []
    for _ in range(2):  # pasted twice in one session gives the same changes
        _run(living, 2)
        counted = spark.table("company_changes").groupBy("_change_type").count().collect()
        runs.append({r["_change_type"]: r["count"] for r in counted})
    kinds = runs[0]
    assert runs[1] == kinds
    assert kinds["insert"] == history.count() > 20  # 20 onboarded, the rest changes
    closed = history.filter("NOT is_current").count()
    assert 0 < kinds["update_postimage"] == kinds["update_preimage"] <= closed
