"""Exactly-once appends: the commit tag, found among other writers' commits, on real Delta."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from fleetgen_spark.appends import append_once, find_commit, marker


def _rows(spark: SparkSession, n: int, first: int = 0) -> DataFrame:
    return spark.range(first, first + n).selectExpr("id", "cast(id as string) as name")


def _history(spark: SparkSession, table: Path) -> list[str | None]:
    rows = spark.sql(f"DESCRIBE HISTORY delta.`{table}`").orderBy("version").collect()
    return [r["userMetadata"] for r in rows]


def test_a_replayed_epoch_writes_nothing(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "t"
    assert find_commit(table, "app", 0) is None  # no table yet
    assert append_once(_rows(spark, 5), table, "app", 0)
    assert append_once(_rows(spark, 3, 5), table, "app", 1)
    assert not append_once(_rows(spark, 3, 5), table, "app", 1)  # the replay
    assert not append_once(_rows(spark, 5), table, "app", 0)
    assert spark.read.format("delta").load(str(table)).count() == 8
    assert _history(spark, table) == [marker("app", 0), marker("app", 1)]
    found = find_commit(table, "app", 1)
    assert found is not None and (found.version, found.rows) == (1, 3)


def test_other_writers_commits_are_passed_over(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "t"
    append_once(_rows(spark, 2), table, "app", 0)
    _rows(spark, 4, 100).write.format("delta").mode("append").save(str(table))  # a user's own append
    append_once(_rows(spark, 1, 200), table, "other", 0)  # a second query sharing the table
    spark.sql(f"OPTIMIZE delta.`{table}`")
    found = find_commit(table, "app", 0)
    assert found is not None and (found.version, found.rows) == (0, 2)
    assert find_commit(table, "other", 0) is not None
    assert find_commit(table, "app", 1) is None  # our newest commit is epoch 0: epoch 1 is new
    assert find_commit(table, "app-2", 0) is None  # a prefix of another id is not ours
    _rows(spark, 1).write.format("delta").mode("append").option("userMetadata", "app/notes").save(str(table))
    assert find_commit(table, "app", 0) is not None  # a user's tag that merely starts like ours


def test_scan_stops_at_an_older_epoch_of_the_same_query(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "t"
    for epoch in range(3):
        append_once(_rows(spark, 1, epoch), table, "app", epoch)
    assert find_commit(table, "app", 0) is not None  # found by reading past the newer epochs
    # The scan for a new epoch must stop at epoch 2, never reading the old commits: make the
    # oldest one unreadable and ask again.
    (table / "_delta_log" / f"{0:020d}.json").write_text("not json\n")
    assert find_commit(table, "app", 3) is None
    assert find_commit(table, "app", 1) is not None


def test_partitioned_append_with_options(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "t"
    df = spark.range(6).selectExpr("id", "id % 2 as part")
    assert append_once(df, table, "app", 0, partition_by="part", **{"delta.dataSkippingStatsColumns": "id"})
    assert sorted(p.name for p in table.iterdir() if p.name.startswith("part=")) == ["part=0", "part=1"]
    props = spark.sql(f"SHOW TBLPROPERTIES delta.`{table}`").collect()
    assert {r["key"]: r["value"] for r in props}.get("delta.dataSkippingStatsColumns") == "id"
