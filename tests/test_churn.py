"""Company churn: the pure model (no Spark), then the SCD1/SCD2 tables and silent drivers through the pipeline."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import Datasets, living_backfill, table
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fleetgen_spark.core import churn as churn_module
from fleetgen_spark.core.churn import DEACTIVATE_SHARE, Churn, changes_at, inactive_spans, state_at
from fleetgen_spark.core.company_rows import company_batch
from fleetgen_spark.core.config import load_config
from fleetgen_spark.core.exceptions import ConfigError
from fleetgen_spark.core.generate import driver_counts, event_batches
from fleetgen_spark.core.schedule import OnboardingPlan
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.spark.source import event_spec
from fleetgen_spark.storage.datadir import DataDir

S = 1_762_560_000  # 2025-11-08T00:00:00Z
WEEK = 7 * 86_400
HOUR = 3_600


def _churn(rate: float = 0.05, companies: int = 250, per_tick: int = 50) -> Churn:
    config = load_config("base", number_of_companies=companies, companies_per_onboarding=per_tick)
    return Churn(rate, OnboardingPlan.from_config(config, S))


def _forget() -> None:
    churn_module._HISTORIES.clear()


# --- the model, pure -----------------------------------------------------------------------------


def test_churn_shares_over_a_week_are_within_five_standard_deviations() -> None:
    """Each existing company changes with chance company_churn_rate at each onboarding instant; an active one
    is deactivated with chance DEACTIVATE_SHARE, an inactive one always reactivated."""
    churn = _churn(0.05)
    plan = churn.plan
    exposed = changes = deactivations = active_changes = reactivations = 0
    for tick in plan.cadence(S, S + WEEK):
        existing = plan.onboarded_before(tick.time)
        exposed += existing
        for block in range(-(-existing // 100)):
            before, _ = state_at(42, churn, block, tick.time - 1)
            found = changes_at(42, churn, block, tick.time)
            assert (block * 100 + found.offsets < existing).all(), "a company changed before it existed"
            was = before[found.offsets]
            changes += found.offsets.size
            active_changes += int(was.sum())
            deactivations += int((was & ~found.active).sum())
            reactivations += int((~was & found.active).sum())
            assert (was | found.active).all(), "an inactive company changed without being reactivated"
    assert exposed > 30_000

    def within(observed: int, n: int, p: float) -> bool:
        return abs(observed - n * p) <= 5 * math.sqrt(n * p * (1 - p))

    assert within(changes, exposed, 0.05), (changes, exposed)
    assert within(deactivations, active_changes, DEACTIVATE_SHARE), (deactivations, active_changes)
    assert reactivations == changes - active_changes
    assert reactivations > 0


def test_a_history_is_the_same_however_it_was_folded() -> None:
    """The state at an instant is a pure function: asking for it cold, or after later instants, gives the same."""
    churn = _churn(0.1)
    _forget()
    late = state_at(7, churn, 1, S + 100 * HOUR)
    early = state_at(7, churn, 1, S + 3 * HOUR)
    _forget()
    assert all(np.array_equal(a, b) for a, b in zip(state_at(7, churn, 1, S + 3 * HOUR), early, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(state_at(7, churn, 1, S + 100 * HOUR), late, strict=True))


def test_renames_change_the_name_and_nothing_else() -> None:
    churn = _churn(0.2)
    renamed = 0
    for k in range(1, 48):
        t = S + k * HOUR
        before_active, before_names = state_at(3, churn, 0, t - 1)
        found = changes_at(3, churn, 0, t)
        same = found.active == before_active[found.offsets]
        assert (found.names[same] != before_names[found.offsets][same]).all()
        assert (found.names[~same] == before_names[found.offsets][~same]).all()
        renamed += int(same.sum())
    assert renamed > 0


def test_inactive_spans_agree_with_the_state_at_every_instant() -> None:
    churn = _churn(0.1, companies=150, per_tick=150)
    company, off_from, off_to = inactive_spans(9, churn, 150, S + 72 * HOUR)
    assert company.size > 0
    for h in range(73):
        t = S + h * HOUR
        inactive = np.zeros(150, dtype=bool)
        now = (off_from <= t) & ((off_to == -1) | (t < off_to))
        inactive[company[now]] = True
        active = np.concatenate([state_at(9, churn, b, t)[0] for b in (0, 1)])[:150]
        assert np.array_equal(inactive, ~active), h


def test_companies_batch_with_churn_brings_the_changed_versions_after_the_new_companies() -> None:
    churn = _churn(0.1)
    plan = churn.plan
    tick = next(t for t in plan.cadence(S + HOUR, S + WEEK) if t.count)
    plain = company_batch(42, tick.first, tick.count, tick.time)
    with_churn = company_batch(42, tick.first, tick.count, tick.time, churn)
    assert with_churn.slice(0, tick.count).equals(plain)
    changed = with_churn.slice(tick.count)
    assert changed.num_rows > 0
    ids = set(company_batch(42, 0, tick.first, S).column("company_id").to_pylist())
    assert set(changed.column("company_id").to_pylist()) <= ids
    assert all(u == tick.time * 1_000_000 for u in changed.column("updated_at").cast("int64").to_pylist())
    assert all(c < tick.time * 1_000_000 for c in changed.column("created_at").cast("int64").to_pylist())


def test_drivers_of_an_inactive_company_emit_nothing() -> None:
    config = load_config("base", number_of_companies=100)
    churn = Churn(0.2, OnboardingPlan.from_config(config, S))
    spec = replace(event_spec(config, 42), churn=churn)
    t = S + 30 * HOUR
    active, _ = state_at(42, churn, 0, t)
    assert (~active).sum() > 5
    counts = driver_counts(spec, t, 0, 100).reshape(100, config.drivers_per_company)
    assert (counts[~active] == 0).all() and (counts[active].sum(axis=1) > 0).all()
    rows = [r for b in event_batches(spec, t, 0, 100) for r in b.column("company_id").to_pylist()]
    ids = company_batch(42, 0, 100, S).column("company_id").to_pylist()
    assert {ids[i] for i in np.flatnonzero(~active)}.isdisjoint(rows)
    assert len(rows) == counts.sum()


def test_churn_off_leaves_the_events_as_they_were() -> None:
    config = load_config("base")
    spec = event_spec(config, 42)
    assert spec.churn is None
    plain = list(event_batches(spec, S + HOUR, 0, 100))
    explicit = list(event_batches(replace(spec, churn=None), S + HOUR, 0, 100))
    assert [b.equals(c) for b, c in zip(plain, explicit, strict=True)] == [True] * len(plain)


# --- through Spark and Delta -----------------------------------------------------------------------

START = datetime(2025, 11, 8, tzinfo=timezone.utc)


def _week(spark: SparkSession, root: Path, **overrides: object) -> Pipeline:
    config = load_config(
        "small",
        number_of_companies=20,
        companies_per_onboarding=4,
        drivers_per_company=3,
        event_rate_per_driver=1.0,
        company_churn_rate=0.05,
        **overrides,
    )
    pipeline = Pipeline(
        spark,
        DataDir(root),
        config,
        speedup="max",
        start=START,
        end=START + timedelta(days=7),
        max_intervals_per_trigger=96,
    )
    pipeline.run_available_now()
    return pipeline


@pytest.fixture(scope="module")
def week(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return _week(spark, tmp_path_factory.mktemp("churn-week"))


@pytest.mark.slow
def test_scd2_history_is_consistent_with_scd1_at_every_version(spark: SparkSession, week: Pipeline) -> None:
    versions = {
        name: [r["version"] for r in spark.sql(f"DESCRIBE HISTORY delta.`{week.layout.table(name)}`").collect()]
        for name in ("companies", "companies_history")
    }
    assert len(versions["companies"]) == len(versions["companies_history"]) > 3
    columns = ["company_id", "company_name", "geography", "active", "created_at"]
    for v_current, v_history in zip(sorted(versions["companies"]), sorted(versions["companies_history"]), strict=True):
        current = table(spark, week.layout, "companies", v_current).select(*columns)
        history = table(spark, week.layout, "companies_history", v_history)
        assert sorted(current.collect()) == sorted(history.filter("is_current").select(*columns).collect())
    # No gaps, no overlaps: each company's versions follow each other, the last one open.
    history = table(spark, week.layout, "companies_history").orderBy("company_id", "valid_from").collect()
    by_company: dict[str, list] = {}
    for row in history:
        by_company.setdefault(row["company_id"], []).append(row)
    assert len(by_company) == 20
    for rows in by_company.values():
        assert rows[0]["valid_from"] == rows[0]["created_at"]
        assert [r["is_current"] for r in rows] == [False] * (len(rows) - 1) + [True]
        assert rows[-1]["valid_to"] is None
        assert all(a["valid_to"] == b["valid_from"] for a, b in itertools.pairwise(rows))
    assert len(history) > 40  # about 20 x 168 x 0.05 changes happened


@pytest.mark.slow
def test_the_tables_hold_what_the_model_says(spark: SparkSession, week: Pipeline) -> None:
    """SCD1 holds each company's latest version; SCD2 one row per version the model made."""
    config = week.config
    assert config.seed is not None
    plan = OnboardingPlan.from_config(config, int(START.timestamp()))
    churn = Churn(config.company_churn_rate, plan)
    end = int(START.timestamp()) + 7 * 86_400
    last = end - 1  # the last instant the bounded run covers
    active, _ = state_at(config.seed, churn, 0, last)
    companies = {r["company_id"]: r for r in table(spark, week.layout, "companies").collect()}
    ids = company_batch(config.seed, 0, 20, 0).column("company_id").to_pylist()
    assert [companies[i]["active"] for i in ids] == active[:20].tolist()
    expected_versions = 20 + sum(
        changes_at(config.seed, churn, 0, t.time).offsets.size for t in plan.cadence(plan.start + 1, end)
    )
    assert table(spark, week.layout, "companies_history").count() == expected_versions
    # A legitimate change is never discarded.
    assert table(spark, week.layout, "discarded_events").filter("source = 'companies'").count() == 0


@pytest.mark.slow
def test_no_event_comes_from_a_company_inactive_at_its_interval(spark: SparkSession, week: Pipeline) -> None:
    events = table(spark, week.layout, "driver_events")
    history = table(spark, week.layout, "companies_history")
    inactive = history.filter(~F.col("active"))
    during = events.join(inactive, "company_id").filter(
        (F.col("interval_start") >= F.col("valid_from"))
        & (F.col("valid_to").isNull() | (F.col("interval_start") < F.col("valid_to")))
    )
    assert inactive.count() > 0
    assert during.count() == 0
    # The companies that paused did emit before and after: silence is by interval, not forever.
    paused = [r["company_id"] for r in inactive.select("company_id").distinct().collect()]
    assert events.filter(F.col("company_id").isin(paused)).count() > 0
    batches = table(spark, week.layout, "batches")
    assert batches.agg(F.sum("event_count")).first()[0] == events.count()
    assert table(spark, week.layout, "discarded_events").count() == 0


@pytest.mark.slow
def test_change_data_feed_shows_the_changes(spark: SparkSession, week: Pipeline) -> None:
    for name in ("companies", "companies_history"):
        changes = (
            spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", 0)
            .load(str(week.layout.table(name)))
        )
        kinds = {r["_change_type"]: r["count"] for r in changes.groupBy("_change_type").count().collect()}
        assert kinds.get("insert", 0) >= 20 and kinds.get("update_postimage", 0) > 0, (name, kinds)


def test_churn_rate_is_part_of_a_data_directory_identity(spark: SparkSession, tmp_path: Path) -> None:
    config = load_config("small")
    Pipeline(spark, DataDir(tmp_path), config, speedup="max", start=START, end=START + timedelta(hours=1))
    with pytest.raises(ConfigError, match=r"company_churn_rate 0\.1 differs from the company_churn_rate 0\.0"):
        Pipeline(
            spark,
            DataDir(tmp_path),
            load_config("small", company_churn_rate=0.1),
            speedup="max",
            start=START,
            end=START + timedelta(hours=1),
        )


@pytest.mark.slow
def test_messy_delivery_with_churn_discards_exactly_the_bad_records(spark: SparkSession, tmp_path: Path) -> None:
    """A late event is judged by its own interval: validation discards the bad records and nothing else."""
    config = load_config("messy", number_of_companies=20, companies_per_onboarding=10, company_churn_rate=0.2)
    pipeline = Pipeline(
        spark, DataDir(tmp_path), config, speedup="max", start=START, end=START + timedelta(days=1),
        max_intervals_per_trigger=32,
    )  # fmt: skip
    pipeline.run_available_now()
    batches = table(spark, pipeline.layout, "batches")
    totals = batches.agg(F.sum("bad_records").alias("bad"), F.sum("late_events").alias("late")).first()
    assert totals is not None and totals["late"] > 0
    discarded = table(spark, pipeline.layout, "discarded_events")
    assert discarded.count() == totals["bad"] > 0
    assert table(spark, pipeline.layout, "companies_history").filter("NOT active").count() > 0


def test_a_companies_table_from_an_older_release_gains_updated_at_and_a_history(
    spark: SparkSession, tmp_path: Path
) -> None:
    layout = DataDir(tmp_path)
    old = company_batch(100, 0, 5, int(START.timestamp())).drop_columns(["updated_at"])
    spark.createDataFrame(old.to_pandas()).write.format("delta").save(str(layout.table("companies")))
    Pipeline(spark, layout, load_config("small"), speedup="max", start=START, end=START + timedelta(hours=1))
    companies = spark.read.format("delta").load(str(layout.table("companies")))
    assert companies.filter("updated_at = created_at").count() == 5
    history = spark.read.format("delta").load(str(layout.table("companies_history")))
    assert history.filter("is_current AND valid_from = created_at AND valid_to IS NULL").count() == 5
    properties = spark.sql(f"SHOW TBLPROPERTIES delta.`{layout.table('companies')}`").collect()
    assert {r["key"]: r["value"] for r in properties}.get("delta.enableChangeDataFeed") == "true"


def _read_events(spark: SparkSession, partitions: int) -> list[tuple[object, ...]]:
    rows = (
        spark.read.format("fleetgen")
        .options(config="living", start="2025-11-08T00:00:00Z", end="2025-11-09T00:00:00Z")
        .option("numPartitions", str(partitions))
        .load()
        .collect()
    )
    return sorted(tuple(r) for r in rows)


@pytest.mark.slow
def test_churned_events_are_the_same_for_one_or_seven_partitions(spark: SparkSession) -> None:
    one = _read_events(spark, 1)
    assert one == _read_events(spark, 7) and len(one) > 1000


@pytest.mark.slow
def test_one_run_or_two_consecutive_runs_write_the_same_tables(
    spark: SparkSession, datasets: Datasets, tmp_path: Path
) -> None:
    def run(root: Path, *ends: datetime) -> DataDir:
        for end in ends:
            Pipeline(
                spark, DataDir(root), load_config("living"), speedup="max", start=START, end=end,
                max_intervals_per_trigger=32,
            ).run_available_now()  # fmt: skip
        return DataDir(root)

    def read(layout: DataDir) -> dict[str, list[tuple[object, ...]]]:
        tables = {"driver_events": ["event_id", "timestamp", "company_id", "event_type"]}
        tables |= {"companies_history": ["company_id", "company_name", "active", "valid_from", "valid_to"]}
        tables |= {"companies": ["company_id", "company_name", "active", "updated_at"]}
        return {
            name: sorted(
                tuple(r) for r in spark.read.format("delta").load(str(layout.table(name))).select(*cols).collect()
            )
            for name, cols in tables.items()
        }

    middle, end = START + timedelta(hours=19), START + timedelta(days=2)
    whole = read(datasets.get(*living_backfill(spark, START, end)))  # the one run, the same as test_living's
    split = read(run(tmp_path / "two", middle, end))
    assert whole == split
    assert len(whole["companies_history"]) > len(whole["companies"]) == 20
