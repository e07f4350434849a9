"""Pure generation: numpy draws in, Arrow record batches out. No Spark here.

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

from fleetgen_spark.clock import batch_id, from_epoch
from fleetgen_spark.config import EVENT_TYPES
from fleetgen_spark.schedule import BLOCK_SIZE
from fleetgen_spark.seed import bit_generator, generator

__all__ = [
    "COMPANY_SCHEMA",
    "EVENT_SCHEMA",
    "EventSpec",
    "company_batch",
    "company_ids",
    "event_batches",
    "uuid_strings",
]

_TS = pa.timestamp("us", tz="UTC")

# Must equal pyspark's to_arrow_schema(<declared schema>, timezone="UTC") exactly,
# nullability included, or Spark rejects the batches (DATA_SOURCE_RETURN_SCHEMA_MISMATCH).
EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("driver_id", pa.string(), nullable=False),
        pa.field("company_id", pa.string(), nullable=False),
        pa.field("truck_id", pa.string(), nullable=True),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("timestamp", _TS, nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("interval_start", _TS, nullable=False),
        pa.field("interval_end", _TS, nullable=False),
    ]
)

COMPANY_SCHEMA = pa.schema(
    [
        pa.field("company_id", pa.string(), nullable=False),
        pa.field("company_name", pa.string(), nullable=False),
        pa.field("geography", pa.string(), nullable=False),
        pa.field("active", pa.bool_(), nullable=False),
        pa.field("created_at", _TS, nullable=False),
    ]
)

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_DASHES = (8, 13, 18, 23)
_HEX_SLOTS = np.array([i for i in range(36) if i not in _DASHES])

_ADJECTIVES = (
    "Swift", "Blue", "Iron", "Summit", "Prairie", "Coastal", "Granite", "Red", "Northern",
    "Silver", "Eagle", "Liberty", "Pioneer", "Frontier", "Golden", "Rapid", "Lone Star",
    "Great Lakes", "Cascade", "Desert",
)  # fmt: skip
_NOUNS = (
    "Ridge", "River", "Peak", "Valley", "Highway", "Harbor", "Mesa", "Canyon", "Plains",
    "Bay", "Trail", "Junction", "Crossing", "Gateway", "Pine", "Oak", "Falcon", "Bison",
    "Anchor", "Compass",
)  # fmt: skip
_SUFFIXES = ("Logistics", "Freight", "Transport", "Trucking", "Haulers", "Carriers", "Express", "Lines")


def uuid_strings(raw: np.ndarray) -> pa.StringArray:
    """Format 128 random bits per row (uint64 array of shape (n, 2)) as version-4 UUID strings."""
    n = int(raw.shape[0])
    octets = raw.astype(">u8").view(np.uint8).reshape(n, 16).copy()
    octets[:, 6] = (octets[:, 6] & 0x0F) | 0x40
    octets[:, 8] = (octets[:, 8] & 0x3F) | 0x80
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[octets >> 4]
    hexed[:, 1::2] = _HEX[octets & 0x0F]
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, _HEX_SLOTS] = hexed
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))


def _company_block_ids(seed: int, block: int) -> pa.StringArray:
    raw = bit_generator(seed, "company_ids", block).random_raw(2 * BLOCK_SIZE)
    return uuid_strings(np.asarray(raw, dtype=np.uint64).reshape(BLOCK_SIZE, 2))


def _company_block_names(seed: int, block: int) -> list[str]:
    rng = generator(seed, "company_names", block)
    picks = (rng.random((BLOCK_SIZE, 3)) * (len(_ADJECTIVES), len(_NOUNS), len(_SUFFIXES))).astype(np.int64)
    return [f"{_ADJECTIVES[a]} {_NOUNS[b]} {_SUFFIXES[c]}" for a, b, c in picks]


def _company_range(seed: int, first: int, count: int) -> Iterator[tuple[int, int, int]]:
    """(block, offset inside block, rows) pieces covering companies [first, first + count)."""
    index, end = first, first + count
    while index < end:
        block, offset = divmod(index, BLOCK_SIZE)
        rows = min(BLOCK_SIZE - offset, end - index)
        yield block, offset, rows
        index += rows


def company_ids(seed: int, first: int, count: int) -> pa.StringArray:
    """The UUIDs of companies [first, first + count): a pure function of (seed, index)."""
    pieces = [_company_block_ids(seed, b).slice(o, r) for b, o, r in _company_range(seed, first, count)]
    if not pieces:
        return pa.array([], type=pa.string())
    return pa.concat_arrays(pieces)


def company_batch(seed: int, first: int, count: int, created_at_s: int) -> pa.RecordBatch:
    """The companies onboarded by one tick, as a record batch of COMPANY_SCHEMA."""
    names: list[str] = []
    for block, offset, rows in _company_range(seed, first, count):
        names.extend(_company_block_names(seed, block)[offset : offset + rows])
    return pa.RecordBatch.from_arrays(
        [
            company_ids(seed, first, count),
            pa.array(names, type=pa.string()),
            pa.array(["US"] * count, type=pa.string()),
            pa.array(np.ones(count, dtype=bool)),
            pa.array(np.full(count, created_at_s * 1_000_000, dtype=np.int64), type=_TS),
        ],
        schema=COMPANY_SCHEMA,
    )


@dataclass(frozen=True)
class EventSpec:
    """What a block of events depends on, besides its interval and block number."""

    seed: int
    interval_s: int
    drivers_per_company: int
    event_rate_per_driver: float
    cumulative_weights: tuple[float, ...]


def _constant(value: object, n: int, type_: pa.DataType) -> pa.Array:
    return pa.array([value], type=type_).take(pa.array(np.zeros(n, dtype=np.int32)))


def event_batches(
    spec: EventSpec, interval_start_s: int, block: int, n_companies: int, max_rows: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """The events of one block of companies in one interval, in slices of at most ``max_rows``.

    Each eligible driver emits Poisson(rate) events at uniform times inside the interval.
    A slice never splits a driver, so a slice may exceed ``max_rows`` only by one driver's events.
    """
    drivers = spec.drivers_per_company
    n_drivers = n_companies * drivers
    counts = generator(spec.seed, "event_counts", interval_start_s, block).poisson(
        spec.event_rate_per_driver, n_drivers
    )
    ends = np.cumsum(counts)
    if n_drivers == 0 or ends[-1] == 0:
        return
    times = generator(spec.seed, "event_times", interval_start_s, block)
    types = generator(spec.seed, "event_types", interval_start_s, block)
    ids = bit_generator(spec.seed, "event_ids", interval_start_s, block)

    first_company = block * BLOCK_SIZE
    company_strings = company_ids(spec.seed, first_company, n_companies)
    driver_strings = pa.array(
        [f"DRV-{cid}-{seq:03d}" for cid in company_strings.to_pylist() for seq in range(drivers)], type=pa.string()
    )
    truck_strings = pa.array(
        [f"TRK-{spec.seed}-{n:04d}" for n in range(first_company * drivers, (first_company + n_companies) * drivers)],
        type=pa.string(),
    )
    type_strings = pa.array(list(EVENT_TYPES), type=pa.string())
    cumulative = np.asarray(spec.cumulative_weights)
    span_us = spec.interval_s * 1_000_000
    start_us = interval_start_s * 1_000_000
    batch = batch_id(from_epoch(interval_start_s))

    lo = 0
    while lo < n_drivers:
        done = int(ends[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, done + max_rows, side="right")))
        n = int(ends[hi - 1]) - done
        lo_driver, lo = lo, hi
        if n == 0:
            continue
        driver_idx = np.repeat(np.arange(lo_driver, hi, dtype=np.int64), counts[lo_driver:hi])
        offsets_us = np.minimum((times.random(n) * span_us).astype(np.int64), span_us - 1)
        type_idx = np.minimum(np.searchsorted(cumulative, types.random(n), side="right"), len(EVENT_TYPES) - 1)
        raw_ids = np.asarray(ids.random_raw(2 * n), dtype=np.uint64).reshape(n, 2)
        driver_take = pa.array(driver_idx)
        yield pa.RecordBatch.from_arrays(
            [
                uuid_strings(raw_ids),
                driver_strings.take(driver_take),
                company_strings.take(pa.array(driver_idx // drivers)),
                truck_strings.take(driver_take),
                type_strings.take(pa.array(type_idx)),
                pa.array(start_us + offsets_us, type=_TS),
                _constant(batch, n, pa.string()),
                _constant(start_us, n, _TS),
                _constant(start_us + span_us, n, _TS),
            ],
            schema=EVENT_SCHEMA,
        )
