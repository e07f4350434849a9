"""Seed derivation: every random draw comes from (seed, purpose, keys), nothing else.

One generator stream per purpose, so a knob added later draws from a stream of its own
and leaves every existing column unchanged while it is off.
"""

from __future__ import annotations

import secrets

import numpy as np

__all__ = ["PURPOSES", "bit_generator", "draw_seed", "generator"]

# Stable codes: never renumber an existing purpose, it would change the data.
PURPOSES: dict[str, int] = {
    "event_counts": 1,
    "event_times": 2,
    "event_types": 3,
    "event_ids": 4,
    "event_delivery": 5,
    "bad_records": 6,
    "bad_record_ids": 7,
    # event_model: shift (fleetgen_spark.core.shifts)
    "shift_profiles": 8,
    "shift_days": 9,
    "shift_drives": 10,
    "shift_stops": 11,
    "shift_gaps": 12,
    "shift_event_ids": 13,
    "company_ids": 101,
    "company_names": 102,
    "company_churn": 103,
}


def bit_generator(seed: int, purpose: str, *keys: int) -> np.random.PCG64:
    """The PCG64 stream for one purpose and entity (interval, block, ...)."""
    return np.random.PCG64(np.random.SeedSequence([seed, PURPOSES[purpose], *keys]))


def generator(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """A numpy Generator on :func:`bit_generator`'s stream."""
    return np.random.Generator(bit_generator(seed, purpose, *keys))


def draw_seed() -> int:
    """A fresh seed for a dataset that was given none (kept afterwards, never redrawn)."""
    return secrets.randbelow(2**31)
