"""Pure generation of driver events: numpy draws in, Arrow record batches out. No Spark here.

Every function is a function of its arguments only, so a block of an interval is the
same wherever and however often it is generated. Draws are made with sequence-stable
calls (``random`` and ``random_raw`` consume one 64-bit word per value), so cutting a
block into slices of any size gives the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fleetgen_spark.core.churn import Churn, inactive_companies
from fleetgen_spark.core.clock import batch_id, from_epoch
from fleetgen_spark.core.columns import (
    DASH,
    TIMESTAMP,
    Strings,
    ascii_codes,
    numbered_strings,
    pick,
    repeated_string,
    repeated_timestamp,
    uuid_strings,
)
from fleetgen_spark.core.company_rows import company_block_text
from fleetgen_spark.core.config import EVENT_TYPES
from fleetgen_spark.core.memo import BudgetMemo
from fleetgen_spark.core.schedule import BLOCK_SIZE
from fleetgen_spark.core.seed import bit_generator, generator
from fleetgen_spark.core.shifts import ShiftModel, interval_events

__all__ = [
    "EVENT_SCHEMA",
    "EventSpec",
    "ShiftDraws",
    "driver_counts",
    "event_batches",
    "inactive_drivers",
    "selected_events",
    "shift_draws",
    "truck_numbers",
]

# Must equal pyspark's to_arrow_schema(<declared schema>, timezone="UTC") exactly,
# nullability included, or Spark rejects the batches (DATA_SOURCE_RETURN_SCHEMA_MISMATCH).
EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("driver_id", pa.string(), nullable=False),
        pa.field("company_id", pa.string(), nullable=False),
        pa.field("truck_id", pa.string(), nullable=True),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("interval_start", TIMESTAMP, nullable=False),
        pa.field("interval_end", TIMESTAMP, nullable=False),
    ]
)


@dataclass(frozen=True)
class EventSpec:
    """What a block of events depends on, besides its interval and block number."""

    seed: int
    interval_s: int
    drivers_per_company: int
    event_rate_per_driver: float
    cumulative_weights: tuple[float, ...]
    # The drivers_per_company a data directory began with: it numbers the trucks, so a driver keeps
    # its truck_id when drivers_per_company changes later (None: the current drivers_per_company).
    truck_drivers: int | None = None
    # The realism knobs of delivery (fleetgen_spark.core.messy); all 0 leaves event_batches the whole story.
    late_fraction: float = 0.0
    max_lateness_s: int = 0
    duplicate_fraction: float = 0.0
    bad_record_fraction: float = 0.0
    # Company churn (fleetgen_spark.core.churn): the drivers of a company inactive at an interval's start
    # emit nothing in it. None while company_churn_rate is 0.
    churn: Churn | None = None
    # How a driver's events follow each other: "independent" Poisson draws, or legal "shift"s
    # (fleetgen_spark.core.shifts).
    event_model: str = "independent"

    @property
    def shifts(self) -> bool:
        """Whether drivers work shifts (``event_model: shift``)."""
        return self.event_model == "shift"

    @property
    def messy(self) -> bool:
        """Whether deliveries differ from the events as generated (late, duplicate or bad records)."""
        return self.late_fraction > 0 or self.duplicate_fraction > 0 or self.bad_record_fraction > 0


# Trucks of drivers added by a later raise of drivers_per_company are numbered after every truck
# the first drivers_per_company can number (companies < 10,000,000, drivers < 10,000 each).
_MAX_COMPANIES = 10_000_000
_MAX_DRIVERS = 10_000


def truck_numbers(first_company: int, n_companies: int, drivers: int, truck_drivers: int) -> np.ndarray:
    """The truck number of every driver of a block, in driver order.

    Driver ``seq`` of company ``c`` drives truck ``c * truck_drivers + seq`` while ``seq <
    truck_drivers`` (the numbering the data directory began with), and a truck numbered past all
    of those otherwise: a driver keeps its truck whatever drivers_per_company becomes.
    """
    companies = np.repeat(np.arange(first_company, first_company + n_companies, dtype=np.int64), drivers)
    seq = np.tile(np.arange(drivers, dtype=np.int64), n_companies)
    extra = _MAX_COMPANIES * truck_drivers + companies * _MAX_DRIVERS + (seq - truck_drivers)
    return np.where(seq < truck_drivers, companies * truck_drivers + seq, extra)


def _driver_strings(
    seed: int, company_text: np.ndarray, first_company: int, drivers: int, truck_drivers: int
) -> tuple[Strings, Strings, Strings]:
    """Driver, company and truck ids of every driver of a block, in driver order: ``DRV-{company_id}-{seq:03d}``,
    the company's UUID and ``TRK-{seed}-{n:04d}``."""
    n_companies, id_width = company_text.shape
    heads = np.empty((n_companies, id_width + 5), dtype=np.uint8)
    heads[:, :4] = ascii_codes("DRV-")
    heads[:, 4:-1] = company_text
    heads[:, -1] = DASH
    seq = np.tile(np.arange(drivers, dtype=np.int64), n_companies)
    driver_ids = numbered_strings(np.repeat(heads, drivers, axis=0), seq, 3)
    if truck_drivers == drivers:  # the common case, as it always was
        first_driver = first_company * drivers
        numbers = np.arange(first_driver, first_driver + n_companies * drivers, dtype=np.int64)
    else:
        numbers = truck_numbers(first_company, n_companies, drivers, truck_drivers)
    truck_ids = numbered_strings(ascii_codes(f"TRK-{seed}-"), numbers, 4)
    return driver_ids, np.repeat(company_text, drivers, axis=0), truck_ids


def _strings_nbytes(strings: tuple[Strings, Strings, Strings]) -> int:
    return sum(int(s.nbytes) for s in strings)


# A block's drivers are the same in every interval, so a micro-batch of many intervals formats them
# once instead of once per interval: a memo of _driver_strings per (seed, block, companies, drivers).
# 32 MiB holds the drivers of about 350 blocks of 20 drivers per company (35,000 companies).
_BLOCK_STRINGS: BudgetMemo[tuple[int, int, int, int, int], tuple[Strings, Strings, Strings]] = BudgetMemo(
    32 << 20, _strings_nbytes
)


def inactive_drivers(spec: EventSpec, interval_start_s: int, block: int, n_companies: int) -> np.ndarray | None:
    """Which drivers of a block belong to a company inactive at ``interval_start_s`` (bool per driver,
    in driver order): they emit nothing in that interval. None when every company is active.

    Company churn (``company_churn_rate``) decides it; while churn is off nobody is inactive.
    """
    if spec.churn is None:
        return None
    inactive = inactive_companies(spec.seed, spec.churn, block, n_companies, interval_start_s)
    return None if inactive is None else np.repeat(inactive, spec.drivers_per_company)


@dataclass(frozen=True)
class ShiftDraws:
    """The events of a block in an interval under the shift model, in row order (by driver, then time)."""

    driver_idx: np.ndarray  # the driver's index in the block
    offsets_us: np.ndarray  # microseconds after interval_start
    type_idx: np.ndarray  # index into EVENT_TYPES
    raw_ids: np.ndarray  # (n, 2) uint64: the bits of each event_id


def _shift_model(spec: EventSpec) -> ShiftModel:
    cumulative = spec.cumulative_weights
    delivered = cumulative[-1] - cumulative[-2] if len(cumulative) > 1 else 0.0
    return ShiftModel(spec.seed, spec.interval_s, spec.event_rate_per_driver, float(delivered))


def shift_draws(spec: EventSpec, interval_start_s: int, block: int, n_companies: int) -> ShiftDraws:
    """The events of a block in an interval under the shift model (``spec.event_model == "shift"``).

    The times and types are cut out of the day's shifts (fleetgen_spark.core.shifts); the ids come from a
    stream of the interval, one per row, drawn before the drivers of inactive companies are removed,
    so silencing a driver never changes another driver's rows.
    """
    n_drivers = n_companies * spec.drivers_per_company
    driver_idx, offsets_us, type_idx = interval_events(_shift_model(spec), interval_start_s, block, n_drivers)
    n = int(driver_idx.size)
    raw = bit_generator(spec.seed, "shift_event_ids", interval_start_s, block).random_raw(2 * n)
    raw_ids = np.asarray(raw, dtype=np.uint64).reshape(n, 2)
    inactive = inactive_drivers(spec, interval_start_s, block, n_companies)
    if inactive is not None and n:
        keep = ~inactive[driver_idx]
        driver_idx, offsets_us, type_idx, raw_ids = driver_idx[keep], offsets_us[keep], type_idx[keep], raw_ids[keep]
    return ShiftDraws(driver_idx, offsets_us, type_idx, raw_ids)


def driver_counts(spec: EventSpec, interval_start_s: int, block: int, n_companies: int) -> np.ndarray:
    """Events per driver of a block in an interval: the counts stream, drawn first and alone
    (0 for the drivers of an inactive company). Under the shift model: the drivers' events in the interval."""
    if spec.shifts:
        draws = shift_draws(spec, interval_start_s, block, n_companies)
        return np.bincount(draws.driver_idx, minlength=n_companies * spec.drivers_per_company)
    rng = generator(spec.seed, "event_counts", interval_start_s, block)
    counts = rng.poisson(spec.event_rate_per_driver, n_companies * spec.drivers_per_company)
    inactive = inactive_drivers(spec, interval_start_s, block, n_companies)
    if inactive is not None:
        counts[inactive] = 0
    return counts


def event_batches(
    spec: EventSpec, interval_start_s: int, block: int, n_companies: int, max_rows: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """The events of one block of companies in one interval, in slices of at most ``max_rows``.

    Each eligible driver emits Poisson(rate) events at uniform times inside the interval (or,
    under the shift model, the events of its shifts that fall inside it).
    A slice never splits a driver, so a slice may exceed ``max_rows`` only by one driver's events.
    """
    if spec.shifts:
        yield from _shift_batches(spec, interval_start_s, block, n_companies, max_rows)
        return
    drivers = spec.drivers_per_company
    n_drivers = n_companies * drivers
    counts = driver_counts(spec, interval_start_s, block, n_companies)
    ends = np.cumsum(counts)
    if n_drivers == 0 or ends[-1] == 0:
        return
    times = generator(spec.seed, "event_times", interval_start_s, block)
    types = generator(spec.seed, "event_types", interval_start_s, block)
    ids = bit_generator(spec.seed, "event_ids", interval_start_s, block)

    strings = _block_strings(spec, block, n_companies)
    cumulative = np.asarray(spec.cumulative_weights)
    span_us = spec.interval_s * 1_000_000

    lo = 0
    while lo < n_drivers:
        done = int(ends[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, done + max_rows, side="right")))
        n = int(ends[hi - 1]) - done
        lo_driver, lo = lo, hi
        if n == 0:
            continue
        driver_idx = np.repeat(np.arange(lo_driver, hi, dtype=np.intp), counts[lo_driver:hi])
        offsets_us = np.minimum((times.random(n) * span_us).astype(np.int64), span_us - 1)
        type_idx = np.minimum(np.searchsorted(cumulative, types.random(n), side="right"), len(EVENT_TYPES) - 1)
        raw_ids = np.asarray(ids.random_raw(2 * n), dtype=np.uint64).reshape(n, 2)
        yield _event_batch(spec, interval_start_s, strings, driver_idx, offsets_us, type_idx, raw_ids)


def _shift_batches(
    spec: EventSpec, interval_start_s: int, block: int, n_companies: int, max_rows: int
) -> Iterator[pa.RecordBatch]:
    draws = shift_draws(spec, interval_start_s, block, n_companies)
    n = int(draws.driver_idx.size)
    if n == 0:
        return
    strings = _block_strings(spec, block, n_companies)
    lo = 0
    while lo < n:
        hi = min(n, lo + max_rows)
        if hi < n:  # to the end of that driver's rows
            hi = int(np.searchsorted(draws.driver_idx, draws.driver_idx[hi - 1], side="right"))
        part = slice(lo, hi)
        yield _event_batch(
            spec,
            interval_start_s,
            strings,
            draws.driver_idx[part],
            draws.offsets_us[part],
            draws.type_idx[part],
            np.ascontiguousarray(draws.raw_ids[part]),
        )
        lo = hi


def _block_strings(spec: EventSpec, block: int, n_companies: int) -> tuple[Strings, Strings, Strings]:
    drivers = spec.drivers_per_company
    truck_drivers = drivers if spec.truck_drivers is None else spec.truck_drivers
    key = (spec.seed, block, n_companies, drivers, truck_drivers)
    found = _BLOCK_STRINGS.get(key)
    if found is None:
        company_text = company_block_text(spec.seed, block)[:n_companies]
        found = _driver_strings(spec.seed, company_text, block * BLOCK_SIZE, drivers, truck_drivers)
        _BLOCK_STRINGS.put(key, found)
    return found


def _event_batch(
    spec: EventSpec,
    interval_start_s: int,
    strings: tuple[Strings, Strings, Strings],
    driver_idx: np.ndarray,
    offsets_us: np.ndarray,
    type_idx: np.ndarray,
    raw_ids: np.ndarray,
) -> pa.RecordBatch:
    """Rows of EVENT_SCHEMA from the draws of their events (one row per entry of ``driver_idx``)."""
    driver_ids, company_ids_, truck_ids = strings
    n = int(driver_idx.size)
    span_us = spec.interval_s * 1_000_000
    start_us = interval_start_s * 1_000_000
    return pa.RecordBatch.from_arrays(
        [
            uuid_strings(raw_ids),
            pick(driver_ids, driver_idx),
            pick(company_ids_, driver_idx),
            pick(truck_ids, driver_idx),
            pa.array(list(EVENT_TYPES), type=pa.string()).take(pa.array(type_idx)),
            pa.array(start_us + offsets_us, type=TIMESTAMP),
            repeated_string(batch_id(from_epoch(interval_start_s)), n),
            repeated_timestamp(start_us, n),
            repeated_timestamp(start_us + span_us, n),
        ],
        schema=EVENT_SCHEMA,
    )


def selected_events(
    spec: EventSpec, interval_start_s: int, block: int, n_companies: int, rows: np.ndarray
) -> pa.RecordBatch:
    """Rows ``rows`` (indices in generation order) of the events :func:`event_batches` gives, built alone.

    The same draws, made whole and then indexed, so only the chosen rows are formatted: a late
    delivery needs a few rows of an earlier interval, not all of them.
    """
    strings = _block_strings(spec, block, n_companies)
    if spec.shifts:
        d = shift_draws(spec, interval_start_s, block, n_companies)
        raw = np.ascontiguousarray(d.raw_ids[rows])
        picked = (d.driver_idx[rows], d.offsets_us[rows], d.type_idx[rows])
        return _event_batch(spec, interval_start_s, strings, *picked, raw)
    counts = driver_counts(spec, interval_start_s, block, n_companies)
    n = int(counts.sum())
    span_us = spec.interval_s * 1_000_000
    times = generator(spec.seed, "event_times", interval_start_s, block).random(n)[rows]
    types = generator(spec.seed, "event_types", interval_start_s, block).random(n)[rows]
    raw = bit_generator(spec.seed, "event_ids", interval_start_s, block).random_raw(2 * n)
    raw_ids = np.ascontiguousarray(np.asarray(raw, dtype=np.uint64).reshape(n, 2)[rows])
    driver_idx = np.repeat(np.arange(counts.size, dtype=np.intp), counts)[rows]
    offsets_us = np.minimum((times * span_us).astype(np.int64), span_us - 1)
    cumulative = np.asarray(spec.cumulative_weights)
    type_idx = np.minimum(np.searchsorted(cumulative, types, side="right"), len(EVENT_TYPES) - 1)
    return _event_batch(spec, interval_start_s, strings, driver_idx, offsets_us, type_idx, raw_ids)
