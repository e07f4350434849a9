"""Messy delivery: late, duplicate and bad records, seeded, with the answer key. Pure numpy and Arrow.

The events are those of :func:`fleetgen_spark.core.generate.event_batches`; what this module adds is
*when* each is delivered, whether it is delivered twice, and which extra malformed records come
with an interval. Every decision is drawn from a stream of its own, seeded by the event's own
interval and block (``seed.py``), so:

- the rows delivered in interval ``k`` are a pure function of (config, seed, k, block): the
  events of the intervals ``k - reach .. k`` are generated again and the ones whose delivery
  falls on ``k`` are kept, whatever the micro-batching, the partitions or a crash;
- with every knob at 0 nothing here runs and the rows are bit-identical to the knob-off stream.

Rules (DESIGN.md "Realism"): an event of interval ``j`` with in-interval offset ``x`` may be
delivered in ``j + m`` for ``0 <= m <= (max_lateness + x) // interval`` (so ``interval_start -
max_lateness <= timestamp`` for every delivered row). A late event (chance ``late_fraction``,
when ``m >= 1`` is allowed at all) takes ``m`` uniform in ``1..most``; a duplicate (chance
``duplicate_fraction``) is re-sent once, at ``m`` uniform from its first delivery to ``most``.
A bad record (chance ``bad_record_fraction`` per event of the interval) copies an event of the
interval with a fresh event_id and exactly one defect, named by the reason code validation gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fleetgen_spark.core.clock import batch_id, from_epoch
from fleetgen_spark.core.columns import uuid_strings
from fleetgen_spark.core.generate import (
    EVENT_SCHEMA,
    EventSpec,
    driver_counts,
    event_batches,
    selected_events,
    shift_draws,
)
from fleetgen_spark.core.schedule import BLOCK_SIZE, blocks
from fleetgen_spark.core.seed import bit_generator, generator

__all__ = [
    "BAD_EVENT_TYPE",
    "BAD_REASONS",
    "AnswerKey",
    "Deliveries",
    "answer_key",
    "bad_rows",
    "delivered_batches",
    "deliveries",
    "event_offsets_us",
    "lookback",
]

# The defect of a bad record, by kind: the reason code validation gives it.
BAD_REASONS = ("missing_truck_id", "unknown_event_type", "timestamp_outside_interval", "company_not_eligible")
BAD_EVENT_TYPE = "refueled"  # an event type the schema does not know

_TS = pa.timestamp("us", tz="UTC")
_US = 1_000_000


def lookback(spec: EventSpec) -> int:
    """How many intervals before its own an event of this spec can be delivered in (0: never late)."""
    if spec.late_fraction <= 0 and spec.duplicate_fraction <= 0:
        return 0
    return -(-spec.max_lateness_s // spec.interval_s)


def event_offsets_us(spec: EventSpec, interval_start_s: int, block: int, n_companies: int) -> np.ndarray:
    """The in-interval offsets (microseconds) of a block's events, without building the rows.

    The same draws as :func:`event_batches` (the times stream is sequence-stable), for the answer
    key on the driver; a test holds the two equal.
    """
    if spec.shifts:
        return shift_draws(spec, interval_start_s, block, n_companies).offsets_us
    n = int(driver_counts(spec, interval_start_s, block, n_companies).sum())
    span_us = spec.interval_s * _US
    times = generator(spec.seed, "event_times", interval_start_s, block).random(n)
    offsets: np.ndarray = np.minimum((times * span_us).astype(np.int64), span_us - 1)
    return offsets


@dataclass(frozen=True)
class Deliveries:
    """When each event of one (interval, block) is delivered, in intervals after its own."""

    first: np.ndarray  # int64 per event: 0 on time, m >= 1 late by m intervals
    again: np.ndarray  # int64 per event: the re-send's offset, -1 when it is sent once


def deliveries(spec: EventSpec, interval_start_s: int, block: int, offsets_us: np.ndarray) -> Deliveries:
    """The delivery draws of a block's events (four numbers per event from their own stream)."""
    n = int(offsets_us.size)
    u = generator(spec.seed, "event_delivery", interval_start_s, block).random((n, 4))
    span_us = spec.interval_s * _US
    most = (spec.max_lateness_s * _US + offsets_us) // span_us
    late = (u[:, 0] < spec.late_fraction) & (most >= 1)
    first = np.where(late, np.minimum(1 + (u[:, 1] * most).astype(np.int64), most), 0)
    twice = u[:, 2] < spec.duplicate_fraction
    again = np.where(twice, np.minimum(first + (u[:, 3] * (most - first + 1)).astype(np.int64), most), -1)
    return Deliveries(first.astype(np.int64), again.astype(np.int64))


def bad_rows(
    spec: EventSpec, interval_start_s: int, block: int, n_events: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(event rows copied, defect kind 0..3, a uniform for the defect) of an interval's bad records."""
    u = generator(spec.seed, "bad_records", interval_start_s, block).random((n_events, 3))
    rows = np.flatnonzero(u[:, 0] < spec.bad_record_fraction)
    kinds = np.minimum((u[rows, 1] * len(BAD_REASONS)).astype(np.int64), len(BAD_REASONS) - 1)
    return rows, kinds, u[rows, 2]


def _bad_batch(spec: EventSpec, interval_start_s: int, block: int, events: pa.Table) -> pa.Table | None:
    rows, kinds, extra = bad_rows(spec, interval_start_s, block, events.num_rows)
    m = int(rows.size)
    if m == 0:
        return None
    bad = events.take(pa.array(rows))
    raw = np.asarray(
        bit_generator(spec.seed, "bad_record_ids", interval_start_s, block).random_raw(4 * m), dtype=np.uint64
    ).reshape(m, 4)
    span_us, start_us = spec.interval_s * _US, interval_start_s * _US
    after = start_us + span_us + (extra * 2 * span_us).astype(np.int64)
    before = start_us - spec.max_lateness_s * _US - 1 - ((extra * 2 - 1) * span_us).astype(np.int64)
    stamps = np.where(extra < 0.5, after, before)
    kind = [pa.array(kinds == k) for k in range(len(BAD_REASONS))]
    columns = {
        "event_id": uuid_strings(np.ascontiguousarray(raw[:, :2])),
        "truck_id": pc.if_else(kind[0], pa.scalar(None, pa.string()), bad["truck_id"]),
        "event_type": pc.if_else(kind[1], pa.scalar(BAD_EVENT_TYPE), bad["event_type"]),
        "timestamp": pc.if_else(kind[2], pa.array(stamps, type=_TS), bad["timestamp"]),
        "company_id": pc.if_else(kind[3], uuid_strings(np.ascontiguousarray(raw[:, 2:])), bad["company_id"]),
    }
    for name, column in columns.items():
        bad = bad.set_column(EVENT_SCHEMA.get_field_index(name), EVENT_SCHEMA.field(name), column)
    return bad


def _events(spec: EventSpec, interval_start_s: int, block: int, n_companies: int) -> pa.Table:
    return pa.Table.from_batches(list(event_batches(spec, interval_start_s, block, n_companies)), schema=EVENT_SCHEMA)


def _redeliver(rows: pa.Table, interval_start_s: int, interval_s: int) -> pa.Table:
    """The rows as delivered in the interval starting at ``interval_start_s`` (event fields kept)."""
    n = rows.num_rows
    start_us = interval_start_s * _US
    values = {
        "batch_id": pa.array([batch_id(from_epoch(interval_start_s))] * n, type=pa.string()),
        "interval_start": pa.array(np.full(n, start_us, dtype=np.int64), type=_TS),
        "interval_end": pa.array(np.full(n, start_us + interval_s * _US, dtype=np.int64), type=_TS),
    }
    for name, column in values.items():
        rows = rows.set_column(EVENT_SCHEMA.get_field_index(name), EVENT_SCHEMA.field(name), column)
    return rows


def delivered_batches(
    spec: EventSpec,
    interval_start_s: int,
    block: int,
    n_companies: int,
    earlier: Sequence[tuple[int, int, EventSpec]] = (),
) -> Iterator[pa.RecordBatch]:
    """What a block delivers in one interval: its own on-time events and re-sends, the late ones
    and re-sends of the ``earlier`` (interval start, companies, spec) that fall on it, and its bad records."""
    k = interval_start_s
    for start, companies, source_spec in earlier:
        # Only the rows that arrive now are built: the draws of the whole interval, a few rows formatted.
        step = (k - start) // spec.interval_s
        plan = deliveries(source_spec, start, block, event_offsets_us(source_spec, start, block, companies))
        picked = np.concatenate([np.flatnonzero(plan.first == step), np.flatnonzero(plan.again == step)])
        if picked.size:
            rows = selected_events(source_spec, start, block, companies, picked)
            yield from _redeliver(pa.Table.from_batches([rows]), k, spec.interval_s).to_batches()
    events = _events(spec, k, block, n_companies)
    if events.num_rows == 0:
        return
    if lookback(spec) or spec.duplicate_fraction > 0:
        stamps = events.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
        plan = deliveries(spec, k, block, stamps - k * _US)
        on_time = np.flatnonzero(plan.first == 0)
        resent = np.flatnonzero(plan.again == 0)
        yield from events.take(pa.array(np.concatenate([on_time, resent]))).to_batches()
    else:  # only bad records: every event is delivered once, on time
        yield from events.to_batches()
    if spec.bad_record_fraction > 0:
        bad = _bad_batch(spec, k, block, events)
        if bad is not None:
            yield from bad.to_batches()


@dataclass(frozen=True)
class AnswerKey:
    """What an interval's delivery holds beyond the knob-off events (the ``batches`` columns)."""

    late_events: int = 0
    duplicate_events: int = 0
    bad_records: int = 0


def _block_companies(eligible: int, block: int) -> int:
    return max(0, min(BLOCK_SIZE, eligible - block * BLOCK_SIZE))


def answer_key(
    spec_at: Callable[[int], EventSpec],
    eligible_at: Callable[[int], int],
    reach: int,
    starts: Sequence[int],
) -> dict[int, AnswerKey]:
    """The answer key of each interval starting in ``starts``, from the generation draws alone.

    Runs on the driver without building a row: counts, times and the delivery draws only (about
    0.1 us per event). ``reach`` is the largest :func:`lookback` of the specs in force.
    """
    memo: dict[tuple[int, int], Deliveries] = {}
    keys: dict[int, AnswerKey] = {}
    for k in starts:
        spec_k = spec_at(k)
        late = dup = bad = 0
        for block, _, n_k in blocks(eligible_at(k)):
            for step in range(reach, -1, -1):
                start = k - step * spec_k.interval_s
                spec, companies = spec_at(start), _block_companies(eligible_at(start), block)
                if companies == 0 or (lookback(spec) == 0 and step > 0):
                    continue
                if (start, block) not in memo:
                    memo[start, block] = deliveries(spec, start, block, event_offsets_us(spec, start, block, companies))
                plan = memo[start, block]
                here = int(np.count_nonzero(plan.first == step)) if step else 0
                again = int(np.count_nonzero(plan.again == step))
                dup += again
                late += here + again if step else 0
            if spec_k.bad_record_fraction > 0:
                n_events = int(driver_counts(spec_k, k, block, n_k).sum())
                bad += int(bad_rows(spec_k, k, block, n_events)[0].size)
        keys[k] = AnswerKey(late, dup, bad)
    return keys
