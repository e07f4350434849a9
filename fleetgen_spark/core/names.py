"""Company names: three word lists, a name as one integer code, and the seeded first names. Pure numpy.

A name is ``"{adjective} {noun} {suffix}"``; its code is ``(adjective * NOUNS + noun) * SUFFIXES
+ suffix``, so a block's names are one small integer array (company churn renames by code).
"""

from __future__ import annotations

import numpy as np

from fleetgen_spark.core.schedule import BLOCK_SIZE
from fleetgen_spark.core.seed import generator

__all__ = ["NAME_CODES", "company_names", "first_name_codes"]

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


# How many different names there are (3,200).
NAME_CODES = len(_ADJECTIVES) * len(_NOUNS) * len(_SUFFIXES)


def first_name_codes(seed: int, block: int) -> np.ndarray:
    """The codes of the names a block's companies are onboarded with: a pure function of (seed, block)."""
    rng = generator(seed, "company_names", block)
    picks = (rng.random((BLOCK_SIZE, 3)) * (len(_ADJECTIVES), len(_NOUNS), len(_SUFFIXES))).astype(np.int64)
    codes: np.ndarray = (picks[:, 0] * len(_NOUNS) + picks[:, 1]) * len(_SUFFIXES) + picks[:, 2]
    return codes


def company_names(codes: np.ndarray) -> list[str]:
    """The names of some codes, in order."""
    noun_suffix = len(_NOUNS) * len(_SUFFIXES)
    return [
        f"{_ADJECTIVES[c // noun_suffix]} {_NOUNS[c // len(_SUFFIXES) % len(_NOUNS)]} {_SUFFIXES[c % len(_SUFFIXES)]}"
        for c in codes.tolist()
    ]
