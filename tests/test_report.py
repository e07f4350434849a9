"""``fleetgen report``: the statistics on their own, then a report of a real backfill against its tables."""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from pyspark.sql import SparkSession

from fleetgen_spark import load_config
from fleetgen_spark.cli import main
from fleetgen_spark.core.stats import ALPHA, chi2_sf, fraction_check, poisson_band, poisson_check, shares_check
from fleetgen_spark.report.checks import build_checks, poisson_view, render_markdown
from fleetgen_spark.report.data import read_inputs, shift_summary
from fleetgen_spark.report.model import Expected, ReportInputs
from fleetgen_spark.report.plot import panel_names, report_figure, write_report
from fleetgen_spark.spark.pipeline import Pipeline
from fleetgen_spark.storage.datadir import DataDir
from fleetgen_spark.storage.logs import configure_logging

START = datetime(2025, 11, 8, tzinfo=timezone.utc)
WEIGHTS = {"start driving": 0.40, "stopped driving": 0.35, "delivered": 0.25}

# --- the statistics, without Spark ---


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841458820694124, 1, 0.05),  # the textbook 5% critical values
        (5.991464547107979, 2, 0.05),
        (18.307038053275146, 10, 0.05),
        (124.34211340400407, 100, 0.05),
        (10.0, 2, math.exp(-5.0)),  # df 2 is an exponential: sf = exp(-x/2)
        (0.0, 3, 1.0),
    ],
)
def test_chi2_sf_matches_known_values(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9, abs=1e-12)


def test_poisson_band_is_the_central_999_interval() -> None:
    # Poisson(2): P(X > 7) = 0.0011 > 0.0005 >= P(X > 8) = 0.00024, and P(X < 0) = 0.
    assert poisson_band(2.0) == (0, 8)
    lo, hi = poisson_band(3500.0)
    half = 3.2905 * math.sqrt(3500.0)  # the normal approximation of the same band
    assert abs(lo - (3500 - half)) <= 3 and abs(hi - (3500 + half)) <= 3
    assert poisson_band(0.0) == (0, 0)


def _means(n: int = 300) -> np.ndarray:
    return np.concatenate([np.zeros(2), np.full(n // 2, 175.0), np.full(n - n // 2 - 2, 350.0)])


def test_a_poisson_sample_passes() -> None:
    mu = _means()
    result = poisson_check(np.random.default_rng(7).poisson(mu), mu)
    assert result.passed, result
    assert result.inside_band >= len(mu) - 2


def test_an_over_dispersed_sample_fails() -> None:
    mu = _means()
    rng = np.random.default_rng(7)
    # Negative binomial with the same means and three times the variance.
    r = mu[mu > 0] / 2.0
    counts = np.concatenate([np.zeros(2), rng.negative_binomial(r, r / (r + mu[mu > 0]))])
    result = poisson_check(counts, mu)
    assert not result.passed
    assert result.dispersion_p < ALPHA and result.mean_p >= ALPHA  # the mean is right, the spread is not


def test_too_regular_or_shifted_counts_fail() -> None:
    mu = _means()
    assert poisson_check(np.round(mu), mu).dispersion_p < ALPHA  # no noise at all is not Poisson either
    shifted = poisson_check(np.random.default_rng(3).poisson(mu * 1.05), mu)
    assert shifted.mean_p < ALPHA and not shifted.passed
    assert poisson_check(mu + (mu == 0), mu).impossible == 2  # events where nobody was eligible


def test_shares_matching_the_weights_pass_and_skewed_ones_fail() -> None:
    names = list(WEIGHTS)
    drawn = np.random.default_rng(11).multinomial(100_000, list(WEIGHTS.values()))
    good = shares_check(dict(zip(names, drawn.tolist(), strict=True)), WEIGHTS)
    assert good.passed and good.df == 2
    skewed = shares_check({"start driving": 41_000, "stopped driving": 34_000, "delivered": 25_000}, WEIGHTS)
    assert not skewed.passed and skewed.p < ALPHA
    unweighted = shares_check({"start driving": 10, "delivered": 5}, {"start driving": 1.0, "delivered": 0.0})
    assert not unweighted.passed and unweighted.unexpected == ("delivered",)


def test_fraction_check() -> None:
    assert fraction_check(int(np.random.default_rng(5).binomial(50_000, 0.02)), 50_000, 0.02).passed
    assert not fraction_check(2_000, 50_000, 0.02).passed  # twice what was asked
    assert fraction_check(0, 50_000, 0.0).passed
    assert not fraction_check(3, 50_000, 0.0).passed


# --- a report from synthetic inputs (no Spark): checks, realism panels, markdown ---


def _expected(**changes: object) -> Expected:
    config = {
        "drivers_per_company": 5,
        "event_rate_per_driver": 2.0,
        "number_of_companies": 5,
        "interval": "PT15M",
        "event_type_weights": WEIGHTS,
    }
    config.update(changes)
    return Expected.from_config(config)


def _synthetic(expected: Expected, intervals: int = 96, **columns: int) -> ReportInputs:
    rng = np.random.default_rng(1)
    starts = pd.date_range(START, periods=intervals, freq="15min", tz="UTC")
    minutes = np.arange(intervals) * 15
    # One company onboards every hour from START: eligible when created before the interval starts.
    eligible = np.where(minutes > 0, np.minimum((minutes - 1) // 60 + 1, 5), 0)
    counts = rng.poisson(eligible * expected.per_company)
    batches = pd.DataFrame(
        {
            "batch_id": [s.strftime("%Y%m%dT%H%M%SZ") for s in starts],
            "interval_start": starts,
            "interval_end": starts + pd.Timedelta(minutes=15),
            "event_count": counts,
            "generation_time": starts + pd.Timedelta(minutes=16),
            "eligible_companies": eligible,
            "total_companies": np.minimum((minutes + 14) // 60 + 1, 5),
        }
    )
    for name, total in columns.items():
        batches[name] = [total] + [0] * (intervals - 1)
    types = rng.multinomial(int(counts.sum()), list(WEIGHTS.values())).tolist()
    ticks = pd.date_range(START, periods=5, freq="1h", tz="UTC")
    return ReportInputs(
        data_dir="synthetic",
        expected=expected,
        batches=batches,
        event_types=dict(zip(WEIGHTS, types, strict=True)),
        companies=pd.DataFrame({"time": ticks, "onboarded": range(1, 6), "active": range(1, 6)}),
        companies_rows=5,
        discards={},
        durations=pd.DataFrame(
            {
                "timestamp": pd.date_range(datetime.now(timezone.utc), periods=3, freq="2s"),
                "duration_ms": [900, 1100, 1000],
                "intervals": [32, 32, 32],
                "events": [1, 2, 3],
            }
        ),
    )


def test_a_synthetic_dataset_passes_every_check_and_gets_six_panels(tmp_path: Path) -> None:
    inputs = _synthetic(_expected())
    checks = build_checks(inputs)
    assert {c.result for c in checks} <= {"PASS", "info"}, checks
    result = write_report(inputs, tmp_path)
    assert result.panels == 6 and result.failed == 0
    assert image.imread(str(result.png)).shape[2] in (3, 4)


def test_realism_knobs_add_their_panels_and_checks(tmp_path: Path) -> None:
    expected = _expected(late_fraction=0.1, duplicate_fraction=0.01, bad_record_fraction=0.0)
    inputs = _synthetic(expected, late_events=10, duplicate_events=0, bad_records=0)
    inputs.lateness_minutes = {0: 4, 12: 5, 30: 1}
    inputs.lateness_max_s = 30 * 60 + 1  # one second more than max_lateness allows
    inputs.discards = {"events: missing_truck_id": 2}
    by_panel = {c.panel: c for c in build_checks(inputs)}
    assert by_panel["late share"].result == "FAIL"  # 10 late of ~3000 is far below 0.1
    assert by_panel["duplicate share"].result == "FAIL"  # none of the 1% asked
    assert by_panel["lateness"].result == "FAIL"
    assert by_panel["discards by reason"].result == "FAIL"  # 2 discards, sum(bad_records) is 0
    assert "bad-record share" not in by_panel  # neither asked nor seen
    assert write_report(inputs, tmp_path).panels == 8


def test_weights_recorded_differently_make_the_report_say_fail() -> None:
    inputs = _synthetic(_expected(event_type_weights={"start driving": 0.5, "stopped driving": 0.3, "delivered": 0.2}))
    text = render_markdown(inputs, build_checks(inputs))
    row = next(line for line in text.splitlines() if line.startswith("| event-type shares"))
    assert row.endswith("| FAIL |")
    assert "**4 passed, 1 failed**" in text


# --- the figure draws what the checks check (no Spark) ---


def _panel(fig: Figure, title: str) -> Axes:
    (ax,) = [ax for ax in fig.axes if ax.get_title(loc="left").startswith(title)]
    return ax


def _labelled(ax: Axes) -> set[str]:
    return {a.get_label() for a in [*ax.lines, *ax.collections, *ax.containers]}


def _asked_bars(fig: Figure) -> list[float]:
    ax = _panel(fig, "Event-type shares")
    (asked,) = [c for c in ax.containers if str(c.get_label()).startswith("asked")]
    return [float(bar.get_height()) for bar in asked.patches]


def _expected_column(markdown: str, panel: str) -> str:
    (row,) = [line for line in markdown.splitlines() if line.startswith(f"| {panel} |")]
    return row.split("|")[3].strip()


def _shares_in(text: str) -> list[float]:
    return [float(part.rsplit(" ", 1)[1]) for part in text.split(", ")]


def test_the_figure_draws_the_band_the_spread_check_counts(tmp_path: Path) -> None:
    inputs = _synthetic(_expected())
    view = poisson_view(inputs)
    assert view is not None and view.result is not None
    fig = report_figure(inputs, build_checks(inputs))
    ax = _panel(fig, "Events per interval vs Poisson")
    (band,) = [c for c in ax.collections if c.get_label() == "99.9% band"]
    live = (view.frame["expected"] > 0).to_numpy()
    drawn = {float(y) for path in band.get_paths() for y in path.vertices[:, 1]}
    assert drawn <= set(view.result.lo[live]) | set(view.result.hi[live])
    assert max(drawn) == view.result.hi[live].max() and min(drawn) == view.result.lo[live].min()
    markdown = render_markdown(inputs, build_checks(inputs))
    assert _asked_bars(fig) == pytest.approx(_shares_in(_expected_column(markdown, "event-type shares")))
    assert _asked_bars(fig) == pytest.approx([0.40, 0.35, 0.25])


def test_residuals_far_outside_the_axis_still_show_and_warn_nothing(tmp_path: Path) -> None:
    inputs = _synthetic(_expected())
    assert inputs.batches is not None
    inputs.batches["event_count"] = inputs.batches["event_count"] // 4  # every residual far below -4.5
    fig = report_figure(inputs, build_checks(inputs))  # warnings are errors in these tests
    ax = _panel(fig, "Are the counts Poisson?")
    assert sum(bar.get_height() for bar in ax.patches) > 0
    assert "beyond" in " ".join(t.get_text() for t in ax.texts)


def test_under_the_shift_model_the_figure_has_no_poisson_band_and_asks_the_shift_shares() -> None:
    inputs = _synthetic(_expected(event_model="shift"))
    checks = build_checks(inputs)
    markdown = render_markdown(inputs, checks)
    fig = report_figure(inputs, checks)
    assert not any(ax.get_title(loc="left").startswith("Are the counts Poisson") for ax in fig.axes)
    assert _labelled(_panel(fig, "Events per interval")) & {"99.9% band", "expected"} == set()
    assert _asked_bars(fig) == pytest.approx(_shares_in(_expected_column(markdown, "event-type shares")))
    assert _asked_bars(fig) == pytest.approx([0.375, 0.375, 0.25])


def test_one_micro_batch_gets_a_time_axis_of_minutes_not_years() -> None:
    inputs = _synthetic(_expected())
    assert inputs.durations is not None and inputs.batches is not None
    inputs.durations = inputs.durations.iloc[:1]
    inputs.batches["generation_time"] = inputs.batches["generation_time"].iloc[0]
    checks = build_checks(inputs)
    left, right = _panel(report_figure(inputs, checks), "Micro-batch durations").get_xlim()
    assert 0 < (right - left) * 24 * 60 <= 5  # matplotlib dates are in days
    (durations,) = [c for c in checks if c.panel == "micro-batch durations"]
    assert durations.measured.startswith("1 micro-batch: median")


def _shift_events(spark: SparkSession):  # type: ignore[no-untyped-def]
    """Driver A keeps the hours of service over two shifts; driver B drives too long and starts twice."""
    day = START.replace(tzinfo=None)
    rows = [
        ("A", "start driving", 0),
        ("A", "stopped driving", 240),
        ("A", "delivered", 250),
        ("A", "start driving", 270),
        ("A", "stopped driving", 540),  # 9 h on duty, 8.5 h driving; then 11 h off duty
        ("A", "start driving", 1200),
        ("A", "stopped driving", 1320),
        ("B", "start driving", 0),
        ("B", "stopped driving", 720),  # 12 h driving (a long drive, not a rest)
        ("B", "delivered", 725),
        ("B", "start driving", 730),
        ("B", "start driving", 740),  # already driving
        ("B", "stopped driving", 900),  # 15 h on duty
    ]
    return spark.createDataFrame(
        [(f"e{i}", d, t, day + timedelta(minutes=m)) for i, (d, t, m) in enumerate(rows)],
        "event_id STRING, driver_id STRING, event_type STRING, timestamp TIMESTAMP",
    )


def test_shift_lengths_against_the_hours_of_service(spark: SparkSession, tmp_path: Path) -> None:
    frame = shift_summary(_shift_events(spark)).sort_values(["driver_id", "shift"])
    assert frame["driver_id"].tolist() == ["A", "A", "B"]
    assert (frame["on_duty_s"] / 60).tolist() == [540, 120, 900]
    assert (frame["driving_s"] / 60).tolist() == [510, 120, 720 + 10 + 160]
    assert frame["violations"].tolist() == [0, 0, 1]

    inputs = _synthetic(_expected(event_model="shift"))
    inputs.shifts = frame
    (check,) = [c for c in build_checks(inputs) if c.panel == "shift lengths"]
    assert check.result == "FAIL" and "15.0 h on duty" in check.measured
    inputs.shifts = frame[frame["driver_id"] == "A"]
    (check,) = [c for c in build_checks(inputs) if c.panel == "shift lengths"]
    assert check.result == "PASS"
    assert write_report(inputs, tmp_path).panels == 6  # shift lengths in, Poisson residuals out


# --- a real backfill, then the report read through Spark ---


def _backfill(spark: SparkSession, data_dir: Path) -> None:
    configure_logging(DataDir(data_dir), stderr=False)
    try:
        config = load_config("small", companies_per_onboarding=2, company_onboarding_interval="PT1H")
        end = START + timedelta(hours=6)
        Pipeline(
            spark, DataDir(data_dir), config, speedup="max", start=START, end=end, max_intervals_per_trigger=8
        ).run_available_now()
    finally:
        configure_logging(None, stderr=False)


@pytest.fixture(scope="module")
def backfilled(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("report") / "data"
    _backfill(spark, data_dir)
    yield data_dir


def _numbers(markdown: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| ([^|]+) \| (\d+) \|$", markdown, flags=re.MULTILINE)}


def _copy(data_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    return copy


@pytest.mark.slow
def test_report_of_a_backfill_states_the_tables_own_counts(
    spark: SparkSession, backfilled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["report", "--data-dir", str(backfilled), "--out", str(out), "--master", "local[2]"]) == 0
    printed = capsys.readouterr().out
    for table in ("batches", "driver_events", "companies"):
        assert f"read delta/{table}: " in printed  # a progress line per table
    assert "(6 panels)" in printed and "0 failed" in printed
    pixels = image.imread(str(out / "report.png"))
    assert pixels.shape[0] > 400 and pixels.shape[1] > 1000

    markdown = (out / "report.md").read_text(encoding="utf-8")
    numbers = _numbers(markdown)

    def table(name: str):  # type: ignore[no-untyped-def]
        return spark.read.format("delta").load(str(backfilled / "delta" / name))

    events = table("driver_events")
    assert numbers["intervals"] == table("batches").count() == 24
    assert numbers["events"] == events.count()
    for row in events.groupBy("event_type").count().collect():
        assert numbers[f"events: {row['event_type']}"] == row["count"]
    assert numbers["companies"] == table("companies").count() == 5
    assert numbers["micro-batches logged"] >= 3
    rows = [line.split("|") for line in markdown.splitlines() if line.startswith("| ")]
    results = {cells[1].strip(): cells[-2].strip() for cells in rows}
    assert results["events per interval: spread"] == "PASS"
    assert results["event-type shares"] == "PASS"
    assert results["companies over time"] == "PASS"


@pytest.mark.slow
def test_a_dataset_md_with_other_weights_makes_the_report_fail(
    spark: SparkSession, backfilled: Path, tmp_path: Path
) -> None:
    data_dir = _copy(backfilled, tmp_path)
    dataset_md = data_dir / "manifests" / "dataset.md"
    text = dataset_md.read_text(encoding="utf-8")
    wrong = re.sub(r'"delivered": [0-9.]+', '"delivered": 0.45', text)
    wrong = re.sub(r'"start driving": [0-9.]+', '"start driving": 0.2', wrong)
    assert wrong != text
    dataset_md.write_text(wrong, encoding="utf-8")
    inputs = read_inputs(spark, DataDir(data_dir), progress=lambda _: None)
    result = write_report(inputs, tmp_path / "out")
    assert [c.panel for c in result.checks if c.failed] == ["event-type shares"]
    assert "| FAIL |" in result.markdown.read_text(encoding="utf-8")
    assert result.panels == 6


@pytest.mark.slow
def test_a_half_written_directory_reports_what_exists(spark: SparkSession, backfilled: Path, tmp_path: Path) -> None:
    data_dir = _copy(backfilled, tmp_path)
    shutil.rmtree(data_dir / "delta" / "companies")
    shutil.rmtree(data_dir / "manifests" / "logs")
    said: list[str] = []
    inputs = read_inputs(spark, DataDir(data_dir), progress=said.append)
    assert [line.split(":")[0] for line in said] == [
        "read delta/batches",
        "read delta/driver_events",
        "read delta/discarded_events",  # every table exists (empty) from the pipeline's first run
        "read manifests/logs",
    ]
    result = write_report(inputs, tmp_path / "out")
    markdown = result.markdown.read_text(encoding="utf-8")
    assert "- delta/companies: not written yet" in markdown
    assert result.failed == 0 and result.panels == 6


@pytest.mark.parametrize(
    ("setup", "says"),
    [
        ("missing", "no such directory"),
        ("empty", "is not a fleetgen data directory"),
        ("dataset only", "has no tables yet"),
        ("table without commits", "has no tables yet"),
        ("dataset.md without a config", "cannot read the recorded config"),
    ],
)
def test_a_directory_with_nothing_to_report_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, says: str
) -> None:
    data_dir = tmp_path / "data"
    if setup != "missing":
        data_dir.mkdir()
    if setup in ("dataset only", "table without commits", "dataset.md without a config"):
        (data_dir / "manifests").mkdir()
        (data_dir / "manifests" / "dataset.md").write_text("# fleetgen dataset\n", encoding="utf-8")
    if setup in ("table without commits", "dataset.md without a config"):
        (data_dir / "delta" / "batches" / "_delta_log").mkdir(parents=True)
    if setup == "dataset.md without a config":  # refused before Spark starts, so a commit file's name is enough
        (data_dir / "delta" / "batches" / "_delta_log" / f"{0:020d}.json").write_text("{}\n", encoding="utf-8")
        block = '```json\n{"seed": 1, "start": "2025-11-08T00:00:00Z", "created_at": "x", "config": {}}\n```\n'
        (data_dir / "manifests" / "dataset.md").write_text(block, encoding="utf-8")
    assert main(["report", "--data-dir", str(data_dir)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleetgen report: error: ") and says in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.slow
def test_a_living_report_says_in_its_figure_what_report_md_says(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The living preset (churn and shifts): every panel is the check of report.md, nothing on stderr."""
    data_dir = tmp_path / "living"
    configure_logging(DataDir(data_dir), stderr=False)
    try:
        config = load_config("living")
        end = START + timedelta(hours=12)
        Pipeline(
            spark, DataDir(data_dir), config, speedup="max", start=START, end=end, max_intervals_per_trigger=64
        ).run_available_now()  # one micro-batch: one point on the durations panel
    finally:
        configure_logging(None, stderr=False)
    out = tmp_path / "out"
    assert main(["report", "--data-dir", str(data_dir), "--out", str(out), "--master", "local[2]"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "", captured.err  # warnings are errors in tests, and none reached stderr
    markdown = (out / "report.md").read_text(encoding="utf-8")
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in markdown.splitlines() if line.startswith("| ")]
    results = {row[0]: row[-1] for row in rows[1:] if len(row) == 5}  # rows[0] is the header
    assert results["events per interval"] == "n/a" and results["event-type shares"] == "PASS"
    assert results["shift lengths"] == "PASS"

    inputs = read_inputs(spark, DataDir(data_dir), progress=lambda _: None)
    checks = build_checks(inputs)
    assert {c.panel: c.result for c in checks} == results
    fig = report_figure(inputs, checks)
    panels = panel_names(inputs)
    assert len(fig.axes) == len(panels) and f"({len(panels)} panels)" in captured.out
    # Every verdict of report.md has its panel, whose title carries the same verdict.
    for panel, result in results.items():
        if result in ("PASS", "FAIL"):
            (title,) = [t for t, prefixes, _ in panels if panel.startswith(prefixes)]
            assert _panel(fig, title).get_title(loc="left").endswith(result), (panel, title)
    passed, failed = sum(r == "PASS" for r in results.values()), sum(r == "FAIL" for r in results.values())
    assert f"**{passed} passed, {failed} failed**" in markdown
    assert f"({passed} passed, {failed} failed)" in str(fig.get_suptitle())
    # No Poisson band where no Poisson check runs; the asked shares are the ones the check used.
    assert not any(ax.get_title(loc="left").startswith("Are the counts Poisson") for ax in fig.axes)
    assert _labelled(_panel(fig, "Events per interval")) & {"99.9% band", "expected"} == set()
    assert _asked_bars(fig) == pytest.approx(_shares_in(_expected_column(markdown, "event-type shares")))
    assert _asked_bars(fig) == pytest.approx([0.375, 0.375, 0.25])
    left, right = _panel(fig, "Micro-batch durations").get_xlim()
    assert (right - left) * 24 * 60 <= 60  # one run's minutes, not a 2025-2029 axis
