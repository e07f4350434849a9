"""Interval arithmetic and the clock that decides which intervals are available.

All times are timezone-aware UTC datetimes at the edges and whole epoch seconds inside:
intervals are half-open ``[start, end)`` and aligned to multiples of the interval from
the Unix epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from fleetgen_spark.core.exceptions import OptionError

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_SPEEDUP",
    "Clock",
    "align_down",
    "batch_id",
    "epoch_seconds",
    "from_epoch",
    "iso",
    "parse_instant",
    "parse_speedup",
]

UTC = timezone.utc
# The instants the clock can hold: from the Unix epoch (interval alignment and numpy's event
# times count from it) to a year before the end of Python's calendar, so that adding an
# interval or an onboarding period to any instant in range cannot overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
# A simulated clock runs at most this many times faster than the wall clock: 100 simulated
# years pass in under 9 wall hours, and a run started in 2025 would take about four weeks to
# reach LATEST (where the clock stops). 1e10 would pass the end of the calendar in seconds.
MAX_SPEEDUP = 100_000


def parse_instant(value: str | datetime, option: str) -> datetime:
    """Parse an ISO-8601 instant (``2025-11-08T14:15:00Z``); a value without offset is UTC."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as err:
            raise OptionError(
                f"option {option!r} = {value!r} is not an ISO-8601 UTC timestamp; "
                "expected for example 2025-11-08T14:15:00Z"
            ) from err
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError as err:  # 0001-01-01T00:00:00+01:00 has no UTC instant
        raise OptionError(f"option {option!r} = {value!r} is outside {iso(EARLIEST)}..{iso(LATEST)}") from err
    if not EARLIEST <= parsed <= LATEST:  # LATEST itself: the offset of a clock that stopped there
        raise OptionError(
            f"option {option!r} = {value!r} is outside the instants fleetgen can simulate: "
            f"from {iso(EARLIEST)} to {iso(LATEST)}"
        )
    return parsed


def epoch_seconds(moment: datetime) -> int:
    """Whole seconds since the Unix epoch (microseconds dropped)."""
    return int(moment.timestamp() // 1)


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def align_down(moment: datetime, interval_s: int) -> datetime:
    """The start of the interval that contains ``moment``."""
    return from_epoch(epoch_seconds(moment) // interval_s * interval_s)


def iso(moment: datetime) -> str:
    """``2025-11-08T14:15:00Z``: how offsets and manifests write instants."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_id(interval_start: datetime) -> str:
    """``20251108T141500Z``: the interval start in the batch id format."""
    return interval_start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_speedup(value: str | float | None) -> float | None:
    """``1`` (wall clock), ``N > 1`` (simulated) or ``max`` (None: no pacing)."""
    if value is None:
        return 1.0
    text = str(value).strip().lower()
    if text == "max":
        return None
    rule = f"must be a number from 1 to {MAX_SPEEDUP:,} or 'max'"
    try:
        speed = float(text)
    except ValueError as err:
        raise OptionError(f"option 'speedup' = {value!r}: {rule}") from err
    if not 1 <= speed <= MAX_SPEEDUP:
        raise OptionError(f"option 'speedup' = {value!r}: {rule}")
    return speed


@dataclass(frozen=True)
class Clock:
    """Which intervals have closed: on the wall clock, a simulated one, or all at once.

    ``speedup`` is 1.0 for the wall clock, N > 1 for a simulated clock that runs N times
    faster from the moment it is anchored, and None for ``max`` (everything up to ``end``).
    """

    interval_s: int
    speedup: float | None = 1.0
    end: datetime | None = None

    def now(self, anchor_sim: datetime, anchor_wall: float, wall_now: float | None = None) -> datetime:
        """The clock's current time; a simulated clock reads ``anchor_sim`` at ``anchor_wall``."""
        wall = time.time() if wall_now is None else wall_now
        if self.speedup is None:
            if self.end is None:
                raise OptionError("option 'speedup' = 'max' needs option 'end' (no pacing runs up to end)")
            return self.end
        if self.speedup == 1.0:
            return from_epoch(wall)
        ahead = (wall - anchor_wall) * self.speedup
        if ahead >= (LATEST - anchor_sim).total_seconds():
            return LATEST  # the end of what the clock can hold: nothing closes after it
        return anchor_sim + timedelta(seconds=ahead)

    def available_end(self, anchor_sim: datetime, anchor_wall: float, wall_now: float | None = None) -> datetime:
        """The end of the last closed interval, capped at ``end``: intervals before it are available."""
        closed = align_down(self.now(anchor_sim, anchor_wall, wall_now), self.interval_s)
        if self.end is not None and closed > self.end:
            return self.end
        return closed
