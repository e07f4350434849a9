"""`fleetgen grade` and `fleetgen exercises` (issue 25): the README's reference solutions pass, the usual
wrong answers fail with the hint that names them, a wrong schema fails in one line, --json parses.

One course for the module: a `messy` and a `living` data directory, backfilled once; every table is
graded against them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from fleetgen_spark import cli
from fleetgen_spark.core.config import load_config
from fleetgen_spark.grading.answers import history
from fleetgen_spark.grading.grade import Verdict, compare, schema_problem
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.storage.datadir import DataDir

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
START = datetime(2025, 11, 8, tzinfo=timezone.utc)


def _solution(exercise: str) -> str:
    """The reference solution of an exercise in the README's Grading section, as pasted."""
    section = README[README.index("## Grading") :]
    section = section[section.index(f"**`{exercise}`:") :]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)[0]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse: usage errors
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# --- without Spark ------------------------------------------------------------------------------


def test_exercises_lists_one_line_each_with_its_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["exercises"], capsys)
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == [
        "dedup",
        "quarantine",
        "late-windows",
        "scd2",
        "sessions",
    ]
    assert "--config messy" in lines[0] and "--config living" in lines[4]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["grade", "windows", "--table", "t"], "invalid choice: 'windows'"),
        (["grade", "dedup"], "the following arguments are required: --table"),
        (["grade", "dedup", "--table", "t", "--as-of", "2025-11-08T01:00:00Z"], "--as-of is an option of scd2"),
        (["grade", "scd2", "--table", "t", "--quarantine-table", "r"], "--quarantine-table is an option of quarantine"),
        (["grade", "dedup", "--table", "t", "--watermark", "PT1M"], "--watermark is an option of late-windows"),
    ],
)
def test_bad_usage_exits_2_in_one_line(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(argv, capsys)
    assert code == 2 and said in err and len(err.strip().splitlines()) == 1 and not out


def test_a_directory_with_nothing_generated_is_refused_before_spark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(["grade", "dedup", "--data-dir", str(tmp_path), "--table", "t"], capsys)
    assert code == 1 and "no generated intervals to grade against; backfill it first" in err
    assert len(err.strip().splitlines()) == 1


def test_a_bad_watermark_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["grade", "late-windows", "--table", "t", "--watermark", "soon"], capsys)
    assert code == 1 and err.strip() == (
        "fleetgen grade: error: --watermark 'soon': must be an ISO-8601 duration from PT0S to P1D, e.g. PT10M"
    )


def test_compare_counts_missing_extra_duplicate_and_wrong_by_key() -> None:
    expected = [{"id": i, "v": i} for i in range(4)]
    found = [{"id": 0, "v": 0}, {"id": 0, "v": 0}, {"id": 1, "v": 9}, {"id": 2, "v": 2}, {"id": 7, "v": 7}]
    diff = compare(expected, found, ("id",), ("v",))
    assert [r["id"] for r in diff.missing] == [3] and [r["id"] for r in diff.extra] == [7]
    assert [r["id"] for r in diff.repeated] == [0] and diff.wrong_columns == {"v": 1}
    verdict = Verdict.of("x", "t", diff, 4, 5, "a hint")
    assert verdict.counts == {"missing": 1, "extra": 1, "duplicate": 1, "wrong": 1}
    assert verdict.examples["wrong"] == [{"id": 1, "v": {"expected": 1, "found": 9}}]
    assert (
        schema_problem(["id"], ["id", "v"], True)
        == "wrong schema: missing column(s) v; expected columns: id, v (found: id)"
    )
    assert "unexpected column(s) w" in (schema_problem(["id", "v", "w"], ["id", "v"], False) or "")
    assert schema_problem(["v", "id", "w"], ["id", "v"], True) is None


# --- the course: two data directories and the learners' tables (Spark) ------------------------------


def _backfill(spark: SparkSession, data_dir: Path, preset: str, hours: int) -> None:
    Pipeline(
        spark,
        DataDir(data_dir),
        load_config(preset),
        speedup="max",
        start=START,
        end=START + timedelta(hours=hours),
        max_intervals_per_trigger=16,
    ).run_available_now()


@pytest.fixture(scope="module")
def course(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's teacher workflow: two backfills, then every reference solution run as pasted."""
    root = tmp_path_factory.mktemp("course")
    _backfill(spark, root / "data-messy", "messy", 4)
    _backfill(spark, root / "data-living", "living", 8)
    for exercise in ("dedup", "quarantine", "scd2", "sessions"):
        _run_solution(spark, root, exercise)
    return root


def _run_solution(spark: SparkSession, root: Path, exercise: str) -> None:
    # The JVM resolves relative paths against its own working directory: make them absolute.
    code = re.sub(r'"(data-messy|data-living|answers|checkpoints)/', rf'"{root}/\1/', _solution(exercise))
    exec(compile(code, "README.md", "exec"), {"spark": spark})


@pytest.fixture(scope="module")
def late_windows(spark: SparkSession, course: Path) -> str:
    """The late-windows reference solution: a real append-mode stream, one micro-batch per interval (about
    a minute on a busy 2-core machine, so its tests are slow ones)."""
    _run_solution(spark, course, "late-windows")
    return str(course / "answers/late-windows")


def _grade(course: Path, capsys: pytest.CaptureFixture[str], exercise: str, table: str, *extra: str) -> tuple[int, str]:
    data = course / ("data-living" if exercise in ("scd2", "sessions") else "data-messy")
    code, out, err = run_main(["grade", exercise, "--data-dir", str(data), "--table", table, *extra], capsys)
    assert not err, err
    return code, out


def _save(df: DataFrame, path: Path) -> str:
    df.write.format("delta").mode("overwrite").save(str(path))
    return str(path)


def _load(spark: SparkSession, course: Path, rel: str) -> DataFrame:
    return spark.read.format("delta").load(str(course / rel))


@pytest.mark.parametrize("exercise", ["dedup", "scd2", "sessions"])
def test_the_reference_solution_passes(course: Path, capsys: pytest.CaptureFixture[str], exercise: str) -> None:
    code, out = _grade(course, capsys, exercise, str(course / "answers" / exercise))
    assert code == 0 and out.startswith(f"PASS: {exercise}: "), out


def test_quarantine_passes_with_its_rejects(course: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = course / "answers"
    code, out = _grade(
        course, capsys, "quarantine", str(answers / "quarantine"), "--quarantine-table", str(answers / "rejects")
    )
    assert code == 0 and out.startswith("PASS: quarantine: ") and "quarantine table:" in out, out


def test_dedup_keeping_duplicates_fails_naming_them(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _load(spark, course, "data-messy/delta/driver_events")
    code, out = _grade(course, capsys, "dedup", str(course / "data-messy/delta/driver_events"))
    extra = raw.count() - raw.select("event_id").distinct().count()
    ids = raw.groupBy("event_id").count().where("count > 1").count()
    assert code == 1 and f"{extra} duplicate rows" in out, out
    assert f"hint: {ids} event_ids appear more than once: deduplicate on event_id" in out, out


def test_dedup_dropping_late_events_fails_naming_the_watermark(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _load(spark, course, "data-messy/delta/driver_events")
    # What a watermark of 0 seconds keeps: the deliveries on time.
    table = _save(raw.where("timestamp >= interval_start").dropDuplicates(["event_id"]), course / "wrong/late")
    code, out = _grade(course, capsys, "dedup", table)
    assert code == 1 and "missing rows" in out and "delivered late" in out and "use 45 minutes or more" in out, out


def test_quarantine_letting_a_bad_record_through_fails_with_its_reason(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = (
        spark.read.format("fleetgen")
        .options(config="messy", start="2025-11-08T00:00:00Z", end="2025-11-08T04:00:00Z")
        .load()
    )
    table = _save(raw.where("truck_id IS NOT NULL"), course / "wrong/quarantine")
    code, out = _grade(course, capsys, "quarantine", table, "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["result"] == "FAIL" and verdict["counts"]["extra"] > 0
    assert "let through" in verdict["hint"] and "missing_truck_id" not in verdict["hint"], verdict
    assert len(verdict["examples"]["extra"]) <= 5


def test_quarantine_dropping_late_records_fails_naming_max_lateness(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _load(spark, course, "answers/quarantine")
    table = _save(good.where("timestamp >= interval_start"), course / "wrong/no_late")
    code, out = _grade(course, capsys, "quarantine", table)
    assert code == 1 and "late records were dropped" in out and "30 minutes (max_lateness)" in out, out


@pytest.mark.slow
def test_late_windows_reference_solution_is_what_spark_emitted(
    course: Path, late_windows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The answer key's model of append mode equals the table a real query wrote."""
    code, out = _grade(course, capsys, "late-windows", late_windows)
    assert code == 0 and out.startswith("PASS: late-windows: "), out


@pytest.mark.slow
def test_late_windows_of_a_too_tight_watermark_fail_naming_it(
    course: Path, late_windows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference table (a 10-minute watermark) where 45 minutes is asked: late rows were dropped."""
    code, out = _grade(course, capsys, "late-windows", late_windows, "--watermark", "PT45M")
    # Under 15 minutes every delay gives the same table: Spark's late filter runs one micro-batch behind.
    assert (
        code == 1 and "hint: this is what a watermark of 0 minutes or 1 minute or 5 minutes or 10 minutes emits" in out
    )
    assert "a tighter one drops late rows" in out, out
    assert 'withWatermark("timestamp", "45 minutes")' in out, out


def test_scd2_with_two_current_rows_fails(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _load(spark, course, "answers/scd2")
    assert good.where("NOT is_current").count() > 0, "the living preset changes a company in 8 hours"
    table = _save(good.withColumn("is_current", F.lit(True)), course / "wrong/scd2")
    code, out = _grade(course, capsys, "scd2", table)
    assert code == 1 and "(wrong in is_current:" in out and "more than one current row" in out, out


def test_scd2_of_the_newest_versions_only_fails_naming_scd1(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _load(spark, course, "answers/scd2")
    table = _save(good.where("is_current"), course / "wrong/scd1")
    code, out = _grade(course, capsys, "scd2", table)
    assert code == 1 and "missing rows" in out and "not only the newest (SCD1)" in out, out


def test_sessions_ending_a_microsecond_late_fail_naming_session_end(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a session_window with a 1-microsecond gap gives as its end: the stop plus the gap."""
    good = _load(spark, course, "answers/sessions")
    later = good.withColumn("session_end", F.col("session_end") + F.expr("INTERVAL 1 MICROSECOND"))
    code, out = _grade(course, capsys, "sessions", _save(later, course / "wrong/session_end"))
    assert code == 1 and "(wrong in session_end:" in out and "hint: session_end is the timestamp" in out, out


def test_scd2_as_of_grades_the_history_known_then(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    at = "2025-11-08T06:00:00Z"
    code, out = _grade(course, capsys, "scd2", str(course / "answers/scd2"), "--as-of", at)
    assert code == 1 and "hint: versions after --as-of" in out, out  # the whole history is not the one known then
    known = _load(spark, course, "answers/scd2").where(f"valid_from <= '{at}'")
    closed = F.when(F.col("valid_to") > F.lit(at).cast("timestamp"), None).otherwise(F.col("valid_to"))
    table = _save(known.withColumn("valid_to", closed).withColumn("is_current", closed.isNull()), course / "asof")
    code, out = _grade(course, capsys, "scd2", table, "--as-of", at)
    assert code == 0, out


def test_scd2_answer_key_is_the_pipelines_companies_history(spark: SparkSession, course: Path) -> None:
    """The pure SCD2 of the change feed equals what the pipeline's MERGEs wrote (same versions, same bounds)."""
    from fleetgen_spark.grading.answers import company_versions, generated, table_rows

    gen = generated(DataDir(course / "data-living"))
    table = table_rows(_load(spark, course, "data-living/delta/companies_history").toArrow())
    assert compare(history(company_versions(gen)), table, ("company_id", "valid_from"), ("valid_to", "is_current")).ok


def test_sessions_split_at_interval_edges_fail(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _load(spark, course, "data-living/delta/driver_events")
    moves = events.where("event_type IN ('start driving', 'stopped driving')")
    per_batch = Window.partitionBy("driver_id", "batch_id").orderBy("timestamp")
    sessions = (
        moves.withColumn("next_type", F.lead("event_type").over(per_batch))
        .withColumn("session_end", F.lead("timestamp").over(per_batch))
        .where("event_type = 'start driving' AND next_type = 'stopped driving'")
        .select("driver_id", F.col("timestamp").alias("session_start"), "session_end", F.lit(2).alias("events"))
    )
    code, out = _grade(course, capsys, "sessions", _save(sessions, course / "wrong/sessions"))
    assert code == 1 and "missing rows" in out and "cross an interval edge" in out and "per batch_id" in out, out


def test_a_wrong_schema_fails_in_one_line(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _load(spark, course, "answers/sessions")
    table = _save(good.withColumnRenamed("session_end", "ended"), course / "wrong/schema")
    code, out = _grade(course, capsys, "sessions", table)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "wrong schema: missing column(s) session_end; expected columns: driver_id, session_start" in out, out
    code, out = _grade(course, capsys, "sessions", table, "--json")
    assert code == 1 and json.loads(out)["summary"].startswith("wrong schema: missing column(s) session_end")


def test_a_table_name_is_graded_and_a_missing_table_is_one_line(
    spark: SparkSession, course: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _load(spark, course, "answers/dedup").createOrReplaceTempView("alice_dedup")
    code, out = _grade(course, capsys, "dedup", "alice_dedup")
    assert code == 0 and out.startswith("PASS: dedup: alice_dedup"), out
    data = str(course / "data-messy")
    code, out, err = run_main(["grade", "dedup", "--data-dir", data, "--table", str(course / "nowhere")], capsys)
    assert code == 1 and not out and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fleetgen grade: error: --table {course / 'nowhere'}: cannot read it as a Delta table path")


@pytest.mark.slow
def test_grading_on_spark_connect(course: Path) -> None:
    """The same command in a process of its own on a local Spark Connect server (a path: the server's session)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYTHONPATH")}
    env.update(SPARK_TESTING="1", SPARK_LOCAL_IP="127.0.0.1")
    argv = ["grade", "dedup", "--data-dir", str(course / "data-messy"), "--remote", "local[1]", "--json"]
    out = subprocess.run(
        [sys.executable, "-m", "fleetgen_spark.cli", *argv, "--table", str(course / "answers/dedup")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["result"] == "PASS"
