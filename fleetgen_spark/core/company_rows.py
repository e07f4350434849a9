"""Company rows: the companies of an onboarding tick, and their new versions under churn, as Arrow.

A company's id and name are pure functions of (seed, index), drawn a block at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from fleetgen_spark.core.churn import Churn, changes_at
from fleetgen_spark.core.columns import TIMESTAMP, fixed_width_strings, uuid_text
from fleetgen_spark.core.names import company_names, first_name_codes
from fleetgen_spark.core.schedule import BLOCK_SIZE, blocks
from fleetgen_spark.core.seed import bit_generator

__all__ = ["COMPANY_SCHEMA", "company_batch", "company_block_text", "company_ids"]

COMPANY_SCHEMA = pa.schema(
    [
        pa.field("company_id", pa.string(), nullable=False),
        pa.field("company_name", pa.string(), nullable=False),
        pa.field("geography", pa.string(), nullable=False),
        pa.field("active", pa.bool_(), nullable=False),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("updated_at", TIMESTAMP, nullable=False),
    ]
)


def company_block_text(seed: int, block: int) -> np.ndarray:
    """The UUIDs of a block's companies as a (BLOCK_SIZE, 36) uint8 matrix."""
    raw = bit_generator(seed, "company_ids", block).random_raw(2 * BLOCK_SIZE)
    return uuid_text(np.asarray(raw, dtype=np.uint64).reshape(BLOCK_SIZE, 2))


def _company_block_ids(seed: int, block: int) -> pa.StringArray:
    return fixed_width_strings(company_block_text(seed, block))


def _company_block_names(seed: int, block: int) -> list[str]:
    return company_names(first_name_codes(seed, block))


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


def company_batch(seed: int, first: int, count: int, created_at_s: int, churn: Churn | None = None) -> pa.RecordBatch:
    """The companies of one onboarding tick at ``created_at_s``, as a record batch of COMPANY_SCHEMA.

    First the ``count`` companies it onboards (from index ``first``; ``updated_at = created_at``),
    then, with company churn, the new versions of the companies that change at this instant.
    """
    names: list[str] = []
    for block, offset, rows in _company_range(seed, first, count):
        names.extend(_company_block_names(seed, block)[offset : offset + rows])
    tick_us = created_at_s * 1_000_000
    columns = [
        company_ids(seed, first, count),
        pa.array(names, type=pa.string()),
        pa.array(["US"] * count, type=pa.string()),
        pa.array(np.ones(count, dtype=bool)),
        pa.array(np.full(count, tick_us, dtype=np.int64), type=TIMESTAMP),
        pa.array(np.full(count, tick_us, dtype=np.int64), type=TIMESTAMP),
    ]
    batch = pa.RecordBatch.from_arrays(columns, schema=COMPANY_SCHEMA)
    if churn is None:
        return batch
    changed = [b for b in (_changed_companies(seed, churn, block, created_at_s) for block, _, _ in blocks(first)) if b]
    if not changed:
        return batch
    return pa.Table.from_batches([batch, *changed], schema=COMPANY_SCHEMA).combine_chunks().to_batches()[0]


def _changed_companies(seed: int, churn: Churn, block: int, tick_s: int) -> pa.RecordBatch:
    """The new versions of a block's companies that change at the onboarding instant ``tick_s``."""
    found = changes_at(seed, churn, block, tick_s)
    n = int(found.offsets.size)
    indices = block * BLOCK_SIZE + found.offsets
    created = churn.plan.created_at(indices)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(_company_block_ids(seed, block).take(pa.array(found.offsets))),
            pa.array(company_names(found.names), type=pa.string()),
            pa.array(["US"] * n, type=pa.string()),
            pa.array(found.active),
            pa.array(created * 1_000_000, type=TIMESTAMP),
            pa.array(np.full(n, tick_s * 1_000_000, dtype=np.int64), type=TIMESTAMP),
        ],
        schema=COMPANY_SCHEMA,
    )
