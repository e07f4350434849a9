"""The statistics of ``fleetgen report``: chi-square and Poisson tails, and the checks built on them.

Pure numpy and the standard library (no scipy: the two distributions a report needs are a
few lines each). Every check uses the same significance level, ``ALPHA`` (0.001): a
correct generator fails a check about once in a thousand reports, a wrong one as soon as
it has a few intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "ALPHA",
    "SHARE_SLACK",
    "FractionResult",
    "PoissonResult",
    "SharesResult",
    "chi2_sf",
    "fraction_check",
    "poisson_band",
    "poisson_check",
    "shares_check",
]

ALPHA = 0.001
BAND_LEVEL = 1 - ALPHA
# A bounded run drops the late and duplicate deliveries due after its end, so a realism share
# also passes within this relative distance of what was asked.
SHARE_SLACK = 0.10


def _gamma_p_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    ap = a
    for _ in range(100_000):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_q_fraction(a: float, x: float) -> float:
    """Q(a, x) by Lentz's continued fraction (Numerical Recipes ``gcf``), for x >= a + 1."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(x: float, df: float) -> float:
    """P(X >= x) for a chi-square variable with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if x <= 0:
        return 1.0
    a, half = df / 2.0, x / 2.0
    if half < a + 1.0:
        return max(0.0, 1.0 - _gamma_p_series(a, half))
    return min(1.0, _gamma_q_fraction(a, half))


def _normal_two_sided(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


@lru_cache(maxsize=4096)
def poisson_band(mu: float, level: float = BAND_LEVEL) -> tuple[int, int]:
    """The central ``level`` interval [lo, hi] of Poisson(mu): P(X < lo) and P(X > hi) are each <= (1-level)/2."""
    if mu <= 0:
        return 0, 0
    spread = 10.0 * math.sqrt(mu) + 10.0
    ks = np.arange(max(0, math.floor(mu - spread)), math.ceil(mu + spread) + 1)
    log_pmf = ks * math.log(mu) - mu - np.array([math.lgamma(k + 1.0) for k in ks])
    cdf = np.cumsum(np.exp(log_pmf))
    tail = (1.0 - level) / 2.0
    lo = int(ks[int(np.searchsorted(cdf, tail, side="right"))])  # P(X <= lo - 1) <= tail
    hi = int(ks[min(int(np.searchsorted(cdf, 1.0 - tail, side="left")), len(ks) - 1)])
    return lo, hi


# --- checks ---


@dataclass(frozen=True)
class PoissonResult:
    """Counts per interval against Poisson(expected): a mean test, a dispersion test and the band."""

    intervals: int
    observed_total: int
    expected_total: float
    mean_z: float
    mean_p: float
    dispersion: float  # sum((x - mu)^2 / mu): chi-square with `intervals` degrees of freedom
    dispersion_p: float  # two-sided: too spread out or too regular both fail
    inside_band: int
    impossible: int  # events in an interval that expected none
    lo: np.ndarray
    hi: np.ndarray

    @property
    def passed(self) -> bool:
        return self.impossible == 0 and self.mean_p >= ALPHA and self.dispersion_p >= ALPHA


def poisson_check(observed: Sequence[int] | np.ndarray, expected: Sequence[float] | np.ndarray) -> PoissonResult:
    """Whether per-interval counts look like independent Poisson draws with the expected means."""
    x = np.asarray(observed, dtype=float)
    mu = np.asarray(expected, dtype=float)
    if x.shape != mu.shape:
        raise ValueError(f"observed has {x.size} intervals, expected {mu.size}")
    bands = [poisson_band(float(m)) for m in mu]
    lo = np.array([b[0] for b in bands], dtype=float)
    hi = np.array([b[1] for b in bands], dtype=float)
    live = mu > 0
    n = int(live.sum())
    total_mu = float(mu.sum())
    mean_z = (float(x.sum()) - total_mu) / math.sqrt(total_mu) if total_mu > 0 else 0.0
    dispersion = float(((x[live] - mu[live]) ** 2 / mu[live]).sum())
    if n > 0:
        upper = chi2_sf(dispersion, n)
        dispersion_p = min(1.0, 2.0 * min(upper, 1.0 - upper))
    else:
        dispersion_p = 1.0
    return PoissonResult(
        intervals=int(x.size),
        observed_total=int(x.sum()),
        expected_total=total_mu,
        mean_z=mean_z,
        mean_p=_normal_two_sided(mean_z) if total_mu > 0 else 1.0,
        dispersion=dispersion,
        dispersion_p=dispersion_p,
        inside_band=int(((x >= lo) & (x <= hi)).sum()),
        impossible=int(((~live) & (x > 0)).sum()),
        lo=lo,
        hi=hi,
    )


@dataclass(frozen=True)
class SharesResult:
    """Event-type counts against the weights: Pearson's chi-square goodness of fit."""

    counts: dict[str, int]
    weights: dict[str, float]
    chi2: float
    df: int
    p: float
    unexpected: tuple[str, ...]  # types seen that have weight 0 (or are not weighted at all)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def passed(self) -> bool:
        return not self.unexpected and self.p >= ALPHA


def shares_check(counts: Mapping[str, int], weights: Mapping[str, float]) -> SharesResult:
    """Whether ``counts`` could be multinomial draws with probabilities ``weights``."""
    names = list(weights) + sorted(set(counts) - set(weights))
    full = {name: int(counts.get(name, 0)) for name in names}
    total = sum(full.values())
    unexpected = tuple(n for n in names if full[n] > 0 and weights.get(n, 0.0) <= 0)
    weighted = [n for n in names if weights.get(n, 0.0) > 0]
    chi2 = sum((full[n] - total * weights[n]) ** 2 / (total * weights[n]) for n in weighted) if total else 0.0
    df = len(weighted) - 1
    p = chi2_sf(chi2, df) if df > 0 and total > 0 else 1.0
    return SharesResult(full, {n: float(weights.get(n, 0.0)) for n in names}, float(chi2), df, p, unexpected)


@dataclass(frozen=True)
class FractionResult:
    """A count out of ``trials`` against the share that was asked (a binomial test with some slack)."""

    count: int
    trials: int
    asked: float
    p: float

    @property
    def share(self) -> float:
        return self.count / self.trials if self.trials else 0.0

    @property
    def passed(self) -> bool:
        if self.asked <= 0:
            return self.count == 0
        return self.p >= ALPHA or abs(self.share - self.asked) <= SHARE_SLACK * self.asked


def fraction_check(count: int, trials: int, asked: float) -> FractionResult:
    if asked <= 0 or trials <= 0 or asked >= 1:
        return FractionResult(count, trials, asked, 1.0 if count == 0 or asked >= 1 else 0.0)
    z = (count - trials * asked) / math.sqrt(trials * asked * (1 - asked))
    return FractionResult(count, trials, asked, _normal_two_sided(z))
