"""Statistics: exact values against scipy and hand computations, and the sampling rules."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from pytest_quantperf import stats


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 0), (3, 3), (2, 9), (9, 2), (0, 12), (15, 40),
                                  (1, 1), (100, 130), (7, 0)])
def test_mcnemar_equals_scipy_binomtest(b, c):
    expected = 1.0 if b + c == 0 else st.binomtest(b, b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_mcnemar_hand_value():
    # b=0, c=5: two-sided exact p = 2 * (1/2)^5 = 1/16
    assert stats.mcnemar_exact(0, 5) == pytest.approx(1 / 16)
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 3)


def test_paired_bootstrap_matches_exact_enumeration():
    """Three items with differences 0, 1, 1: all 27 resamples enumerated by hand."""
    x = [1.0, 0.0, 0.0]
    y = [1.0, 1.0, 1.0]
    d = [b - a for a, b in zip(x, y)]
    means = sorted(sum(d[i] for i in idx) / 3 for idx in itertools.product(range(3), repeat=3))
    # distribution: mean 0 w.p. 1/27, 1/3 w.p. 6/27, 2/3 w.p. 12/27, 1 w.p. 8/27
    assert means.count(0.0) == 1 and means.count(1.0) == 8
    lo, hi = stats.paired_bootstrap_diff_ci(x, y, conf=0.90, n_boot=20000, seed=3)
    # 5% quantile: cumulative 1/27 = 3.7% < 5% <= 7/27, so 1/3; 95% quantile: 19/27 = 70% < 95%, so 1
    assert lo == pytest.approx(1 / 3)
    assert hi == pytest.approx(1.0)


def test_paired_bootstrap_constant_difference_and_errors():
    assert stats.paired_bootstrap_diff_ci([1, 2, 3], [1.5, 2.5, 3.5]) == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_bootstrap_diff_ci([1, 2], [1])


def test_paired_p_value_uses_mcnemar_on_binary_items():
    x = [1] * 30 + [0] * 10
    y = [1] * 20 + [0] * 20  # 10 right→wrong, 0 wrong→right
    assert stats.paired_p_value(x, y) == pytest.approx(st.binomtest(0, 10, 0.5).pvalue)
    nll_a = [2.0, 2.1, 1.9, 2.2, 2.05, 1.95, 2.3, 2.0]
    nll_b = [v + 0.3 for v in nll_a]
    assert stats.paired_p_value(nll_a, nll_b) < 0.01
    assert stats.paired_p_value(nll_a, nll_a) == 1.0


def test_median_ci_order_statistics():
    # n=10 at 95%: P(B<=1) = 11/1024 <= 0.025 < P(B<=2): interval [x_(2), x_(9)]
    assert stats.median_ci(range(10)) == (1.0, 8.0)
    # n=5 cannot reach 95%: the whole range
    assert stats.median_ci([5, 1, 4, 2, 3]) == (1.0, 5.0)
    assert stats.median_ci([7.0]) == (7.0, 7.0)
    lo, hi = stats.median_ci([])
    assert math.isnan(lo) and math.isnan(hi)
    # coverage of the computed interval really is >= conf
    for n in (6, 9, 17, 40):
        lo, hi = stats.median_ci(range(n))
        j = int(lo)
        assert 1 - 2 * st.binom.cdf(j, n, 0.5) >= 0.95
        assert 1 - 2 * st.binom.cdf(j + 1, n, 0.5) < 0.95  # and it is the narrowest such


def test_rel_ci_halfwidth():
    assert stats.rel_ci_halfwidth([10.0]) == math.inf
    assert stats.rel_ci_halfwidth([10.0, 10.0, 10.0]) == 0.0
    assert stats.rel_ci_halfwidth([9.0, 10.0, 11.0]) == pytest.approx(0.1)


def test_mann_whitney_matches_scipy_and_edge_cases():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]
    assert stats.mann_whitney(b, a, "greater") == pytest.approx(1 / 252)
    assert stats.mann_whitney(b, a, "greater") == pytest.approx(
        st.mannwhitneyu(b, a, alternative="greater").pvalue)
    assert stats.mann_whitney([], a, "greater") == 1.0
    assert stats.mann_whitney([3.0, 3.0], [3.0, 3.0], "less") == 1.0
    with pytest.raises(ValueError):
        stats.mann_whitney(a, b, "bigger")


def test_bootstrap_median_ratio_ci_is_deterministic_and_sensible():
    rng = np.random.default_rng(0)
    base = rng.normal(100, 2, 15)
    cur = rng.normal(120, 2, 15)
    ci1 = stats.bootstrap_median_ratio_ci(base, cur, seed=1)
    ci2 = stats.bootstrap_median_ratio_ci(base, cur, seed=1)
    assert ci1 == ci2
    assert 1.15 < ci1[0] < 1.2 < ci1[1] < 1.25
    assert all(math.isnan(x) for x in stats.bootstrap_median_ratio_ci([], cur))


def test_min_samples_for_rank_test():
    assert stats.min_samples_for(0.01) == 5  # 1/C(10,5) = 1/252
    assert stats.min_samples_for(0.05) == 4  # 1/C(8,4) = 1/70; 3 gives 1/20 = 0.05, not below


def test_adaptive_rule():
    rule = stats.AdaptiveRule(target_rel_ci=0.02, min_n=5, max_n=8, max_time_s=1.0)
    assert rule.should_stop([1.0] * 4, 100.0) == (False, "min_n")
    assert rule.should_stop([1.0, 1.001, 0.999, 1.0, 1.0], 0.1) == (True, "converged")
    noisy = [1.0, 1.5, 0.7, 1.2, 0.9]
    assert rule.should_stop(noisy, 0.1) == (False, "more")
    assert rule.should_stop(noisy, 1.5) == (True, "time")
    assert rule.should_stop(noisy + [1.1, 0.8, 1.3], 0.1) == (True, "max_n")
    with pytest.raises(ValueError):
        stats.AdaptiveRule(min_n=5, max_n=3)


def test_warmup_settled():
    assert not stats.warmup_settled([])
    assert not stats.warmup_settled([1.0])
    assert not stats.warmup_settled([3.0, 1.5, 1.2])
    assert stats.warmup_settled([3.0, 1.21, 1.2])


def test_min_detectable_change_and_samples_needed():
    rng = np.random.default_rng(5)
    tight = rng.normal(100, 1, 10)
    wide = rng.normal(100, 20, 10)
    d_tight = stats.min_detectable_change(tight, tight, 0.01)
    d_wide = stats.min_detectable_change(wide, wide, 0.01)
    assert 0 < d_tight < 0.03 < d_wide
    # 3 vs 3 can never reach p < 0.01 with a rank test
    assert stats.min_detectable_change([1, 2, 3], [1, 2, 3], 0.01) == math.inf
    n_small = stats.samples_needed(wide, wide, 0.05, 0.01)
    n_big = stats.samples_needed(wide, wide, 0.50, 0.01)
    assert n_small > n_big >= stats.min_samples_for(0.01)
    assert stats.samples_needed([1.0], [1.0], 0.1) == stats.min_samples_for(0.01)
    # with the suggested count, the detectable change shrinks to about the effect asked for
    n = stats.samples_needed(wide, wide, 0.2, 0.01)
    more = rng.normal(100, 20, n)
    assert stats.min_detectable_change(more, rng.normal(100, 20, n), 0.01) < 0.3
