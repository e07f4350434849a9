"""Company churn: companies deactivate, reactivate and are renamed on onboarding instants. Pure numpy.

At every onboarding instant (``company_onboarding_interval`` apart, also once the fleet is
complete) each company created before it changes with chance ``company_churn_rate``: an active
company is deactivated or renamed (even odds), an inactive one reactivated. A version is in force
from its instant on, so a company is inactive for an interval when its latest change at or before
``interval_start`` deactivated it.

The draws come from one stream per (seed, block of companies): three values per company and
instant, in instant order, so instant ``k``'s draws are the same however far the stream was read
before (PCG64 ``advance``). A company's state depends on its earlier changes, so a block's history
is folded forward once per process and kept: a bounded memo of a pure function, as rows of
(seed, rate, plan, block, instant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetgen_spark.core.memo import BudgetMemo
from fleetgen_spark.core.names import NAME_CODES, first_name_codes
from fleetgen_spark.core.schedule import BLOCK_SIZE, OnboardingPlan
from fleetgen_spark.core.seed import bit_generator

__all__ = [
    "DEACTIVATE_SHARE",
    "BlockChanges",
    "Churn",
    "changes_at",
    "churn_of",
    "inactive_companies",
    "inactive_spans",
    "state_at",
]

# Of the changes of an active company, the share that deactivates it (the rest rename it).
DEACTIVATE_SHARE = 0.5
_DRAWS = 3  # per company and instant: changes?, which change, the new name


@dataclass(frozen=True)
class Churn:
    """What company churn depends on besides the seed: its rate and the onboarding plan (its instants)."""

    rate: float
    plan: OnboardingPlan


def churn_of(rate: float, plan: OnboardingPlan) -> Churn | None:
    """The churn of a data directory, or None while ``company_churn_rate`` is 0 (nothing changes)."""
    return Churn(rate, plan) if rate > 0 else None


@dataclass(frozen=True)
class BlockChanges:
    """The companies of a block that changed at one instant, and their new versions (block order)."""

    offsets: np.ndarray  # positions in the block of the companies that changed
    active: np.ndarray  # their new ``active``
    names: np.ndarray  # their new name codes


class _History:
    """A block's states after each of its first instants: row ``i`` holds the state after ``i`` of them."""

    def __init__(self, seed: int, block: int) -> None:
        self.active = np.ones((1, BLOCK_SIZE), dtype=bool)
        self.names = first_name_codes(seed, block).astype(np.int32)[None, :]
        self.changed = np.zeros((0, BLOCK_SIZE), dtype=bool)

    @property
    def instants(self) -> int:
        return int(self.changed.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.active.nbytes + self.names.nbytes + self.changed.nbytes)

    def extend(self, seed: int, churn: Churn, block: int, upto: int) -> None:
        """Fold the instants ``instants .. upto - 1`` into the history."""
        first = self.instants
        if upto <= first:
            return
        stream = bit_generator(seed, "company_churn", block)
        stream.advance(first * BLOCK_SIZE * _DRAWS)
        draws = np.random.Generator(stream).random((upto - first, BLOCK_SIZE, _DRAWS))
        index = block * BLOCK_SIZE + np.arange(BLOCK_SIZE)
        active, names = self.active[-1].copy(), self.names[-1].copy()
        new_active = np.empty((upto - first, BLOCK_SIZE), dtype=bool)
        new_names = np.empty((upto - first, BLOCK_SIZE), dtype=np.int32)
        new_changed = np.empty((upto - first, BLOCK_SIZE), dtype=bool)
        for row, tick in enumerate(_instants(churn.plan, first, upto)):
            u = draws[row]
            change = (index < churn.plan.onboarded_before(tick)) & (u[:, 0] < churn.rate)
            deactivate = change & active & (u[:, 1] < DEACTIVATE_SHARE)
            rename = change & active & ~deactivate
            active = np.where(change, ~active | rename, active)
            # Any name but the current one, each equally likely.
            other = np.minimum((u[:, 2] * (NAME_CODES - 1)).astype(np.int32), NAME_CODES - 2)
            names = np.where(rename, other + (other >= names), names)
            new_active[row], new_names[row], new_changed[row] = active, names, change
        self.active = np.concatenate([self.active, new_active])
        self.names = np.concatenate([self.names, new_names])
        self.changed = np.concatenate([self.changed, new_changed])


def _instants(plan: OnboardingPlan, first: int, upto: int) -> list[int]:
    """The times of the plan's onboarding instants number ``first .. upto - 1``."""
    times: list[int] = []
    for k, tick in enumerate(plan.cadence(plan.start, 2**62)):
        if k >= upto:
            break
        if k >= first:
            times.append(tick.time)
    return times


def _history(seed: int, churn: Churn, block: int, instants: int) -> _History:
    """A block's history folded up to at least ``instants`` onboarding instants, from the memo."""
    key = (seed, churn, block)
    history = _HISTORIES.take(key) or _History(seed, block)
    # Fold a little ahead: a live query asks for the next instants one by one.
    history.extend(seed, churn, block, instants if history.instants >= instants else instants + 64)
    _HISTORIES.put(key, history)
    return history


# The memo of block histories (a history grows as it is folded further: measured again at each put).
_HISTORIES: BudgetMemo[tuple[int, Churn, int], _History] = BudgetMemo(64 << 20, lambda h: h.nbytes)


def state_at(seed: int, churn: Churn, block: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(active, name code) of every company of a block in force at ``t`` (after every change at or before it)."""
    done = churn.plan.cadence_count(t + 1)
    history = _history(seed, churn, block, done)
    return history.active[done], history.names[done]


def inactive_companies(seed: int, churn: Churn, block: int, n_companies: int, t: int) -> np.ndarray | None:
    """Which of a block's first ``n_companies`` companies are inactive at ``t``; None when all are active."""
    active, _ = state_at(seed, churn, block, t)
    inactive = ~active[:n_companies]
    return inactive if inactive.any() else None


def changes_at(seed: int, churn: Churn, block: int, t: int) -> BlockChanges:
    """The companies of a block that change at the onboarding instant ``t``, with their new versions."""
    k = churn.plan.cadence_count(t)  # t's own index among the instants
    history = _history(seed, churn, block, k + 1)
    offsets = np.flatnonzero(history.changed[k])
    return BlockChanges(offsets, history.active[k + 1][offsets], history.names[k + 1][offsets])


def inactive_spans(seed: int, churn: Churn, n_companies: int, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """When each of the first ``n_companies`` companies was inactive, up to instant ``t``.

    ``(company index, from, to)``, epoch seconds, one row per span ``[from, to)``; ``to`` is -1 for a
    span still open at ``t``. The events writer checks every event against these.
    """
    done = churn.plan.cadence_count(t + 1)
    times = np.asarray(_instants(churn.plan, 0, done), dtype=np.int64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for block in range(-(-n_companies // BLOCK_SIZE)):
        n = min(BLOCK_SIZE, n_companies - block * BLOCK_SIZE)
        active = _history(seed, churn, block, done).active[: done + 1, :n]
        # Row i is the state after instant i - 1: a span opens where a row turns inactive, closes where it turns back.
        company, row = np.nonzero((active[:-1] & ~active[1:]).T)
        closes_company, closes_row = np.nonzero((~active[:-1] & active[1:]).T)
        to = np.full(row.size, -1, dtype=np.int64)
        # Spans of one company alternate open, close: the k-th close of a company ends its k-th span.
        opened_rank = _rank_within(company)
        closed_rank = _rank_within(closes_company)
        closes = zip(closes_company.tolist(), closed_rank.tolist(), times[closes_row].tolist(), strict=True)
        ends = {(c, k): end for c, k, end in closes}
        for i, (c, k) in enumerate(zip(company.tolist(), opened_rank.tolist(), strict=True)):
            to[i] = ends.get((c, k), -1)
        found.append((block * BLOCK_SIZE + company, times[row], to))
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    companies, froms, tos = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return companies, froms, tos


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For a sorted array of group keys, each element's position within its group (0, 1, ...)."""
    if not groups.size:
        return groups
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    counts = np.diff(np.r_[starts, groups.size])
    ranks: np.ndarray = np.arange(groups.size) - np.repeat(starts, counts)
    return ranks
