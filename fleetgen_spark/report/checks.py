"""``fleetgen report``: what was generated against what was asked, as checks and Markdown.

Pure pandas (no Spark): :mod:`~fleetgen_spark.report.data` reads a data directory into a
``ReportInputs`` (:mod:`~fleetgen_spark.report.model`), ``build_checks`` turns it into ``Check`` rows
using ``stats`` and ``render_markdown`` into text; :mod:`~fleetgen_spark.report.plot` draws the figure
and writes both files (``write_report``). Imports go one way: ``plot`` -> ``checks`` -> ``model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from fleetgen_spark.core.shifts import HOS_DRIVING_S, HOS_OFF_DUTY_S, HOS_ON_DUTY_S, type_shares
from fleetgen_spark.core.stats import ALPHA, SHARE_SLACK, PoissonResult, fraction_check, poisson_check, shares_check
from fleetgen_spark.report.model import Check, Expected, ReportInputs

__all__ = [
    "PoissonView",
    "build_checks",
    "expected_shares",
    "interval_counts",
    "numbers",
    "poisson_applies",
    "poisson_view",
    "render_markdown",
]


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def interval_counts(inputs: ReportInputs) -> tuple[pd.DataFrame, str] | None:
    """Per-interval observed and expected counts and where the counts come from, or None without batches.

    With late or duplicate deliveries the delivered counts are not Poisson; the events are
    then counted once each by the interval of their timestamp, leaving out the last
    ``max_lateness`` (whose late deliveries a bounded run did not make).
    """
    if inputs.batches is None or inputs.batches.empty:
        return None
    frame = inputs.batches.sort_values("interval_start").reset_index(drop=True)
    exp = inputs.expected
    frame = frame.assign(expected=frame["eligible_companies"].astype(float) * exp.per_company)
    messy = bool(inputs.realism_column("late_events")) or bool(inputs.realism_column("duplicate_events"))
    if messy and inputs.event_time_counts is not None:
        settled_end = frame["interval_end"].max() - pd.Timedelta(seconds=exp.max_lateness_s)
        frame = frame[frame["interval_end"] <= settled_end]
        counts = inputs.event_time_counts
        observed = [int(counts.get(int(pd.Timestamp(t).timestamp()), 0)) for t in frame["interval_start"]]
        return frame.assign(observed=observed), "distinct events by event-time interval"
    return frame.assign(observed=frame["event_count"].astype(int)), "batches.event_count"


@dataclass(frozen=True)
class PoissonView:
    """The per-interval counts and, when the event model makes them Poisson, the test they face.

    The checks and the figure both take this, so the figure draws a band (and residuals)
    exactly when a check tests against it, and the band is the one the check used.
    """

    frame: pd.DataFrame  # interval_start, expected, observed, ...
    source: str  # where the observed counts come from
    result: PoissonResult | None  # None: the counts are not Poisson under this event model


def poisson_applies(expected: Expected) -> bool:
    """Whether counts per interval are Poisson under this event model (only independent events are)."""
    return expected.event_model == "independent"


def poisson_view(inputs: ReportInputs) -> PoissonView | None:
    """The counts per interval and their Poisson test, or None without batches.

    Under ``event_model: shift`` a driver emits only on duty, so an interval's count depends
    on the hour of the day and on the shifts already under way: no Poisson test applies.
    """
    found = interval_counts(inputs)
    if found is None:
        return None
    frame, source = found
    if not poisson_applies(inputs.expected):
        return PoissonView(frame, source, None)
    return PoissonView(frame, source, poisson_check(frame["observed"].to_numpy(), frame["expected"].to_numpy()))


def _poisson_checks(inputs: ReportInputs) -> list[Check]:
    panel = "events per interval"
    view = poisson_view(inputs)
    if view is None:
        return [Check(panel, "no intervals yet", "-", "-", "n/a")]
    frame, source, res = view.frame, view.source, view.result
    if res is None:
        measured = f"{int(frame['observed'].sum())} events in {len(frame)} intervals"
        model = inputs.expected.event_model
        return [Check(panel, measured, "-", f"none: under event_model {model} drivers emit only on duty", "n/a")]
    mean = Check(
        f"{panel}: total",
        f"{res.observed_total} events in {res.intervals} intervals ({source})",
        f"{res.expected_total:.0f} = sum(eligible_companies) x {inputs.expected.drivers_per_company} drivers "
        f"x {inputs.expected.event_rate_per_driver:g}",
        f"z = {res.mean_z:+.2f}, p = {res.mean_p:.3g}"
        + (f"; {res.impossible} intervals with events but nobody eligible" if res.impossible else ""),
        _verdict(res.mean_p >= ALPHA and res.impossible == 0),
    )
    live = int((frame["expected"] > 0).sum())
    spread = Check(
        f"{panel}: spread",
        f"{res.inside_band} of {res.intervals} inside the 99.9% Poisson band",
        f"variance = mean (index of dispersion ~ chi2({live}))",
        f"dispersion = {res.dispersion:.1f}, p = {res.dispersion_p:.3g}",
        _verdict(res.dispersion_p >= ALPHA and res.impossible == 0),
    )
    return [mean, spread]


def expected_shares(expected: Expected) -> dict[str, float]:
    """The event-type shares the check expects and the figure draws as "asked".

    Independent events follow ``event_type_weights``; under the shift model starts and
    stops alternate, so the weights mean shares of a shift (``shifts.type_shares``).
    """
    if expected.event_model == "shift":
        return type_shares(expected.event_type_weights)
    return dict(expected.event_type_weights)


def _shares_check(inputs: ReportInputs) -> Check:
    panel = "event-type shares"
    if not inputs.event_types:
        return Check(panel, "no events yet", "-", "-", "n/a")
    res = shares_check(inputs.event_types, expected_shares(inputs.expected))
    measured = ", ".join(f"{n} {c / max(res.total, 1):.3f}" for n, c in res.counts.items())
    expected = ", ".join(f"{n} {w:g}" for n, w in res.weights.items())
    test = f"chi2 = {res.chi2:.1f}, df = {res.df}, p = {res.p:.3g}"
    if res.unexpected:
        test += f"; types with no weight seen: {', '.join(res.unexpected)}"
    return Check(panel, measured, expected, test, _verdict(res.passed))


def onboarded_before(companies: pd.DataFrame, moments: pd.Series) -> np.ndarray:
    """Companies with ``created_at < moment`` for each moment, from the cumulative companies frame."""
    times = companies["time"].to_numpy()
    idx = np.searchsorted(times, moments.to_numpy(), side="left")
    onboarded = companies["onboarded"].to_numpy()
    return np.where(idx > 0, onboarded[np.maximum(idx - 1, 0)], 0)


def _companies_check(inputs: ReportInputs) -> Check:
    panel = "companies over time"
    if inputs.companies is None or inputs.companies_rows is None:
        return Check(panel, "no companies table yet", "-", "-", "n/a")
    most = inputs.expected.number_of_companies
    total = int(inputs.companies["onboarded"].iloc[-1]) if not inputs.companies.empty else 0
    active = int(inputs.companies["active"].iloc[-1]) if not inputs.companies.empty else 0
    measured = f"{total} onboarded, {active} active"
    expected = f"<= {most} (number_of_companies)"
    if inputs.batches is None or inputs.batches.empty:
        return Check(panel, measured, expected, f"fleet size {total}", _verdict(total <= most))
    table = onboarded_before(inputs.companies, inputs.batches["interval_end"])
    differ = int((table != inputs.batches["total_companies"].to_numpy()).sum())
    test = f"created_at < interval_end matches batches.total_companies in {len(table) - differ} of {len(table)}"
    return Check(panel, measured, expected, test, _verdict(differ == 0 and total <= most))


def _durations_check(inputs: ReportInputs) -> Check:
    panel = "micro-batch durations"
    if inputs.durations is None or inputs.durations.empty:
        return Check(panel, "no 'micro-batch done' records in manifests/logs", "-", "-", "n/a")
    ms = inputs.durations["duration_ms"].astype(float)
    intervals = inputs.durations["intervals"].astype(float)
    measured = (
        f"{len(ms)} micro-batch{'es' if len(ms) != 1 else ''}: median {ms.median() / 1000:.2f} s, "
        f"p95 {ms.quantile(0.95) / 1000:.2f} s, "
        f"max {ms.max() / 1000:.2f} s"
    )
    per_interval = (ms.sum() / 1000) / max(intervals.sum(), 1)
    return Check(panel, measured, "-", f"{per_interval:.3f} s per interval (from the JSON logs)", "info")


def _discards_check(inputs: ReportInputs) -> Check:
    panel = "discards by reason"
    if inputs.discards is None:
        return Check(panel, "no discarded_events table yet", "-", "-", "n/a")
    events = sum(n for k, n in inputs.discards.items() if k.startswith("events:"))
    measured = ", ".join(f"{k} {n}" for k, n in sorted(inputs.discards.items())) or "none"
    bad = inputs.realism_column("bad_records")
    if bad is not None:
        return Check(
            panel, measured, f"{bad} = sum(batches.bad_records)", "event discards equal", _verdict(events == bad)
        )
    if inputs.expected.bad_record_fraction <= 0:
        return Check(
            panel, measured, "0 event discards (bad_record_fraction 0)", "none expected", _verdict(events == 0)
        )
    return Check(panel, measured, "-", "batches has no bad_records column", "info")


def _realism_checks(inputs: ReportInputs) -> list[Check]:
    """Late, duplicate and bad shares against what was asked, when the knob or its column is nonzero."""
    exp = inputs.expected
    checks: list[Check] = []
    total = int(inputs.batches["event_count"].sum()) if inputs.batches is not None else 0
    unique = total - (inputs.realism_column("duplicate_events") or 0)
    for name, column, asked, trials in (
        ("late share", "late_events", exp.late_fraction, total),
        ("duplicate share", "duplicate_events", exp.duplicate_fraction, unique),
        ("bad-record share", "bad_records", exp.bad_record_fraction, unique),
    ):
        count = inputs.realism_column(column)
        if not asked and not count:
            continue
        if count is None:
            checks.append(Check(name, f"batches has no {column} column", f"{asked:g}", "-", "n/a"))
            continue
        res = fraction_check(count, trials, asked)
        checks.append(
            Check(
                name,
                f"{res.share:.4f} ({count} of {trials})",
                f"{asked:g}",
                f"binomial p = {res.p:.3g} (or within {SHARE_SLACK:.0%} of asked)",
                _verdict(res.passed),
            )
        )
    if inputs.realism_column("late_events") and inputs.lateness_max_s is not None:
        worst, limit = inputs.lateness_max_s, exp.max_lateness_s
        measured = f"latest {worst / 60:.1f} min after its timestamp"
        expected = f"<= {limit / 60:g} min (max_lateness)"
        checks.append(Check("lateness", measured, expected, "max", _verdict(worst <= limit)))
    return checks


def _shifts_check(inputs: ReportInputs) -> list[Check]:
    if inputs.expected.event_model != "shift":
        return []
    panel = "shift lengths"
    if inputs.shifts is None or inputs.shifts.empty:
        return [Check(panel, "no shifts in driver_events yet", "-", "-", "n/a")]
    frame = inputs.shifts
    on_duty, driving = float(frame["on_duty_s"].max()), float(frame["driving_s"].max())
    bad = int(frame["violations"].sum())
    measured = f"{len(frame)} shifts: longest {on_duty / 3600:.1f} h on duty, {driving / 3600:.1f} h driving"
    expected = f"<= {HOS_ON_DUTY_S // 3600} h on duty, <= {HOS_DRIVING_S // 3600} h driving, start/stop alternate"
    test = f"{bad} events out of order (a gap of {HOS_OFF_DUTY_S // 3600} h or more separates shifts)"
    passed = on_duty <= HOS_ON_DUTY_S and driving <= HOS_DRIVING_S and bad == 0
    return [Check(panel, measured, expected, test, _verdict(passed))]


def build_checks(inputs: ReportInputs) -> list[Check]:
    """Every row of the report, in the order of the figure's panels."""
    return [
        *_poisson_checks(inputs),
        _shares_check(inputs),
        _companies_check(inputs),
        _durations_check(inputs),
        _discards_check(inputs),
        *_realism_checks(inputs),
        *_shifts_check(inputs),
    ]


def numbers(inputs: ReportInputs) -> list[tuple[str, int]]:
    """The tables' own counts, as the report states them (a test compares them with Spark's)."""
    found: list[tuple[str, int]] = []
    if inputs.batches is not None:
        found += [("intervals", len(inputs.batches)), ("events", int(inputs.batches["event_count"].sum()))]
        for column in ("late_events", "duplicate_events", "bad_records"):
            value = inputs.realism_column(column)
            if value is not None:
                found.append((column, value))
    if inputs.event_types is not None:
        found += [(f"events: {name}", count) for name, count in sorted(inputs.event_types.items())]
    if inputs.companies_rows is not None:
        found.append(("companies", inputs.companies_rows))
    if inputs.discards is not None:
        found.append(("discarded records", sum(inputs.discards.values())))
    if inputs.durations is not None:
        found.append(("micro-batches logged", len(inputs.durations)))
    if inputs.shifts is not None:
        found.append(("shifts", len(inputs.shifts)))
    return found


def render_markdown(inputs: ReportInputs, checks: Sequence[Check], png_name: str = "report.png") -> str:
    failed = sum(c.failed for c in checks)
    passed = sum(c.result == "PASS" for c in checks)
    exp = inputs.expected
    lines = [
        f"# fleetgen report: {inputs.data_dir}",
        "",
        f"Written {datetime.now(timezone.utc).isoformat(timespec='seconds').replace('+00:00', 'Z')}. "
        f"Seed {inputs.seed}, start {inputs.start}. Expected values come from the config recorded in "
        "manifests/dataset.md: "
        f"{exp.drivers_per_company} drivers per company, {exp.event_rate_per_driver:g} events per driver "
        f"per interval of {exp.interval_s // 60} min"
        + (" on duty (event model shift)" if exp.event_model == "shift" else "")
        + f", up to {exp.number_of_companies} companies.",
        "",
        f"**{passed} passed, {failed} failed** (significance level {ALPHA:g}).",
        "",
        f"![report]({png_name})",
        "",
        "## Checks",
        "",
        "| panel | measured | expected | test | result |",
        "|---|---|---|---|---|",
        *(f"| {c.panel} | {c.measured} | {c.expected} | {c.test} | {c.result} |" for c in checks),
        "",
        "## Numbers",
        "",
        "| quantity | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in numbers(inputs)),
        "",
    ]
    if inputs.missing:
        lines += ["## Not in this data directory yet", "", *(f"- {m}" for m in inputs.missing), ""]
    return "\n".join(lines)
