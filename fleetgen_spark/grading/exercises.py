"""The exercises ``fleetgen grade`` knows: what each expects, and the hint for each usual mistake.

Each exercise builds its expected rows from the data directory's answer key
(:mod:`fleetgen_spark.grading.answers`), compares the learner's rows with them (:mod:`fleetgen_spark.grading.grade`)
and names the one mistake that explains most of the difference. No Spark: the learner's table
arrives as rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fleetgen_spark.core.config import EVENT_TYPES
from fleetgen_spark.core.exceptions import DataDirError
from fleetgen_spark.core.generate import EVENT_SCHEMA
from fleetgen_spark.grading.answers import (
    EVENT_FIELDS,
    HISTORY_COLUMNS,
    Generated,
    appended_windows,
    bad_reason,
    company_versions,
    drives,
    event_stream,
    history,
)
from fleetgen_spark.grading.grade import Diff, Verdict, compare, schema_problem

__all__ = ["EXERCISES", "Exercise", "GradeInput", "grade"]

Row = dict[str, Any]
SESSION_COLUMNS = ("driver_id", "session_start", "session_end", "events")
WINDOW_COLUMNS = ("window_start", "window_end", "event_type", "count")
# Watermark delays a learner may have used instead of the one asked: a table that matches one is named.
_DELAYS = tuple(timedelta(minutes=m) for m in (0, 1, 5, 10, 15, 20, 30, 45, 60, 90, 120))
RAW_COLUMNS = tuple(EVENT_SCHEMA.names)


@dataclass(frozen=True)
class GradeInput:
    """A learner's table as rows, with its columns and the name it was given on the command line."""

    name: str
    columns: tuple[str, ...]
    rows: list[Row]


@dataclass(frozen=True)
class Exercise:
    """One exercise of the catalogue (``fleetgen exercises``)."""

    name: str
    task: str  # one line
    preset: str  # the preset whose data directory suits it
    columns: tuple[str, ...]  # the columns the table must have
    extras_allowed: bool


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _ids(rows: list[Row]) -> set[str]:
    return {r["event_id"] for r in rows}


def _late_only(stream_valid: list[Row]) -> set[str]:
    """The event_ids whose every delivery was late (timestamp before the delivery's interval_start)."""
    on_time = {r["event_id"] for r in stream_valid if r["timestamp"] >= r["interval_start"]}
    return {r["event_id"] for r in stream_valid} - on_time


def _bad_hint(bad: list[Row], max_lateness: timedelta) -> str:
    reasons = Counter(bad_reason(r, max_lateness) for r in bad)
    said = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
    minutes = int(max_lateness.total_seconds() // 60)
    return (
        f"{_plural(len(bad), 'bad record was', 'bad records were')} let through ({said}): keep a record only "
        f"when truck_id is not null, event_type is one of {', '.join(EVENT_TYPES)}, "
        f"interval_start - {minutes} minutes <= timestamp < interval_end, and company_id is a known company"
    )


def _hint_dedup(gen: Generated, diff: Diff, valid: list[Row], bad: list[Row]) -> str:
    if diff.repeated:
        n = len({r["event_id"] for r in diff.repeated})
        return f"{_plural(n, 'event_id appears', 'event_ids appear')} more than once: deduplicate on event_id"
    late = _late_only(valid)
    missing_late = [r for r in diff.missing if r["event_id"] in late]
    if missing_late:
        delay = int((gen.max_lateness.total_seconds() + gen.options.config.interval_seconds) // 60)
        return (
            f"{_plural(len(missing_late), 'missing event was', 'missing events were')} delivered late: a watermark "
            f"shorter than max_lateness plus one interval drops them; use {delay} minutes or more"
        )
    let_through = [r for r in diff.extra if r.get("event_id") in _ids(bad)]
    if let_through:
        return _bad_hint(let_through, gen.max_lateness)
    if diff.missing:
        return "events are missing that were delivered on time: deduplicate on event_id alone, drop nothing else"
    if diff.wrong:
        return "keep each event's own fields: every copy of an event_id carries the same values"
    return f"some event_ids are no event of this data directory: read {gen.layout.table('driver_events')}"


def _hint_quarantine(gen: Generated, diff: Diff, found: list[Row], bad: list[Row]) -> str:
    bad_ids = _ids(bad)
    let_through = [r for r in diff.extra if r.get("event_id") in bad_ids]
    if let_through:
        return _bad_hint(let_through, gen.max_lateness)
    late = [r for r in diff.missing if r["timestamp"] < r["interval_start"]]
    if late:
        minutes = int(gen.max_lateness.total_seconds() // 60)
        return (
            f"{_plural(len(late), 'late record was', 'late records were')} dropped: a record whose timestamp is up "
            f"to {minutes} minutes (max_lateness) before its interval_start is valid"
        )
    kept = {r.get("event_id") for r in found}
    copies = [r for r in diff.missing if r["event_id"] in kept]
    if copies:
        return (
            f"{_plural(len(copies), 'duplicate delivery was', 'duplicate deliveries were')} removed: this exercise "
            "keeps every valid delivery (deduplication is the dedup exercise)"
        )
    if diff.missing:
        return "valid records were dropped: exclude only records with a defect"
    if diff.repeated:
        return "some records appear more often than they were delivered: do not union a stream with itself"
    return "rows differ from the raw stream: keep the records as delivered, every column unchanged"


def _hint_rejects(gen: Generated, diff: Diff) -> str:
    if diff.extra:
        late = [r for r in diff.extra if "timestamp" in r and r["timestamp"] < r["interval_start"]]
        if late:
            said = _plural(len(late), "late record is", "late records are")
            return f"{said} quarantined: a record late within max_lateness is valid"
        return f"{_plural(len(diff.extra), 'record is', 'records are')} quarantined that have no defect"
    return _bad_hint(diff.missing, gen.max_lateness) if diff.missing else "list each bad record once"


def grade_dedup(gen: Generated, found: GradeInput, options: dict[str, Any]) -> Verdict:
    stream = event_stream(gen)
    expected = [{c: r[c] for c in EVENT_FIELDS} for r in stream.unique()]
    diff = compare(expected, found.rows, ("event_id",), EVENT_FIELDS[1:])
    hint = _hint_dedup(gen, diff, stream.valid, stream.bad)
    return Verdict.of("dedup", found.name, diff, len(expected), len(found.rows), hint)


def grade_quarantine(gen: Generated, found: GradeInput, options: dict[str, Any]) -> Verdict:
    stream = event_stream(gen)
    diff = compare(stream.valid, found.rows, ("event_id", "batch_id"), RAW_COLUMNS[1:])
    hint = _hint_quarantine(gen, diff, found.rows, stream.bad)
    verdict = Verdict.of("quarantine", found.name, diff, len(stream.valid), len(found.rows), hint)
    rejects: GradeInput | None = options.get("quarantine")
    if rejects is None:
        return verdict
    bad = [{"event_id": r["event_id"]} for r in stream.bad]
    by_id = {r["event_id"]: r for r in stream.valid}
    rows = [{**by_id.get(r.get("event_id"), {}), "event_id": r.get("event_id")} for r in rejects.rows]
    rejected = compare(bad, rows, ("event_id",), ())
    second = Verdict.of("quarantine", rejects.name, rejected, len(bad), len(rejects.rows), _hint_rejects(gen, rejected))
    return verdict.merged(second, "quarantine table")


def grade_scd2(gen: Generated, found: GradeInput, options: dict[str, Any]) -> Verdict:
    as_of: datetime | None = options.get("as_of")
    expected = history(company_versions(gen), as_of)
    diff = compare(expected, found.rows, ("company_id", "valid_from"), HISTORY_COLUMNS[1:])
    current = Counter(r.get("company_id") for r in found.rows if r.get("is_current"))
    twice = [c for c, n in current.items() if n > 1]
    known = {r["company_id"] for r in expected}
    if twice:
        hint = (
            f"{_plural(len(twice), 'company has', 'companies have')} more than one current row: a new version "
            "closes the one before it (is_current false, valid_to = the new version's valid_from)"
        )
    elif diff.missing and all(r["company_id"] in {f.get("company_id") for f in found.rows} for r in diff.missing):
        hint = "versions are missing: keep one row per version (company_id, updated_at), not only the newest (SCD1)"
    elif as_of is not None and any(r.get("company_id") in known and r["valid_from"] > as_of for r in diff.extra):
        hint = f"versions after --as-of {as_of.isoformat()}: keep those with updated_at <= it, the last one current"
    elif "valid_to" in diff.wrong_columns:
        hint = "valid_to is the next version's valid_from (null for the current version)"
    else:
        hint = "compare with delta/companies_history: one row per version, [valid_from, valid_to), is_current"
    return Verdict.of("scd2", found.name, diff, len(expected), len(found.rows), hint)


def grade_sessions(gen: Generated, found: GradeInput, options: dict[str, Any]) -> Verdict:
    if gen.options.config.event_model != "shift":
        raise DataDirError(
            f"{gen.layout}: sessions needs a data directory whose drivers work shifts (event_model: shift, "
            "e.g. --config living); this one has event_model: independent"
        )
    expected = drives(event_stream(gen).unique())
    diff = compare(expected, found.rows, ("driver_id", "session_start"), SESSION_COLUMNS[2:])
    span = gen.options.config.interval_seconds

    def crosses(r: Row) -> bool:
        return int(r["session_start"].timestamp()) // span != int(r["session_end"].timestamp()) // span

    cut = [r for r in diff.missing if crosses(r)]
    if cut:
        said = _plural(len(cut), "session that crosses an interval edge is", "sessions that cross an interval edge are")
        hint = f"{said} missing: build sessions per driver over the whole stream, not per batch_id or interval"
    elif diff.repeated:
        hint = "a session appears more than once: deduplicate the events on event_id first"
    elif diff.extra:
        hint = "a session begins at a start driving and ends at the driver's next stopped driving; drop the rest"
    else:
        hint = "session_end is the timestamp of the stopped driving; events counts both ends"
    return Verdict.of("sessions", found.name, diff, len(expected), len(found.rows), hint)


def _minutes(delay: timedelta) -> str:
    return _plural(int(delay.total_seconds() // 60), "minute", "minutes")


def grade_late_windows(gen: Generated, found: GradeInput, options: dict[str, Any]) -> Verdict:
    delay: timedelta = options.get("watermark") or timedelta(minutes=10)
    valid, starts = event_stream(gen).valid, gen.starts()
    expected = appended_windows(valid, starts, gen.interval, delay)
    key, values = ("window_start", "event_type"), ("window_end", "count")
    diff = compare(expected, found.rows, key, values)
    hint = "count the valid records (defects filtered, unknown companies joined away) before withWatermark"
    if not diff.ok:
        same = [
            d for d in _DELAYS if compare(appended_windows(valid, starts, gen.interval, d), found.rows, key, values).ok
        ]
        if same:
            said = " or ".join(_minutes(d) for d in same)
            why = "a tighter one drops late rows and closes windows sooner" if max(same) < delay else "a looser one"
            hint = (
                f"this is what a watermark of {said} emits ({why}); the exercise asks for "
                f'withWatermark("timestamp", "{_minutes(delay)}")'
            )
        else:
            last = max((r["timestamp"] for r in valid), default=None)
            still_open = [r for r in diff.extra if last is not None and r.get("window_end", last) > last - delay]
            if still_open:
                hint = (
                    f"{_plural(len(still_open), 'window was', 'windows were')} emitted before the watermark passed "
                    "its end: append mode (outputMode('append')) emits a window once, when it has closed"
                )
    return Verdict.of("late-windows", found.name, diff, len(expected), len(found.rows), hint)


Grader = Callable[[Generated, GradeInput, dict[str, Any]], Verdict]
EXERCISES: dict[str, tuple[Exercise, Grader]] = {
    e.name: (e, g)
    for e, g in (
        (
            Exercise("dedup", "the delivered events, one row per event_id", "messy", EVENT_FIELDS, True),
            grade_dedup,
        ),
        (
            Exercise(
                "quarantine",
                "the valid records of the raw stream, bad records excluded (--quarantine-table: the rejects)",
                "messy",
                RAW_COLUMNS,
                True,
            ),
            grade_quarantine,
        ),
        (
            Exercise(
                "late-windows",
                "events per 15-minute window and event type, appended with a watermark (--watermark, default PT10M)",
                "messy",
                WINDOW_COLUMNS,
                False,
            ),
            grade_late_windows,
        ),
        (
            Exercise(
                "scd2", "type-2 history of companies from the change feed (--as-of)", "living", HISTORY_COLUMNS, False
            ),
            grade_scd2,
        ),
        (
            Exercise(
                "sessions",
                "driving sessions per driver, start driving to stopped driving",
                "living",
                SESSION_COLUMNS,
                False,
            ),
            grade_sessions,
        ),
    )
}


def grade(name: str, gen: Generated, found: GradeInput, options: dict[str, Any]) -> Verdict:
    """Grade a learner's table for one exercise: a schema problem fails in one line before any comparison."""
    exercise, grader = EXERCISES[name]
    problem = schema_problem(found.columns, exercise.columns, exercise.extras_allowed)
    if problem is None and options.get("quarantine") is not None:
        second = schema_problem(options["quarantine"].columns, ("event_id",), True)
        problem = f"--quarantine-table {second}" if second else None
    if problem is not None:
        return Verdict.failed_schema(name, found.name, problem)
    return grader(gen, found, options)
