"""How far a backfill has got: a progress bar on a terminal, a plain line every few seconds elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["Progress"]


def _eta(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Intervals done of ``total``, events per second and time left, for one backfill.

    ``written`` says (intervals written, events written) as ``batch_manifest.json`` has them now; the
    events writer rewrites it after every micro-batch (its ``batch_count`` counts the intervals from
    the data directory's start, as ``total`` does): the line moves with every micro-batch, and the
    last one, read at :meth:`close`, is the true end.
    """

    def __init__(
        self,
        total: int,
        written: Callable[[], tuple[int, int]],
        *,
        stream: TextIO | None = None,
        every_s: float = 5.0,
    ) -> None:
        self.total = total
        self.written = written
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.began = time.monotonic()
        self.done, self.events_before = self._read()
        self.events = 0
        self._printed = self.began - every_s  # the first update prints at once
        self._shown = (-1, -1)
        self.bar: tqdm[Any] | None = None
        if self.stream.isatty():
            self.bar = tqdm(
                total=total, initial=self.done, unit="interval", file=self.stream, dynamic_ncols=True, leave=True
            )

    def _read(self) -> tuple[int, int]:
        """(intervals written, events written) as the manifest says now."""
        try:
            return self.written()
        except (OSError, ValueError, AttributeError):
            return 0, 0

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

    def update(self, query: Any = None) -> None:
        """Called about once a second while the query runs (``query`` is not needed)."""
        done, events = self._read()
        self.done = min(done, self.total)
        self.events = max(0, events - self.events_before)
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.set_postfix_str(f"{self.events:,} events, {self.rate():,.0f} events/s", refresh=False)
            self.bar.refresh()
        elif (self.done, self.events) != self._shown and time.monotonic() - self._printed >= self.every_s:
            # A line when something moved, at most every ``every_s``: a long micro-batch prints nothing new.
            self._printed = time.monotonic()
            self._shown = (self.done, self.events)
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Show where the run really ended (the last micro-batch may land after the last update)."""
        self._printed = float("-inf")
        self.update()
        if self.bar is not None:
            self.bar.close()
