import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finplan.profiler import stats


def test_summary_of_known_values():
    summary = stats.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (summary.n, summary.mean, summary.p50) == (5, 3.0, 3.0)
    assert summary.p90 == pytest.approx(4.6)
    assert summary.stdev == pytest.approx(math.sqrt(2.5))
    assert stats.summarize([2.0]).stdev == 0.0


def test_summary_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.summarize([1.0, float("nan")])


def test_median_ci_ranks_cover_at_least_95_percent_and_are_tight():
    assert stats.median_ci_ranks(5) is None  # 2 / 2**5 > 0.05: no interval reaches 95%
    for n in (6, 10, 37, 200, 999, 1000, 1001, 4000):
        lo, hi = stats.median_ci_ranks(n)
        assert hi == n - 1 - lo
        coverage = 1 - 2 * stats._binomial_half_cdf(lo, n)
        assert coverage >= 0.95
        if n <= 1000:  # exact: one rank tighter would fall below 95%
            assert 1 - 2 * stats._binomial_half_cdf(lo + 1, n) < 0.95


def test_median_ci_covers_true_median_in_simulation():
    # Skewed synthetic "latencies" (lognormal, true median 1e-3 s): the interval must cover ~95% of the time.
    rng = np.random.default_rng(0)
    hits = 0
    trials = 400
    for _ in range(trials):
        sample = 1e-3 * rng.lognormal(0.0, 0.5, size=60)
        lo, hi = stats.median_ci(sample)
        hits += lo <= 1e-3 <= hi
    assert 0.92 <= hits / trials <= 0.995


def test_convergence_needs_enough_tight_samples():
    rng = np.random.default_rng(3)
    tight = 1e-3 * (1 + 0.01 * rng.standard_normal(200))
    loose = 1e-3 * rng.lognormal(0.0, 0.6, size=30)
    assert stats.median_converged(tight, 0.02)
    assert not stats.median_converged(loose, 0.02)
    assert stats.relative_ci_halfwidth([1.0] * 3) == math.inf  # too few samples for any interval


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=1e-7, max_value=1.0), min_size=6, max_size=300))
def test_ci_brackets_the_sample_median(values):
    lo, hi = stats.median_ci(values)
    assert lo <= float(np.median(values)) <= hi
    summary = stats.summarize(values)
    assert min(values) <= summary.p50 <= summary.p90 <= summary.p99 <= max(values)
