"""Pure statistics over repeated timings: summaries and a confidence interval for the median.

No I/O, no clocks: the timing loop feeds lists of seconds in and decides when to stop from
``median_ci``. The interval comes from order statistics (distribution-free: latencies are
skewed and heavy-tailed, so a normal-theory interval on the mean would mislead).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    stdev: float

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "p50": self.p50, "p90": self.p90, "p99": self.p99, "stdev": self.stdev}


def summarize(samples) -> Summary:
    """n, mean, p50, p90, p99 (linear interpolation) and sample standard deviation (0 for n = 1)."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no samples")
    if not np.all(np.isfinite(values)):
        raise ValueError("samples must be finite")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    stdev = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return Summary(int(values.size), float(values.mean()), float(p50), float(p90), float(p99), stdev)


def _binomial_half_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), computed in log space (exact for any n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    log_half_n = -n * math.log(2.0)
    total = 0.0
    for i in range(k + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
    return min(total, 1.0)


@lru_cache(maxsize=4096)
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the sorted sample bracketing the median with at least ``confidence``.

    The interval [x_(lo), x_(n-1-lo)] covers the population median with probability
    1 - 2 P(X <= lo) for X ~ Binomial(n, 1/2). Returns None when n is too small for any
    interval to reach ``confidence`` (n < 6 at 95%).
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    alpha = 1.0 - confidence
    if n < 1 or 2 * _binomial_half_cdf(0, n) > alpha:
        return None
    if n > 1000:
        # Normal approximation (with a one-rank safety margin) instead of an O(n) sum.
        z = _z_two_sided(confidence)
        lo = max(int(math.floor(n / 2 - z * math.sqrt(n) / 2 - 0.5)) - 1, 0)
        return lo, n - 1 - lo
    # Exact: accumulate P(X <= k) term by term and keep the largest k with 2 P(X <= k) <= alpha.
    log_half_n = -n * math.log(2.0)
    lgamma_n = math.lgamma(n + 1)
    cdf, lo = 0.0, -1
    for k in range(n // 2 + 1):
        cdf += math.exp(lgamma_n - math.lgamma(k + 1) - math.lgamma(n - k + 1) + log_half_n)
        if 2 * cdf > alpha:
            break
        lo = k
    return lo, n - 1 - lo


def _z_two_sided(confidence: float) -> float:
    """The standard normal quantile with ``confidence`` between -z and z."""
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def median_ci(samples, confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval (lo, hi) of the median, or None when n is too small."""
    values = np.sort(np.asarray(samples, dtype=np.float64))
    ranks = median_ci_ranks(int(values.size), confidence)
    if ranks is None:
        return None
    return float(values[ranks[0]]), float(values[ranks[1]])


def relative_ci_halfwidth(samples, confidence: float = 0.95) -> float:
    """Half the width of the median's confidence interval over the median (inf when undefined)."""
    values = np.asarray(samples, dtype=np.float64)
    interval = median_ci(values, confidence)
    if interval is None:
        return math.inf
    median = float(np.median(values))
    if median <= 0:
        return math.inf
    return (interval[1] - interval[0]) / 2.0 / median


def median_converged(samples, target_rel: float = 0.02, confidence: float = 0.95) -> bool:
    """True when the median's confidence interval is within ``target_rel`` of it (half-width)."""
    return relative_ci_halfwidth(samples, confidence) <= target_rel
