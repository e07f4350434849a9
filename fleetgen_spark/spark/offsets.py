"""Offsets that follow a clock, shared by both sources: which intervals have ended in simulated time.

An offset is ``{"start", "next", "seed", ...}`` with readable ISO instants; it moves only when the
clock says an interval has closed, never on every ``latestOffset()`` call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pyspark.sql.streaming.datasource import ReadLimit, ReadMaxRows

from fleetgen_spark.core.clock import Clock, align_down, epoch_seconds, from_epoch, iso, parse_instant
from fleetgen_spark.core.exceptions import OptionError
from fleetgen_spark.core.options import SourceOptions
from fleetgen_spark.core.seed import draw_seed

__all__ = ["ClockedOffsets", "interval_range", "max_steps"]


def interval_range(offset_from: Mapping[str, Any], offset_to: Mapping[str, Any]) -> tuple[int, int]:
    """The epoch seconds ``[from, to)`` between two offsets' ``next`` instants."""
    return (
        epoch_seconds(parse_instant(offset_from["next"], "offset")),
        epoch_seconds(parse_instant(offset_to["next"], "offset")),
    )


class ClockedOffsets:
    """Offsets that follow a clock: ``{"start", "next", "seed"}``, readable ISO instants.

    ``start`` is the simulation start (the onboarding schedule's anchor), ``next`` the first
    interval not yet handed out, ``seed`` the dataset's seed. All three live in the offsets,
    so a restart from a checkpoint replays identically whatever the options say about "now".
    """

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self.interval_s = options.config.interval_seconds
        self.clock = Clock(self.interval_s, options.speedup, options.end)
        self._anchor: tuple[datetime, float] | None = None
        self._available_now = False
        self._target: datetime | None = None
        self._last_start: dict[str, Any] | None = None

    def initial(self) -> dict[str, Any]:
        """A new query's offset: it begins at ``resumeFrom`` (what its data directory already holds) or ``start``.

        ``from`` keeps that first instant in every later offset: Spark does not log a query's initial
        offset, and the events writer reads the first micro-batch's range from the offset log.
        """
        start = self.options.start or align_down(from_epoch(time.time()), self.interval_s)
        first = max(self.options.resume_from or start, start)
        seed = self.options.config.seed
        return {
            "start": iso(start),
            "next": iso(first),
            "seed": draw_seed() if seed is None else seed,
            "from": iso(first),
        }

    def check(self, offset: Mapping[str, Any]) -> None:
        """Refuse to continue a checkpoint under a different explicit seed."""
        seed = self.options.config.seed
        if seed is not None and int(offset["seed"]) != seed:
            raise OptionError(
                f"option 'seed' = {seed} differs from the seed {offset['seed']} kept in this query's checkpoint; "
                "use the same seed or a new checkpointLocation"
            )

    def _available(self, nxt: datetime) -> datetime:
        if self._anchor is None:
            # A simulated clock starts where this run starts: the checkpointed offset on a restart,
            # unless the pipeline gave both of its queries one anchor, so companies never lag events.
            self._anchor = self.options.clock_anchor or (nxt, time.time())
        available = self.clock.available_end(*self._anchor)
        if self._available_now:
            if self._target is None:
                self._target = available
            available = min(available, self._target)
        return max(available, nxt)

    def available(self, start: dict[str, Any]) -> datetime:
        """How far the clock has got, seen from a micro-batch that starts at ``start``."""
        self.check(start)
        self._last_start = start
        return self._available(parse_instant(start["next"], "offset"))

    def latest(self, start: dict[str, Any], max_steps: int | None) -> dict[str, Any]:
        """The end offset of the next micro-batch: whole intervals, at most ``max_steps``."""
        available = self.available(start)
        nxt = parse_instant(start["next"], "offset")
        if max_steps is not None:
            cap = from_epoch(epoch_seconds(nxt) + max_steps * self.interval_s)
            available = min(available, cap)
        return {**start, "next": iso(available)}

    def report(self) -> dict[str, Any] | None:
        if self._last_start is None:
            return None
        nxt = parse_instant(self._last_start["next"], "offset")
        return {**self._last_start, "next": iso(self._available(nxt))}

    def prepare_available_now(self) -> None:
        self._available_now = True
        self._target = None


def max_steps(limit: ReadLimit) -> int | None:
    """The interval count a read limit allows (Spark 4.2 only accepts built-in limits:
    ``maxIntervalsPerTrigger`` travels as ``ReadMaxRows``, one "row" per interval)."""
    if isinstance(limit, ReadMaxRows):
        return max(1, int(limit.max_rows))
    return None
