"""Driver shifts (``event_model: shift``): every driver works legal shifts. Pure numpy, no Spark.

The model (README "Driver shifts"), per driver of a block:

- A home start hour (UTC), drawn once per driver from :data:`START_HOUR_WEIGHTS`: most shifts
  begin early in the morning, a few at night, so more drivers are on duty by day.
- Two consecutive days off a week (at a phase of the driver's own), and another day off with
  chance :data:`EXTRA_DAY_OFF`.
- On a working day ``d`` the shift begins at ``d * 24 h + home + jitter`` (jitter uniform in
  [0, :data:`JITTER_S`]) and lasts ``L`` on duty, triangular on [:data:`MIN_ON_DUTY_S`,
  :data:`MAX_ON_DUTY_S`]. Two starts are at least 24 h - jitter apart and a shift lasts at most
  14 h - jitter, so at least 10 h off duty separate two shifts, by construction.
- A shift is ``K`` drives with stops between them: ``start driving``, ``stopped driving``, then
  ``delivered`` a geometric number of times in the stop, then the next drive; the last drive's
  ``stopped driving`` ends the shift. Driving takes a share of ``L`` uniform in
  [:data:`MIN_DRIVING_SHARE`, :data:`MAX_DRIVING_SHARE`], at most 11 h; drives and the gaps of
  the stops are exponential spacings of those two totals (each at least 1 microsecond, so a
  driver's timestamps strictly increase).
- ``event_rate_per_driver`` is the mean events per interval while on duty: a shift of length
  ``L`` holds ``rate * L / interval`` events on average. The weight of ``delivered`` in
  ``event_type_weights`` is the share of deliveries (at most :data:`MAX_DELIVERED_SHARE`);
  ``start driving`` and ``stopped driving`` alternate, so they share the rest equally.

A day's shifts of a block are a pure function of (seed, interval, rate, delivered share, day,
block, drivers). The block's drivers are cut into chunks of :meth:`ShiftModel.chunk_drivers`
(about a million events a day each, so a day of a large block never has to fit in memory at
once); every draw comes from a stream of its own seeded by (seed, purpose, day, block, chunk),
laid out driver after driver, so the first drivers' shifts do not change when a block grows. An
interval's events are cut out of the (at most three) days whose shifts can reach it; nothing is
carried from one micro-batch to the next. :func:`_timelines` memoises the days of a worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetgen_spark.core.memo import BudgetMemo
from fleetgen_spark.core.seed import generator

__all__ = [
    "EXTRA_DAY_OFF",
    "HOS_DRIVING_S",
    "HOS_OFF_DUTY_S",
    "HOS_ON_DUTY_S",
    "JITTER_S",
    "MAX_DELIVERED_SHARE",
    "MAX_DRIVING_S",
    "MAX_DRIVING_SHARE",
    "MAX_ON_DUTY_S",
    "MIN_DRIVING_SHARE",
    "MIN_ON_DUTY_S",
    "START_HOUR_WEIGHTS",
    "ShiftModel",
    "interval_events",
    "type_shares",
]

HOUR, DAY = 3600, 86_400
_US = 1_000_000
# Relative weight of each UTC hour (0..23) as a driver's home start hour: early-morning starts
# dominate, as in US trucking; night starts are rare but present.
START_HOUR_WEIGHTS: tuple[float, ...] = (
    1, 1, 1, 2, 4, 8, 10, 10, 8, 6, 5, 4, 3, 3, 3, 2, 2, 2, 2, 1.5, 1.5, 1, 1, 1,
)  # fmt: skip
EXTRA_DAY_OFF = 0.05  # besides the two weekly days off
# The US hours-of-service limits (DESIGN.md): the law, which the report holds every shift to. The
# model's own bounds below stay inside them.
HOS_OFF_DUTY_S, HOS_DRIVING_S, HOS_ON_DUTY_S = 10 * HOUR, 11 * HOUR, 14 * HOUR
JITTER_S = HOUR  # a shift begins up to an hour after the driver's home hour
# 13 h, so that a shift starting up to an hour late still ends inside the 14 h window: the 10 h rest by construction
MIN_ON_DUTY_S, MAX_ON_DUTY_S = 7 * HOUR, HOS_ON_DUTY_S - JITTER_S
MAX_DRIVING_S = HOS_DRIVING_S
MIN_DRIVING_SHARE, MAX_DRIVING_SHARE = 0.6, 0.85
MAX_DELIVERED_SHARE = 0.95
# The latest a shift of day d can end, from d * 24 h: the last home hour, the jitter, the longest shift.
_REACH_S = DAY + JITTER_S + MAX_ON_DUTY_S
START_DRIVING, STOPPED_DRIVING, DELIVERED = 0, 1, 2  # indices into config.EVENT_TYPES

_HOUR_CDF = np.cumsum(START_HOUR_WEIGHTS) / sum(START_HOUR_WEIGHTS)
# Events a chunk of drivers holds in a day, about: bounds the memory of one day's timeline.
_CHUNK_EVENTS = 1 << 20


@dataclass(frozen=True)
class ShiftModel:
    """What a block's shifts depend on, besides the day, the block and its drivers."""

    seed: int
    interval_s: int
    rate: float  # event_rate_per_driver: mean events per interval on duty
    delivered_share: float  # event_type_weights["delivered"]

    @property
    def deliveries_per_stop(self) -> float:
        """The mean of the geometric count of deliveries in one stop between two drives.

        With ``g`` deliveries per stop and ``K`` drives a shift holds ``2K + (K - 1) g`` events,
        of which a share ``g / (2 + g)`` are deliveries (for large K): that share is the weight.
        """
        share = min(self.delivered_share, MAX_DELIVERED_SHARE)
        return 2 * share / (1 - share)

    @property
    def chunk_drivers(self) -> int:
        """Drivers per chunk: about _CHUNK_EVENTS events in a day (a driver is on duty under 30% of it)."""
        per_driver_day = self.rate * DAY / self.interval_s * 0.3
        return max(1, int(_CHUNK_EVENTS // max(per_driver_day, 1.0)))


def type_shares(weights: dict[str, float]) -> dict[str, float]:
    """The shares of the event types under the shift model, for ``event_type_weights``: deliveries
    take their weight (at most MAX_DELIVERED_SHARE), starts and stops half of the rest each."""
    delivered = min(float(weights.get("delivered", 0.0)), MAX_DELIVERED_SHARE)
    moves = (1 - delivered) / 2
    return {"start driving": moves, "stopped driving": moves, "delivered": delivered}


@dataclass(frozen=True)
class _Timeline:
    """The events of one day's shifts of a block, ordered by interval, then driver, then time."""

    first_interval: int  # the absolute interval number (epoch // interval) of bounds[0]
    bounds: np.ndarray  # rows of interval first_interval + i: bounds[i]:bounds[i + 1]
    driver: np.ndarray  # int32, the driver's index in the block
    time_us: np.ndarray  # int64 epoch microseconds
    kind: np.ndarray  # int8: START_DRIVING, STOPPED_DRIVING or DELIVERED

    @property
    def nbytes(self) -> int:
        return int(self.bounds.nbytes + self.driver.nbytes + self.time_us.nbytes + self.kind.nbytes)

    def rows(self, interval: int) -> slice:
        i = interval - self.first_interval
        if i < 0 or i + 1 >= self.bounds.size:
            return slice(0, 0)
        return slice(int(self.bounds[i]), int(self.bounds[i + 1]))


def _home_hours_s(model: ShiftModel, block: int, chunk: int, n_drivers: int) -> tuple[np.ndarray, np.ndarray]:
    """Each driver's home start (seconds after midnight UTC) and weekly phase of days off (0..6)."""
    u = generator(model.seed, "shift_profiles", block, chunk).random((n_drivers, 2))
    hour = np.minimum(np.searchsorted(_HOUR_CDF, u[:, 0], side="right"), 23)
    below = np.where(hour > 0, _HOUR_CDF[hour - 1], 0.0)
    within = (u[:, 0] - below) / (_HOUR_CDF[hour] - below)
    home = (hour + np.clip(within, 0.0, 1.0 - 1e-12)) * HOUR
    return home, np.minimum((u[:, 1] * 7).astype(np.int64), 6)


def _day_timeline(model: ShiftModel, day: int, block: int, chunk: int, n_drivers: int) -> _Timeline:
    """Every event of the shifts that begin on ``day`` (epoch days) for the first ``n_drivers`` of a
    chunk of a block (driver indices inside the chunk)."""
    home, phase = _home_hours_s(model, block, chunk, n_drivers)
    u = generator(model.seed, "shift_days", day, block, chunk).random((n_drivers, 5))
    works = ((day + phase) % 7 >= 2) & (u[:, 0] >= EXTRA_DAY_OFF)
    drivers = np.flatnonzero(works)
    u = u[drivers]
    start_us = (day * DAY + home[drivers] + u[:, 1] * JITTER_S) * _US
    start_us = start_us.astype(np.int64)
    on_duty_s = MIN_ON_DUTY_S + (MAX_ON_DUTY_S - MIN_ON_DUTY_S) * (u[:, 2] + u[:, 3]) / 2
    driving_share = MIN_DRIVING_SHARE + (MAX_DRIVING_SHARE - MIN_DRIVING_SHARE) * u[:, 4]
    driving_s = np.minimum(on_duty_s * driving_share, MAX_DRIVING_S)

    # Drives: K = 1 + Poisson(mean - 1), so that 2K + (K - 1) g events have the mean rate * L / interval.
    g = model.deliveries_per_stop
    mean_events = model.rate * on_duty_s / model.interval_s
    extra_drives = np.maximum((mean_events + g) / (2 + g) - 1, 0.0)
    drives = 1 + generator(model.seed, "shift_drives", day, block, chunk).poisson(extra_drives)
    n_shift = drives.size
    total_drives = int(drives.sum())
    # Deliveries after each drive but the last: geometric with mean g (one uniform per drive).
    u_stop = generator(model.seed, "shift_stops", day, block, chunk).random(total_drives)
    drive_shift = np.repeat(np.arange(n_shift), drives)
    drive_end = np.cumsum(drives)
    if g > 0:
        q = g / (1 + g)
        delivered = np.floor(np.log1p(-u_stop) / np.log(q)).astype(np.int64)
    else:
        delivered = np.zeros(total_drives, dtype=np.int64)
    delivered[drive_end - 1] = 0  # a shift ends with its last stop

    # Events: per drive [start, stop, delivered x c]; the gap after each event but a shift's last.
    per_drive = 2 + delivered
    n_events = int(per_drive.sum())
    first_of_drive = np.cumsum(per_drive) - per_drive
    kind = np.full(n_events, DELIVERED, dtype=np.int8)
    kind[first_of_drive] = START_DRIVING
    kind[first_of_drive + 1] = STOPPED_DRIVING
    shift = np.repeat(drive_shift, per_drive)
    events_per_shift = np.bincount(shift, minlength=n_shift)
    last_event = np.cumsum(events_per_shift) - 1

    spacing = generator(model.seed, "shift_gaps", day, block, chunk).standard_exponential(n_events)
    spacing[last_event] = 0.0
    # Per shift, the spacings of its drives (column 1) and of its stops (column 0).
    category = 2 * shift + (kind == START_DRIVING)
    weight = np.bincount(category, weights=spacing, minlength=2 * n_shift).reshape(n_shift, 2)
    stop_gaps = events_per_shift - 1 - drives
    # Each gap gets 1 us plus its share of what is left: drives sum to at most driving_s, stops to
    # at most on_duty_s - driving_s, and a driver's timestamps strictly increase.
    room = np.stack([np.floor((on_duty_s - driving_s) * _US) - stop_gaps, np.floor(driving_s * _US) - drives], axis=1)
    # A category without gaps (the stops of a one-drive shift) has no weight and nothing to scale.
    per_unit = np.divide(room, weight, out=np.zeros_like(room), where=weight > 0)
    scale = np.take(per_unit.ravel(), category)
    gap = (1 + np.floor(spacing * scale)).astype(np.int64)
    gap[last_event] = 0
    since_start = np.cumsum(gap) - gap
    shift_first = last_event - events_per_shift + 1
    since_start -= np.repeat(since_start[shift_first], events_per_shift)
    time_us = np.repeat(start_us, events_per_shift) + since_start

    interval_us = model.interval_s * _US
    first_interval = (day * DAY * _US) // interval_us
    rel = time_us // interval_us - first_interval
    order = np.argsort(rel.astype(np.int16 if int(rel.max(initial=0)) < 2**15 else np.int64), kind="stable")
    counts = np.bincount(rel, minlength=1) if rel.size else np.zeros(1, dtype=np.int64)
    bounds = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    return _Timeline(
        int(first_interval),
        bounds,
        drivers[shift[order]].astype(np.int32),
        time_us[order],
        kind[order],
    )


_TimelineKey = tuple[ShiftModel, int, int, int, int]  # model, day, block, chunk, drivers


def _timelines(budget: int) -> BudgetMemo[_TimelineKey, _Timeline]:
    """A memo of :func:`_day_timeline` of ``budget`` bytes.

    Every interval of a day cuts its rows out of the same day's shifts: a worker that generates
    a day's intervals one by one draws each day once. A memo of a pure function: rows stay the same.
    """
    return BudgetMemo(budget, lambda timeline: timeline.nbytes)


# 96 MiB holds about 75 days of a block of 1,000 drivers at 3.5 events per interval (1.3 MB each),
# or 27 of the benchmark's blocks of 2,000 drivers at 5: the two days a block's interval needs, for
# every block of a partition of a large backfill.
_TIMELINES = _timelines(96 << 20)


def _timeline(model: ShiftModel, day: int, block: int, chunk: int, n_drivers: int) -> _Timeline:
    key = (model, day, block, chunk, n_drivers)
    found = _TIMELINES.get(key)
    if found is None:
        found = _day_timeline(model, day, block, chunk, n_drivers)
        _TIMELINES.put(key, found)
    return found


def interval_events(
    model: ShiftModel, interval_start_s: int, block: int, n_drivers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(driver index, offset in the interval in microseconds, event type index) of every event of the
    block's first ``n_drivers`` in the interval starting at ``interval_start_s``: by driver, then time."""
    interval_us = model.interval_s * _US
    interval = interval_start_s * _US // interval_us
    # The days whose shifts can reach [start, end): begun before end, ending after start.
    first_day = (interval_start_s - _REACH_S) // DAY + 1
    last_day = (interval_start_s + model.interval_s - 1) // DAY
    parts = []
    size = model.chunk_drivers
    for day in range(first_day, last_day + 1):
        for chunk in range(-(-n_drivers // size)):
            timeline = _timeline(model, day, block, chunk, min(size, n_drivers - chunk * size))
            rows = timeline.rows(interval)
            if rows.stop > rows.start:
                parts.append((timeline.driver[rows] + chunk * size, timeline.time_us[rows], timeline.kind[rows]))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty.astype(np.intp), empty, empty
    if len(parts) == 1:
        driver, time_us, kind = parts[0]
    else:  # by driver across chunks, and a driver's earlier shift first: a stable sort keeps time order
        driver, time_us, kind = (np.concatenate(p) for p in zip(*parts, strict=True))
        order = np.argsort(driver, kind="stable")
        driver, time_us, kind = driver[order], time_us[order], kind[order]
    return driver.astype(np.intp), time_us - interval_start_s * _US, kind.astype(np.int64)
