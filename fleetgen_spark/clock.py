"""Interval arithmetic and the clock that decides which intervals are available.

All times are timezone-aware UTC datetimes at the edges and whole epoch seconds inside:
intervals are half-open ``[start, end)`` and aligned to multiples of the interval from
the Unix epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from fleetgen_spark.exceptions import OptionError

__all__ = [
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
    return parsed.astimezone(UTC)


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
    try:
        speed = float(text)
    except ValueError as err:
        raise OptionError(f"option 'speedup' = {value!r}: must be a number >= 1 or 'max'") from err
    if not speed >= 1 or speed == float("inf"):
        raise OptionError(f"option 'speedup' = {value!r}: must be a number >= 1 or 'max'")
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
        return anchor_sim + timedelta(seconds=(wall - anchor_wall) * self.speedup)

    def available_end(self, anchor_sim: datetime, anchor_wall: float, wall_now: float | None = None) -> datetime:
        """The end of the last closed interval, capped at ``end``: intervals before it are available."""
        closed = align_down(self.now(anchor_sim, anchor_wall, wall_now), self.interval_s)
        if self.end is not None and closed > self.end:
            return self.end
        return closed
