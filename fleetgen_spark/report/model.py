"""What a report is about: what was asked (``Expected``), what was read (``ReportInputs``) and one
row of its verdict (``Check``). Plain data, no Spark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fleetgen_spark.core.config import DEFAULT_WEIGHTS, EVENT_TYPES, parse_duration

__all__ = ["Check", "Expected", "ReportInputs"]


def _in_type_order(weights: Mapping[str, Any]) -> dict[str, float]:
    """Weights in the contract's order of event types (dataset.md stores them sorted by name)."""
    names = [n for n in EVENT_TYPES if n in weights] + sorted(set(weights) - set(EVENT_TYPES))
    return {n: float(weights[n]) for n in names}


@dataclass(frozen=True)
class Expected:
    """What was asked: the config recorded in ``manifests/dataset.md`` (read leniently, so a
    data directory written by a newer or older fleetgen still gets a report)."""

    drivers_per_company: int
    event_rate_per_driver: float
    event_type_weights: dict[str, float]
    interval_s: int
    number_of_companies: int
    late_fraction: float = 0.0
    max_lateness_s: int = 1800
    duplicate_fraction: float = 0.0
    bad_record_fraction: float = 0.0
    company_churn_rate: float = 0.0
    event_model: str = "independent"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Expected:
        def seconds(name: str, default: str) -> int:
            return int(parse_duration(config.get(name) or default, name).total_seconds())

        return cls(
            drivers_per_company=int(config["drivers_per_company"]),
            event_rate_per_driver=float(config["event_rate_per_driver"]),
            event_type_weights=_in_type_order(config.get("event_type_weights") or DEFAULT_WEIGHTS),
            interval_s=seconds("interval", "PT15M"),
            number_of_companies=int(config["number_of_companies"]),
            late_fraction=float(config.get("late_fraction") or 0.0),
            max_lateness_s=seconds("max_lateness", "PT30M"),
            duplicate_fraction=float(config.get("duplicate_fraction") or 0.0),
            bad_record_fraction=float(config.get("bad_record_fraction") or 0.0),
            company_churn_rate=float(config.get("company_churn_rate") or 0.0),
            event_model=str(config.get("event_model") or "independent"),
        )

    @property
    def per_company(self) -> float:
        """Expected events per eligible company per interval."""
        return self.drivers_per_company * self.event_rate_per_driver


@dataclass
class ReportInputs:
    """Everything the report draws, as plain frames; None where a table or file does not exist yet."""

    data_dir: str
    expected: Expected
    seed: int | None = None
    start: str | None = None
    # batch_id, interval_start, interval_end, event_count, generation_time, eligible_companies,
    # total_companies [, late_events, duplicate_events, bad_records]
    batches: pd.DataFrame | None = None
    event_types: dict[str, int] | None = None
    # interval start (epoch seconds) -> distinct events by event time (read only when late or
    # duplicate rows exist)
    event_time_counts: dict[int, int] | None = None
    companies: pd.DataFrame | None = None  # time, onboarded, active (cumulative, one row per change)
    companies_rows: int | None = None
    active_from_history: bool = False
    discards: dict[str, int] | None = None  # "source: reason" -> records
    lateness_minutes: dict[int, int] | None = None  # whole minutes before interval_start -> late rows
    lateness_max_s: float | None = None  # the latest delivery, in seconds after the timestamp
    durations: pd.DataFrame | None = None  # from the logs: timestamp, duration_ms, intervals, events
    shifts: pd.DataFrame | None = None  # event_model shift: one row per shift: on_duty_s, driving_s, violations
    missing: list[str] = field(default_factory=list)

    def realism_column(self, name: str) -> int | None:
        """The sum of a batches column that later versions add, or None when it does not exist."""
        if self.batches is None or name not in self.batches.columns:
            return None
        return int(self.batches[name].fillna(0).sum())


@dataclass(frozen=True)
class Check:
    """One row of the report: a measured number, what was expected, the test and its result."""

    panel: str
    measured: str
    expected: str
    test: str
    result: str  # PASS, FAIL, info or n/a

    @property
    def failed(self) -> bool:
        return self.result == "FAIL"
