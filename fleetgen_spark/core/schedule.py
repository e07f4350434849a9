"""The onboarding schedule: which companies exist when. Both sources use it, so they agree.

Companies are numbered 0, 1, 2, ... in onboarding order. A tick at ``t`` onboards the
next ``companies_per_onboarding`` companies (``created_at = t``) until the fleet size is
reached. A company is eligible for an interval when ``created_at < interval_start``.

A plan is a list of segments: the config in force from the simulation start, then one
segment per recorded config change, each governing the ticks from its ``effective_from``
on (ticks of a segment fall at ``effective_from + k * onboarding_interval``). Lowering
the fleet size never removes a company.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fleetgen_spark.core.config import Config

__all__ = ["BLOCK_SIZE", "OnboardingPlan", "Segment", "Tick", "blocks"]

# Companies are generated in fixed blocks: part of the dataset definition, never of the
# Spark plan. Changing it changes the data, so it never depends on cores or partitions.
BLOCK_SIZE = 100


@dataclass(frozen=True)
class Segment:
    """The onboarding rules in force from ``effective_from`` (epoch seconds) on."""

    effective_from: int
    number_of_companies: int
    companies_per_onboarding: int
    onboarding_s: int

    @classmethod
    def from_config(cls, config: Config, effective_from: int) -> Segment:
        return cls(effective_from, config.number_of_companies, config.per_onboarding, config.onboarding_seconds)

    def to_dict(self) -> dict[str, int]:
        return {
            "effective_from": self.effective_from,
            "number_of_companies": self.number_of_companies,
            "companies_per_onboarding": self.companies_per_onboarding,
            "onboarding_s": self.onboarding_s,
        }


@dataclass(frozen=True)
class Tick:
    """One onboarding tick: ``count`` companies from index ``first`` created at ``time``."""

    time: int
    first: int
    count: int


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class OnboardingPlan:
    """Who exists when, as a pure function of the segments."""

    segments: tuple[Segment, ...]

    @classmethod
    def from_config(cls, config: Config, start: int) -> OnboardingPlan:
        return cls((Segment.from_config(config, start),))

    @property
    def start(self) -> int:
        return self.segments[0].effective_from

    def _bounds(self) -> Iterator[tuple[Segment, float]]:
        for i, seg in enumerate(self.segments):
            yield seg, (self.segments[i + 1].effective_from if i + 1 < len(self.segments) else float("inf"))

    def onboarded_before(self, t: int) -> int:
        """How many companies have ``created_at < t``: the eligible ones for an interval starting at t."""
        total = 0
        for seg, seg_end in self._bounds():
            if t <= seg.effective_from:
                break
            upto = min(t, seg_end)
            n_ticks = _ceil_div(int(upto) - seg.effective_from, seg.onboarding_s)
            if seg.number_of_companies > total:
                total = min(seg.number_of_companies, total + seg.companies_per_onboarding * n_ticks)
        return total

    def ticks(self, from_t: int, to_t: int) -> Iterator[Tick]:
        """The ticks in ``[from_t, to_t)`` that onboard at least one company, in time order."""
        for seg, seg_end in self._bounds():
            stop = min(to_t, seg_end)
            if stop <= seg.effective_from or from_t >= seg_end:
                continue
            k = max(0, _ceil_div(from_t - seg.effective_from, seg.onboarding_s))
            t = seg.effective_from + k * seg.onboarding_s
            while t < stop:
                before = self.onboarded_before(t)
                count = min(seg.companies_per_onboarding, seg.number_of_companies - before)
                if count <= 0:
                    break
                yield Tick(t, before, count)
                t += seg.onboarding_s

    def cadence(self, from_t: int, to_t: int) -> Iterator[Tick]:
        """Every onboarding instant in ``[from_t, to_t)``, in time order, whether or not it onboards anyone
        (``count`` 0 once the fleet is complete): company churn happens on all of them."""
        for seg, seg_end in self._bounds():
            stop = min(to_t, seg_end)
            if stop <= seg.effective_from or from_t >= seg_end:
                continue
            k = max(0, _ceil_div(from_t - seg.effective_from, seg.onboarding_s))
            t = seg.effective_from + k * seg.onboarding_s
            while t < stop:
                before = self.onboarded_before(t)
                yield Tick(t, before, max(0, min(seg.companies_per_onboarding, seg.number_of_companies - before)))
                t += seg.onboarding_s

    def cadence_count(self, t: int) -> int:
        """How many onboarding instants fall before ``t``: the index of the first one at or after it."""
        count = 0
        for seg, seg_end in self._bounds():
            if t <= seg.effective_from:
                break
            count += _ceil_div(int(min(t, seg_end)) - seg.effective_from, seg.onboarding_s)
        return count

    def created_at(self, indices: np.ndarray) -> np.ndarray:
        """The onboarding instant (epoch s) of each company index given (each must be onboarded by some tick)."""
        if not indices.size:
            return np.zeros(0, dtype=np.int64)
        upto = int(indices.max()) + 1
        firsts: list[int] = []
        times: list[int] = []
        for tick in self.ticks(self.start, 2**62):
            firsts.append(tick.first)
            times.append(tick.time)
            if tick.first + tick.count >= upto:
                break
        found: np.ndarray = np.asarray(times, dtype=np.int64)[np.searchsorted(firsts, indices, side="right") - 1]
        return found

    def next_tick(self, from_t: int) -> Tick | None:
        """The first tick at or after ``from_t`` that onboards someone, if any is left."""
        for seg, seg_end in self._bounds():
            if from_t >= seg_end:
                continue
            tick = next(self.ticks(max(from_t, seg.effective_from), int(min(seg_end, 2**62))), None)
            if tick is not None:
                return tick
        return None


def blocks(n_companies: int) -> Iterator[tuple[int, int, int]]:
    """(block, first company, companies in block) for the first ``n_companies`` companies."""
    for block in range(_ceil_div(n_companies, BLOCK_SIZE)):
        first = block * BLOCK_SIZE
        yield block, first, min(BLOCK_SIZE, n_companies - first)
