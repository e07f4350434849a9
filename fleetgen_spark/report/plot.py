"""The report's figure, a grid of small plots, one per check, drawn headless; and the report's files.

Built on ``matplotlib.figure.Figure`` rather than pyplot: no display and no global backend
switch (a notebook that imports this keeps its inline plots); ``savefig`` renders the PNG
with Agg.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure

from fleetgen_spark.core.shifts import HOS_DRIVING_S, HOS_ON_DUTY_S
from fleetgen_spark.report.checks import build_checks, expected_shares, poisson_applies, poisson_view, render_markdown
from fleetgen_spark.report.model import Check, ReportInputs

__all__ = ["ReportResult", "draw_report", "panel_names", "report_figure", "write_report"]

Panel = Callable[[Axes, ReportInputs], None]
_REALISM = ("late share", "duplicate share", "bad-record share")
_COLORS = {"PASS": "#1a7f37", "FAIL": "#cf222e"}
OBSERVED, EXPECTED, BAND = "#0969da", "#333333", "#9ec5fe"


def _title(ax: Axes, text: str, checks: Sequence[Check], prefixes: tuple[str, ...]) -> None:
    results = [c.result for c in checks if c.panel.startswith(prefixes)]
    verdict = "FAIL" if "FAIL" in results else ("PASS" if "PASS" in results else "")
    ax.set_title(f"{text}  {verdict}".rstrip(), fontsize=10, loc="left", color=_COLORS.get(verdict, "black"))


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def _time_axis(ax: Axes) -> None:
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.tick_params(axis="y", labelsize=8)


def _events_per_interval(ax: Axes, inputs: ReportInputs) -> None:
    view = poisson_view(inputs)
    if view is None:
        _empty(ax, "delta/batches has no intervals yet")
        return
    frame, res = view.frame, view.result
    x = frame["interval_start"]
    if res is None:  # not Poisson under this event model: no band, no expectation, as in the check
        ax.plot(x, frame["observed"], "o", ms=2.5, color=OBSERVED, label="generated")
        ax.text(
            0.99,
            0.97,
            f"event_model {inputs.expected.event_model}: drivers emit only on duty,\nso no Poisson band is checked",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            color="#666666",
        )
        ax.set_ylabel("events", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        ax.set_ylim(0, max(float(frame["observed"].max()), 1.0) * 1.3)  # room for the legend and the note
        _time_axis(ax)
        return
    live = (frame["expected"] > 0).to_numpy()
    if not live.all():  # intervals before the first onboarding would squash the y axis
        ax.text(
            0.01,
            0.02,
            f"{int((~live).sum())} interval(s) before anyone was eligible not shown",
            transform=ax.transAxes,
            fontsize=7,
            color="#666666",
        )
    shown = live if live.any() else np.ones_like(live)
    x = x[shown]
    # The band the spread check counts, from the same result (stats.poisson_check).
    ax.fill_between(x, res.lo[shown], res.hi[shown], step="mid", color=BAND, label="99.9% band")
    ax.step(x, frame["expected"][shown], where="mid", color=EXPECTED, lw=1, ls="--", label="expected")
    ax.plot(x, frame["observed"][shown], "o", ms=2.5, color=OBSERVED, label="generated")
    ax.set_ylabel("events", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", ncols=3)
    ax.margins(y=0.25)
    _time_axis(ax)


RESIDUAL_LIMIT = 4.5


def _residuals(ax: Axes, inputs: ReportInputs) -> None:
    view = poisson_view(inputs)
    if view is None or not (view.frame["expected"] > 0).any():
        _empty(ax, "no interval with eligible companies yet")
        return
    frame = view.frame[view.frame["expected"] > 0]
    z = (frame["observed"] - frame["expected"]) / np.sqrt(frame["expected"])
    # Residuals beyond the axis go into its outer bins: an empty histogram would say nothing
    # (and numpy's density of zero counts divides by zero).
    clipped = np.clip(z, -RESIDUAL_LIMIT, RESIDUAL_LIMIT)
    bins = [x / 2 for x in range(-9, 10)]
    ax.hist(clipped, bins=bins, density=True, color=OBSERVED, alpha=0.7, label="generated")
    grid = np.linspace(-RESIDUAL_LIMIT, RESIDUAL_LIMIT, 200)
    ax.plot(grid, np.exp(-(grid**2) / 2) / math.sqrt(2 * math.pi), color=EXPECTED, lw=1.2, label="N(0, 1)")
    beyond = int((np.abs(z) > RESIDUAL_LIMIT).sum())
    if beyond:
        ax.text(0.01, 0.95, f"{beyond} beyond +-{RESIDUAL_LIMIT:g}, in the outer bins", transform=ax.transAxes,
                fontsize=7, color="#cf222e", va="top")  # fmt: skip
    ax.set_xlabel("(observed - expected) / sqrt(expected)", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=8)


def _shares(ax: Axes, inputs: ReportInputs) -> None:
    if not inputs.event_types:
        _empty(ax, "delta/driver_events has no events yet")
        return
    weights = expected_shares(inputs.expected)  # what the shares check expects
    names = list(weights) + sorted(set(inputs.event_types) - set(weights))
    total = sum(inputs.event_types.values())
    pos = np.arange(len(names))
    observed = [inputs.event_types.get(n, 0) / total for n in names]
    asked = "asked (weights)" if inputs.expected.event_model != "shift" else "asked (shift shares of the weights)"
    ax.bar(pos - 0.2, [weights.get(n, 0.0) for n in names], 0.4, color="#bbbbbb", label=asked)
    ax.bar(pos + 0.2, observed, 0.4, color=OBSERVED, label="generated")
    for p, share in zip(pos, observed, strict=True):
        ax.text(p + 0.2, share, f"{share:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(pos, names, fontsize=8)
    ax.set_ylabel("share of events", fontsize=8)
    ax.set_ylim(0, max([*observed, *weights.values()]) * 1.35)  # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper right")
    ax.tick_params(axis="y", labelsize=8)


def _companies(ax: Axes, inputs: ReportInputs) -> None:
    if inputs.companies is None or inputs.companies.empty:
        _empty(ax, "delta/companies not written yet")
        return
    frame = inputs.companies
    times = list(frame["time"])
    onboarded, active = list(frame["onboarded"]), list(frame["active"])
    batches = inputs.batches if inputs.batches is not None and not inputs.batches.empty else None
    if batches is not None and batches["interval_end"].max() > times[-1]:
        times.append(batches["interval_end"].max())  # carry the last step to the end of the data
        onboarded.append(onboarded[-1])
        active.append(active[-1])
    ax.step(times, onboarded, where="post", color=OBSERVED, lw=2, label="onboarded")
    label = "active" if inputs.active_from_history else "active now (by onboarding time)"
    ax.step(times, active, where="post", color="#8250df", ls=":", lw=2, label=label)
    if batches is not None:
        ax.plot(batches["interval_end"], batches["total_companies"], ".", ms=3, color="#999999", label="plan (batches)")
    ax.set_ylabel("companies", fontsize=8)
    ax.set_ylim(0, max(onboarded) * 1.15 + 1)
    ax.legend(fontsize=7, loc="lower right")
    _time_axis(ax)


def _durations(ax: Axes, inputs: ReportInputs) -> None:
    logged = inputs.durations
    if logged is None or logged.empty:
        _empty(ax, "no 'micro-batch done' records in manifests/logs")
        return
    seconds = logged["duration_ms"].astype(float) / 1000
    ax.plot(logged["timestamp"], seconds, "o", ms=4, color=OBSERVED, label="micro-batch work (logs)")
    shown, instants = [seconds], [logged["timestamp"]]
    if inputs.batches is not None and inputs.batches["generation_time"].nunique() > 1:
        commits = pd.Series(sorted(inputs.batches["generation_time"].unique()))
        gaps = commits.diff().dt.total_seconds()
        ax.plot(commits, gaps, "x", ms=4, color="#bf8700", label="time between commits (batches)")
        shown.append(gaps.dropna())
        instants.append(commits)
    ax.axhline(float(seconds.median()), color=EXPECTED, lw=0.8, ls="--", label=f"median work {seconds.median():.2f} s")
    values = pd.concat(shown)
    if values.min() > 0 and values.max() / values.min() > 50:  # a pause or a slow start would flatten the rest
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_ylabel("seconds", fontsize=8)
    ax.legend(fontsize=7)
    _time_axis(ax)
    _around_one_instant(ax, pd.concat(instants))


def _around_one_instant(ax: Axes, times: pd.Series) -> None:
    """Wall-clock times of one run: a date axis over a single instant spans matplotlib's default
    of 4 years (one point on a 2025-2029 axis), so show a minute on each side; a run under a
    day reads as hours, minutes and seconds (UTC)."""
    stamps = pd.to_datetime(times.dropna(), utc=True)
    if stamps.empty:
        return
    span = stamps.max() - stamps.min()
    if span < pd.Timedelta(seconds=1):
        ax.set_xlim(stamps.min() - pd.Timedelta(minutes=1), stamps.min() + pd.Timedelta(minutes=1))
    if span < pd.Timedelta(days=1):
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]  # untyped in matplotlib


def _discards(ax: Axes, inputs: ReportInputs) -> None:
    if inputs.discards is None:
        _empty(ax, "delta/discarded_events not written yet")
        return
    if not inputs.discards:
        _empty(ax, "no discarded records")
        return
    names = sorted(inputs.discards)
    counts = [inputs.discards[n] for n in names]
    ax.barh(names, counts, color="#cf222e")
    for i, c in enumerate(counts):
        ax.text(c, i, f" {c}", va="center", fontsize=7)
    ax.set_xlabel("records", fontsize=8)
    ax.tick_params(labelsize=7)


def _lateness(ax: Axes, inputs: ReportInputs) -> None:
    """Late rows by whole minutes between their timestamp and the start of the interval that delivered them."""
    late = inputs.lateness_minutes or {}
    minutes = sorted(late)
    ax.bar(minutes, [late[m] for m in minutes], width=1.0, align="edge", color=OBSERVED, label="late rows")
    limit = inputs.expected.max_lateness_s / 60
    ax.axvline(limit, color="#cf222e", lw=1.2, ls="--", label=f"max_lateness {limit:g} min")
    ax.set_xlabel("minutes before interval_start", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=8)


def _realism_shares(ax: Axes, inputs: ReportInputs) -> None:
    exp = inputs.expected
    total = int(inputs.batches["event_count"].sum()) if inputs.batches is not None else 0
    unique = max(total - (inputs.realism_column("duplicate_events") or 0), 1)
    rows = [
        ("late", exp.late_fraction, (inputs.realism_column("late_events") or 0) / max(total, 1)),
        ("duplicate", exp.duplicate_fraction, (inputs.realism_column("duplicate_events") or 0) / unique),
        ("bad record", exp.bad_record_fraction, (inputs.realism_column("bad_records") or 0) / unique),
    ]
    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [r[1] for r in rows], 0.4, color="#bbbbbb", label="asked")
    ax.bar(pos + 0.2, [r[2] for r in rows], 0.4, color=OBSERVED, label="generated")
    ax.set_xticks(pos, [r[0] for r in rows], fontsize=8)
    ax.set_ylabel("share", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(axis="y", labelsize=8)


def _shifts(ax: Axes, inputs: ReportInputs) -> None:
    if inputs.shifts is None or inputs.shifts.empty:
        _empty(ax, "no shifts in driver_events yet")
        return
    bins = [h / 2 for h in range(0, 33)]
    ax.hist(inputs.shifts["on_duty_s"] / 3600, bins=bins, color=OBSERVED, alpha=0.6, label="on duty")
    ax.hist(inputs.shifts["driving_s"] / 3600, bins=bins, color="#bf8700", alpha=0.6, label="driving")
    on_duty, driving = HOS_ON_DUTY_S / 3600, HOS_DRIVING_S / 3600  # the limits the check uses
    ax.axvline(on_duty, color=OBSERVED, ls="--", lw=1.2, label=f"{on_duty:g} h on-duty limit")
    ax.axvline(driving, color="#bf8700", ls="--", lw=1.2, label=f"{driving:g} h driving limit")
    ax.set_xlabel("hours per shift", fontsize=8)
    ax.set_ylabel("shifts", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=8)


def _has_realism(inputs: ReportInputs) -> bool:
    exp = inputs.expected
    asked = exp.late_fraction or exp.duplicate_fraction or exp.bad_record_fraction
    seen = any(inputs.realism_column(c) for c in ("late_events", "duplicate_events", "bad_records"))
    return bool(asked or seen)


def panel_names(inputs: ReportInputs) -> list[tuple[str, tuple[str, ...], Panel]]:
    """(title, the checks it shows (panel prefixes), drawer) of every panel this data directory gets, in order."""
    panels: list[tuple[str, tuple[str, ...], Panel]] = []
    if poisson_applies(inputs.expected):  # the panels of the Poisson checks, exactly when they run
        panels += [
            ("Events per interval vs Poisson", ("events per interval",), _events_per_interval),
            ("Are the counts Poisson? (residuals)", ("events per interval: spread",), _residuals),
        ]
    else:
        panels.append(("Events per interval (no Poisson check)", ("events per interval",), _events_per_interval))
    panels += [
        ("Event-type shares vs weights", ("event-type shares",), _shares),
        ("Companies over time", ("companies over time",), _companies),
        ("Micro-batch durations", ("micro-batch durations",), _durations),
        ("Discards by reason", ("discards by reason",), _discards),
    ]
    if inputs.realism_column("late_events") and inputs.lateness_minutes:
        panels.append(("Lateness vs max_lateness", ("lateness",), _lateness))
    if _has_realism(inputs):
        panels.append(("Realism shares vs asked", _REALISM, _realism_shares))
    if inputs.expected.event_model == "shift":
        panels.append(("Shift lengths vs hours of service", ("shift lengths",), _shifts))
    return panels


def draw_report(inputs: ReportInputs, checks: Sequence[Check], path: Path) -> int:
    """Draw every panel into one PNG at ``path``; return how many panels it has."""
    fig = report_figure(inputs, checks)
    fig.savefig(path, format="png")
    return len(fig.axes)


def report_figure(inputs: ReportInputs, checks: Sequence[Check]) -> Figure:
    """The report's figure, one panel per check (see ``panel_names``), not yet saved."""
    panels = panel_names(inputs)
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.0 * cols, 3.4 * rows), dpi=90)
    flat = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax, (title, prefixes, draw) in zip(flat, panels, strict=False):
        draw(ax, inputs)
        _title(ax, title, checks, prefixes)
        ax.grid(alpha=0.3)
    for ax in flat[len(panels) :]:
        fig.delaxes(ax)
    failed = sum(c.failed for c in checks)
    fig.suptitle(
        f"fleetgen report: {inputs.data_dir}  ({sum(c.result == 'PASS' for c in checks)} passed, {failed} failed)",
        fontsize=11,
        color=_COLORS["FAIL"] if failed else "black",
    )
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class ReportResult:
    """What ``write_report`` wrote: the two files, the figure's panel count and the checks."""

    png: Path
    markdown: Path
    panels: int
    checks: tuple[Check, ...]

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.checks)


def write_report(inputs: ReportInputs, out_dir: Path) -> ReportResult:
    """Write ``report.png`` and ``report.md`` into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    checks = build_checks(inputs)
    png = out_dir / "report.png"
    panels = draw_report(inputs, checks, png)
    markdown = out_dir / "report.md"
    tmp = markdown.with_suffix(".md.tmp")
    tmp.write_text(render_markdown(inputs, checks, png.name), encoding="utf-8")
    tmp.replace(markdown)
    return ReportResult(png, markdown, panels, tuple(checks))
