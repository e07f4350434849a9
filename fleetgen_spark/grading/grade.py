"""Compare a learner's rows with the expected ones and say, specifically, what differs. Pure Python.

Strict on what identifies a row and on counts (a row is matched by its key; a key delivered a
different number of times is missing or extra copies), tolerant on what Spark leaves free: row
order, column order, and extra columns where the exercise allows them. Timestamps are compared at
microseconds (:func:`fleetgen_spark.grading.answers.table_rows` truncates finer ones).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["EXAMPLES", "Diff", "Verdict", "compare", "schema_problem"]

EXAMPLES = 5  # examples shown of each kind of difference
Row = dict[str, Any]
Key = tuple[Any, ...]


@dataclass
class Diff:
    """How the learner's rows differ from the expected ones, by key."""

    key: tuple[str, ...]
    missing: list[Row] = field(default_factory=list)  # expected rows (or copies of them) not found
    extra: list[Row] = field(default_factory=list)  # rows whose key is expected nowhere
    repeated: list[Row] = field(default_factory=list)  # more copies of an expected key than expected
    wrong: list[tuple[Row, Row]] = field(default_factory=list)  # (expected, found) for a key found, values differ
    wrong_columns: dict[str, int] = field(default_factory=dict)  # column -> rows wrong in it

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.repeated or self.wrong)


def _shown(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _sort_key(row: Row, columns: Sequence[str]) -> tuple[str, ...]:
    return tuple(repr(_shown(row.get(c))) for c in columns)


def compare(expected: list[Row], found: list[Row], key: Sequence[str], values: Sequence[str]) -> Diff:
    """Match ``found`` to ``expected`` by ``key`` (with multiplicity) and compare ``values`` of the matches."""
    diff = Diff(tuple(key))
    want: dict[Key, list[Row]] = defaultdict(list)
    got: dict[Key, list[Row]] = defaultdict(list)
    for row in expected:
        want[tuple(row[k] for k in key)].append(row)
    for row in found:
        got[tuple(row.get(k) for k in key)].append(row)
    for k, rows in sorted(got.items(), key=lambda item: repr(item[0])):
        if k not in want:
            diff.extra.extend(rows)
    for k, wanted in sorted(want.items(), key=lambda item: repr(item[0])):
        have = got.get(k, [])
        order = [*key, *values]
        wanted = sorted(wanted, key=lambda r: _sort_key(r, order))
        have = sorted(have, key=lambda r: _sort_key(r, order))
        diff.missing.extend(wanted[len(have) :])
        diff.repeated.extend(have[len(wanted) :])
        for w, h in zip(wanted, have, strict=False):
            bad = [c for c in values if w[c] != h.get(c)]
            if bad:
                diff.wrong.append((w, h))
                for c in bad:
                    diff.wrong_columns[c] = diff.wrong_columns.get(c, 0) + 1
    return diff


def schema_problem(columns: Sequence[str], required: Sequence[str], extras_allowed: bool) -> str | None:
    """One line naming what is wrong with a table's columns, or None when they will do."""
    have = set(columns)
    missing = [c for c in required if c not in have]
    if missing:
        return (
            f"wrong schema: missing column(s) {', '.join(missing)}; expected columns: {', '.join(required)} "
            f"(found: {', '.join(columns) or 'none'})"
        )
    if not extras_allowed:
        extra = [c for c in columns if c not in set(required)]
        if extra:
            return f"wrong schema: unexpected column(s) {', '.join(extra)}; expected exactly: {', '.join(required)}"
    return None


@dataclass
class Verdict:
    """A grade: PASS or FAIL, a one-line summary, the counts, examples of each difference and a hint."""

    exercise: str
    passed: bool
    summary: str
    table: str
    expected_rows: int = 0
    found_rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    wrong_columns: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Any]] = field(default_factory=dict)
    hint: str | None = None

    @classmethod
    def failed_schema(cls, exercise: str, table: str, problem: str) -> Verdict:
        return cls(exercise, False, problem, table)

    @classmethod
    def of(cls, exercise: str, table: str, diff: Diff, expected: int, found: int, hint: str | None) -> Verdict:
        counts = {
            "missing": len(diff.missing),
            "extra": len(diff.extra),
            "duplicate": len(diff.repeated),
            "wrong": len(diff.wrong),
        }
        key = list(diff.key)
        shown_key = (lambda r: {k: _shown(r.get(k)) for k in key}) if key else (lambda r: r)
        examples: dict[str, list[Any]] = {
            "missing": [shown_key(r) for r in diff.missing[:EXAMPLES]],
            "extra": [shown_key(r) for r in diff.extra[:EXAMPLES]],
            "duplicate": [shown_key(r) for r in diff.repeated[:EXAMPLES]],
            "wrong": [
                {
                    **shown_key(w),
                    **{c: {"expected": _shown(w[c]), "found": _shown(h.get(c))} for c in w if w[c] != h.get(c)},
                }
                for w, h in diff.wrong[:EXAMPLES]
            ],
        }
        examples = {k: v for k, v in examples.items() if v}
        if diff.ok:
            summary = f"{found} rows, every one as expected"
        else:
            parts = [f"{n} {what}" for what, n in counts.items() if n]
            summary = f"{found} rows, {expected} expected: " + ", ".join(parts) + " rows"
            if diff.wrong_columns:
                summary += " (wrong in " + ", ".join(f"{c}: {n}" for c, n in diff.wrong_columns.items()) + ")"
        return cls(
            exercise,
            diff.ok,
            summary,
            table,
            expected,
            found,
            {k: v for k, v in counts.items() if v},
            dict(diff.wrong_columns),
            examples,
            None if diff.ok else hint,
        )

    def merged(self, other: Verdict, label: str) -> Verdict:
        """This verdict and a second table's (``--quarantine-table``): failed when either failed."""
        if other.passed:
            self.summary += f"; {label}: {other.summary}"
            return self
        if self.passed:
            self.passed, self.hint = False, other.hint
            self.summary = f"{label}: {other.summary} (main table: {self.summary})"
        else:
            self.summary += f"; {label}: {other.summary}"
            self.hint = self.hint or other.hint
        for name, rows in other.examples.items():
            self.examples[f"{label} {name}"] = rows
        for name, n in other.counts.items():
            self.counts[f"{label} {name}"] = n
        return self

    def text(self) -> str:
        """For people: the verdict line, then the examples and the hint, a few short lines."""
        if self.passed:
            return f"PASS: {self.exercise}: {self.table}: {self.summary}"
        lines = [f"FAIL: {self.exercise}: {self.table}: {self.summary}"]
        for name, rows in self.examples.items():
            lines.append(f"  {name} (e.g.):")
            lines.extend(f"    {json.dumps(r, default=str)}" for r in rows)
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "exercise": self.exercise,
                "result": "PASS" if self.passed else "FAIL",
                "passed": self.passed,
                "table": self.table,
                "summary": self.summary,
                "expected_rows": self.expected_rows,
                "found_rows": self.found_rows,
                "counts": self.counts,
                "wrong_columns": self.wrong_columns,
                "examples": self.examples,
                "hint": self.hint,
            },
            default=str,
            sort_keys=True,
        )
