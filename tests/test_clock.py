"""Interval arithmetic, instant parsing and the three clocks of ``fleetgen_spark.core.clock``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleetgen_spark import OptionError
from fleetgen_spark.core.clock import (
    LATEST,
    MAX_SPEEDUP,
    Clock,
    align_down,
    batch_id,
    epoch_seconds,
    from_epoch,
    iso,
    parse_instant,
    parse_speedup,
)

UTC = timezone.utc
S = datetime(2025, 11, 8, 14, 0, tzinfo=UTC)
QUARTER = 900


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 11, 8, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "interval_s", "expected"),
    [
        (at(14, 15), QUARTER, at(14, 15)),
        (at(14, 29, 59), QUARTER, at(14, 15)),
        (at(14, 30), QUARTER, at(14, 30)),
        (datetime(2025, 11, 8, 14, 29, 59, 999_999, tzinfo=UTC), QUARTER, at(14, 15)),
        (at(14, 59), 3600, at(14)),
        (at(23, 59), 86_400, datetime(2025, 11, 8, tzinfo=UTC)),
        (at(14, 7), 300, at(14, 5)),
    ],
)
def test_align_down(moment: datetime, interval_s: int, expected: datetime) -> None:
    assert align_down(moment, interval_s) == expected


def test_align_down_is_from_the_epoch_not_the_local_offset() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert align_down(datetime(2025, 11, 8, 16, 20, tzinfo=plus_two), QUARTER) == at(14, 15)
    # 7-minute intervals do not divide an hour: alignment follows the epoch.
    assert epoch_seconds(align_down(at(14, 0), 420)) % 420 == 0


def test_align_down_returns_utc() -> None:
    assert align_down(at(14, 3), QUARTER).tzinfo == UTC


def test_batch_id_format() -> None:
    assert batch_id(at(14, 15)) == "20251108T141500Z"
    assert batch_id(datetime(2025, 11, 8, 16, 15, tzinfo=timezone(timedelta(hours=2)))) == "20251108T141500Z"


def test_iso_writes_utc_with_z() -> None:
    assert iso(at(14, 15)) == "2025-11-08T14:15:00Z"
    assert iso(datetime(2025, 11, 8, 9, 15, tzinfo=timezone(timedelta(hours=-5)))) == "2025-11-08T14:15:00Z"


def test_epoch_round_trip() -> None:
    assert epoch_seconds(at(14, 15)) == 1_762_611_300
    assert from_epoch(1_762_611_300) == at(14, 15)
    assert from_epoch(1_762_611_300).tzinfo == UTC


@pytest.mark.parametrize(
    "text",
    [
        "2025-11-08T14:15:00Z",
        "2025-11-08T14:15:00z",
        "2025-11-08T14:15:00+00:00",
        "2025-11-08T16:15:00+02:00",
        "2025-11-08T09:15:00-05:00",
        "2025-11-08T14:15:00",
        "2025-11-08 14:15:00",
        "  2025-11-08T14:15:00Z  ",
    ],
)
def test_parse_instant(text: str) -> None:
    parsed = parse_instant(text, "start")
    assert parsed == at(14, 15)
    assert parsed.tzinfo == UTC


def test_parse_instant_keeps_fractions_and_accepts_datetimes() -> None:
    assert parse_instant("2025-11-08T14:15:00.250Z", "start") == at(14, 15) + timedelta(milliseconds=250)
    assert parse_instant(datetime(2025, 11, 8, 14, 15), "start") == at(14, 15)
    assert parse_instant(datetime(2025, 11, 8, 16, 15, tzinfo=timezone(timedelta(hours=2))), "start") == at(14, 15)


@pytest.mark.parametrize("text", ["yesterday", "2025-13-08T14:15:00Z", "", "14:15", "2025-11-08T25:00:00Z"])
def test_parse_instant_rejects_malformed_values_naming_the_option(text: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_instant(text, "end")
    message = str(info.value)
    assert "'end'" in message
    assert repr(text) in message
    assert "ISO-8601" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 1.0), ("1", 1.0), (1, 1.0), ("600", 600.0), ("2.5", 2.5), ("max", None), ("MAX", None), (" max ", None)],
)
def test_parse_speedup(value: str | float | None, expected: float | None) -> None:
    assert parse_speedup(value) == expected


@pytest.mark.parametrize("value", ["0", "0.5", "-3", "fast", "inf", "nan", ""])
def test_parse_speedup_rejects(value: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_speedup(value)
    assert "'speedup'" in str(info.value)
    assert repr(value) in str(info.value)


def test_wall_clock_makes_closed_intervals_available() -> None:
    clock = Clock(QUARTER, speedup=1.0)
    # The anchor does not matter to the wall clock.
    anchor = (at(9), 0.0)
    assert clock.available_end(*anchor, wall_now=epoch_seconds(at(14, 22, 10))) == at(14, 15)
    assert clock.available_end(*anchor, wall_now=epoch_seconds(at(14, 29, 59)) + 0.999) == at(14, 15)
    assert clock.available_end(*anchor, wall_now=epoch_seconds(at(14, 30))) == at(14, 30)


def test_wall_clock_is_capped_at_end() -> None:
    clock = Clock(QUARTER, speedup=1.0, end=at(14))
    assert clock.available_end(at(9), 0.0, wall_now=epoch_seconds(at(18, 7))) == at(14)
    assert clock.available_end(at(9), 0.0, wall_now=epoch_seconds(at(13, 50))) == at(13, 45)


def test_simulated_clock_runs_n_times_faster_from_its_anchor() -> None:
    clock = Clock(QUARTER, speedup=60.0)
    anchor_wall = 1_000_000.0
    # 14 wall seconds at 60x are 14 simulated minutes: the first interval is still open.
    assert clock.now(S, anchor_wall, wall_now=anchor_wall + 14) == S + timedelta(minutes=14)
    assert clock.available_end(S, anchor_wall, wall_now=anchor_wall + 14) == S
    assert clock.available_end(S, anchor_wall, wall_now=anchor_wall + 15) == S + timedelta(minutes=15)
    assert clock.available_end(S, anchor_wall, wall_now=anchor_wall + 61) == S + timedelta(hours=1)


def test_simulated_clock_is_capped_at_end() -> None:
    clock = Clock(QUARTER, speedup=600.0, end=S + timedelta(minutes=30))
    assert clock.available_end(S, 0.0, wall_now=3600.0) == S + timedelta(minutes=30)


def test_max_clock_makes_everything_up_to_end_available() -> None:
    end = S + timedelta(hours=6)
    clock = Clock(QUARTER, speedup=None, end=end)
    assert clock.available_end(S, 0.0, wall_now=0.0) == end
    assert clock.available_end(S, 0.0) == end


def test_max_clock_needs_an_end() -> None:
    with pytest.raises(OptionError, match="'end'"):
        Clock(QUARTER, speedup=None).available_end(S, 0.0)


@pytest.mark.parametrize("value", ["1e10", "100001", "1e308"])
def test_parse_speedup_rejects_more_than_the_maximum(value: str) -> None:
    with pytest.raises(OptionError, match=f"from 1 to {MAX_SPEEDUP:,}"):
        parse_speedup(value)


def test_the_fastest_clock_fits_100_simulated_years_in_a_working_day() -> None:
    clock = Clock(QUARTER, speedup=float(MAX_SPEEDUP))
    eight_hours_later = clock.now(S, 0.0, wall_now=9 * 3600)
    assert eight_hours_later - S > timedelta(days=100 * 365)


def test_a_simulated_clock_stops_at_the_end_of_what_it_can_hold() -> None:
    clock = Clock(QUARTER, speedup=float(MAX_SPEEDUP))
    ten_years = 10 * 365 * 86_400.0  # of wall time: far past year 9999 at this speed
    assert clock.now(S, 0.0, wall_now=ten_years) == LATEST
    assert clock.available_end(S, 0.0, wall_now=ten_years) == LATEST


@pytest.mark.parametrize(
    "text", ["1969-12-31T23:45:00Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-06-01T00:00:00Z"]
)
def test_parse_instant_accepts_1970_to_9999_only(text: str) -> None:
    with pytest.raises(OptionError, match=r"'start'.*1970-01-01T00:00:00Z"):
        parse_instant(text, "start")


def test_parse_instant_accepts_both_ends() -> None:
    assert parse_instant("1970-01-01T00:00:00Z", "start") == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_instant(iso(LATEST), "offset") == LATEST  # where a stopped clock's offset stays
