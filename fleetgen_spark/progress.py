"""How far a backfill has got: a progress bar on a terminal, a plain line every few seconds elsewhere."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from fleetgen_spark.clock import epoch_seconds, parse_instant

__all__ = ["Progress", "intervals_done"]


def intervals_done(query: Any, first: int, interval_s: int) -> int | None:
    """Intervals generated so far by a fleetgen events query, from its last progress's end offset."""
    last = query.lastProgress
    if not last or not last.get("sources"):
        return None
    try:
        offset = json.loads(last["sources"][0]["endOffset"])
        done_to = epoch_seconds(parse_instant(offset["next"], "offset"))
    except (TypeError, KeyError, ValueError):
        return None
    return max(0, (done_to - first) // interval_s)


def _eta(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Intervals done of ``total``, events per second and time left, for one backfill."""

    def __init__(
        self,
        total: int,
        events: Callable[[], int],
        *,
        interval_s: int,
        first: int,
        stream: TextIO | None = None,
        every_s: float = 5.0,
    ) -> None:
        self.total = total
        self.total_events = events  # the events the tables hold (batch_manifest.json)
        self.interval_s = interval_s
        self.first = first
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.began = time.monotonic()
        self.done = 0
        self.events_before = self._events()
        self.events = 0
        self._printed = self.began
        self.bar: tqdm[Any] | None = None
        if self.stream.isatty():
            self.bar = tqdm(total=total, unit="interval", file=self.stream, dynamic_ncols=True, leave=True)

    def _events(self) -> int:
        try:
            return int(self.total_events())
        except (OSError, ValueError, AttributeError):
            return 0

    def rate(self) -> float:
        """Events generated per second by this run."""
        return self.events / max(time.monotonic() - self.began, 1e-9)

    def line(self) -> str:
        """The plain progress line: intervals done of total, events, events/s, time left."""
        elapsed = time.monotonic() - self.began
        left = (
            f", about {_eta(elapsed / self.done * (self.total - self.done))} left" if 0 < self.done < self.total else ""
        )
        percent = 100 * self.done // max(self.total, 1)
        return (
            f"intervals {self.done}/{self.total} ({percent}%), {self.events:,} events, "
            f"{self.rate():,.0f} events/s{left}"
        )

    def update(self, query: Any) -> None:
        """Called about once a second while the query runs."""
        done = intervals_done(query, self.first, self.interval_s)
        if done is not None and done != self.done:
            self.done = min(done, self.total)
            self.events = max(0, self._events() - self.events_before)
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.set_postfix_str(f"{self.events:,} events, {self.rate():,.0f} events/s", refresh=False)
            self.bar.refresh()
        elif time.monotonic() - self._printed >= self.every_s:
            self._printed = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
