"""Statistics of the samples one run takes: median intervals, rank tests, the sampling rules.

Timing samples are skewed and outlier-prone (a GC pause, a clock change), so the location is
the median and the tests are rank or resampling based: no normality is assumed anywhere a
verdict depends on it.  The normal approximations in :func:`min_detectable_change` and
:func:`samples_needed` only size advice, never decide a verdict.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

# numpy and scipy are imported inside the functions that use them: importing this module (as
# configure-time code may) stays cheap.

__all__ = [
    "median_ci", "rel_ci_halfwidth", "mann_whitney", "bootstrap_median_ratio_ci", "AdaptiveRule",
    "warmup_settled", "min_samples_for", "min_detectable_change", "samples_needed", "robust_rel_sd",
]


def _clean(samples: Sequence[float]) -> list[float]:
    return [float(x) for x in samples if x is not None and math.isfinite(float(x))]


def median_ci(samples: Sequence[float], conf: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    The interval ``[x_(j), x_(k)]`` is the narrowest symmetric pair whose binomial(n, 1/2)
    coverage reaches ``conf``.  Too few samples for that coverage (n < 6 at 95%) give
    ``(min, max)``, whose true coverage is ``1 - 2 / 2**n``: honest about how little a few
    samples say.  One sample gives ``(x, x)``; none gives ``(nan, nan)``.
    """
    from scipy import stats as _st

    xs = sorted(_clean(samples))
    n = len(xs)
    if n == 0:
        return (math.nan, math.nan)
    if n == 1:
        return (xs[0], xs[0])
    # lower rank j (1-based): largest j with P(B < j) <= (1-conf)/2, B ~ Bin(n, 1/2)
    alpha_half = (1.0 - conf) / 2.0
    j = int(_st.binom.ppf(alpha_half, n, 0.5))  # P(B <= j) >= alpha_half
    if _st.binom.cdf(j, n, 0.5) > alpha_half:
        j -= 1
    # coverage of [x_(j+1), x_(n-j)] is 1 - 2 * P(B <= j)
    j = max(j, 0)
    lo_idx, hi_idx = j, n - 1 - j
    if lo_idx > hi_idx:
        lo_idx, hi_idx = 0, n - 1
    return (xs[lo_idx], xs[hi_idx])


def rel_ci_halfwidth(samples: Sequence[float], conf: float = 0.95) -> float:
    """Half-width of :func:`median_ci` relative to the median; ``inf`` with fewer than 2 samples.

    This is "how well the median is known": 0.02 means within about ±2%.
    """
    xs = _clean(samples)
    if len(xs) < 2:
        return math.inf
    lo, hi = median_ci(xs, conf)
    med = statistics.median(xs)
    if med == 0:
        return 0.0 if hi == lo else math.inf
    return (hi - lo) / 2.0 / abs(med)


def mann_whitney(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> float:
    """p-value of the Mann–Whitney U test of ``a`` against ``b``.

    ``alternative="greater"`` asks whether ``a`` tends to be larger than ``b``.  Empty sides
    or all-equal data give 1.0 (no evidence), never an exception.
    """
    from scipy import stats as _st

    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(f"alternative must be 'two-sided', 'less' or 'greater', not {alternative!r}")
    xa, xb = _clean(a), _clean(b)
    if not xa or not xb:
        return 1.0
    if len(set(xa) | set(xb)) == 1:
        return 1.0
    res = _st.mannwhitneyu(xa, xb, alternative=alternative, method="auto")
    p = float(res.pvalue)
    return 1.0 if math.isnan(p) else min(max(p, 0.0), 1.0)


def _percentile_interval(draws: np.ndarray, conf: float) -> tuple[float, float]:
    import numpy as np

    lo, hi = np.quantile(draws, [(1 - conf) / 2, 1 - (1 - conf) / 2], method="linear")
    return (float(lo), float(hi))


def bootstrap_median_ratio_ci(base: Sequence[float], cur: Sequence[float], conf: float = 0.95,
                              n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``median(cur) / median(base)``, each side resampled alone.

    Deterministic for a given seed.  An empty side gives ``(nan, nan)``; a base median of zero
    gives ``(nan, nan)`` too (a ratio to zero says nothing).
    """
    import numpy as np

    b = np.asarray(_clean(base), dtype=float)
    c = np.asarray(_clean(cur), dtype=float)
    if b.size == 0 or c.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    mc = np.median(c[rng.integers(0, c.size, size=(n_boot, c.size))], axis=1)
    if np.any(mb == 0):
        return (math.nan, math.nan)
    return _percentile_interval(mc / mb, conf)


@dataclass(frozen=True)
class AdaptiveRule:
    """When to stop taking timing samples: once the median is known well enough, within bounds.

    ``min_n`` defaults to 5 because a one-sided Mann–Whitney test on 3 against 3 samples cannot
    reach p < 0.01 at all (its smallest p-value is 1/20); with 5 against 5 it is 1/252.  Fewer
    samples make every timing comparison beyond tolerance end as "inconclusive".
    ``max_time_s`` bounds the samples taken after ``min_n``, not the first ``min_n``.
    """

    target_rel_ci: float = 0.02
    min_n: int = 5
    max_n: int = 30
    max_time_s: float = 20.0
    conf: float = 0.95

    def __post_init__(self) -> None:
        if self.min_n < 1 or self.max_n < self.min_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got min_n={self.min_n}, max_n={self.max_n}")
        if not self.target_rel_ci > 0:
            raise ValueError(f"target_rel_ci must be > 0, got {self.target_rel_ci}")

    def should_stop(self, samples: Sequence[float], elapsed_s: float) -> tuple[bool, str]:
        """``(stop, reason)``; reason is one of ``min_n``, ``max_n``, ``converged``, ``time``, ``more``."""
        n = len(samples)
        if n >= self.max_n:
            return True, "max_n"
        if n < self.min_n:
            return False, "min_n"
        hw = rel_ci_halfwidth(samples, self.conf)
        if hw <= self.target_rel_ci:
            return True, "converged"
        if elapsed_s >= self.max_time_s:
            return True, "time"
        return False, "more"


def warmup_settled(times: Sequence[float], rel: float = 0.05) -> bool:
    """True once the last two warm-up timings agree within ``rel`` of the larger one.

    The caller bounds the number of warm-up runs; this only says "warm enough".
    """
    if len(times) < 2:
        return False
    a, b = float(times[-1]), float(times[-2])
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= rel * max(abs(a), abs(b))


def min_samples_for(alpha: float) -> int:
    """Smallest equal sample count per side at which a one-sided Mann–Whitney test can reach p < alpha."""
    n = 1
    while 1.0 / math.comb(2 * n, n) >= alpha:
        n += 1
    return n


def _mw_floor(n1: int, n2: int) -> float:
    """Smallest one-sided Mann–Whitney p-value possible with these sample counts."""
    if n1 == 0 or n2 == 0:
        return 1.0
    return 1.0 / math.comb(n1 + n2, n1)


def robust_rel_sd(samples: Sequence[float]) -> float:
    """Spread of the samples relative to their median: 1.4826·MAD / |median| (robust CV).

    Falls back to the plain coefficient of variation when more than half the samples are equal.
    ``inf`` with fewer than two samples or a zero median.
    """
    xs = _clean(samples)
    if len(xs) < 2:
        return math.inf
    med = statistics.median(xs)
    if med == 0:
        return math.inf
    mad = statistics.median(abs(x - med) for x in xs)
    sd = 1.4826 * mad
    if sd == 0:
        sd = statistics.stdev(xs)
    return sd / abs(med)


def _rel_se_median(samples: Sequence[float]) -> float:
    """Standard error of the median relative to it (asymptotic: 1.2533 σ / √n)."""
    xs = _clean(samples)
    s = robust_rel_sd(xs)
    return 1.2533 * s / math.sqrt(len(xs)) if math.isfinite(s) else math.inf


def min_detectable_change(base_samples: Sequence[float], cur_samples: Sequence[float],
                          alpha: float = 0.01, power: float = 0.8) -> float:
    """Smallest relative change of the median this pair of sample sets could flag.

    ``(z_{1-alpha} + z_{power}) · sqrt(se_b² + se_c²)`` with ``se`` the relative standard error
    of each median; ``inf`` when the sample counts are too small for the rank test to reach
    ``alpha`` at all.  Advice for the report, not part of the verdict.
    """
    from scipy import stats as _st

    b, c = _clean(base_samples), _clean(cur_samples)
    if len(b) < 2 or len(c) < 2 or _mw_floor(len(b), len(c)) >= alpha:
        return math.inf
    se = math.hypot(_rel_se_median(b), _rel_se_median(c))
    if not math.isfinite(se):
        return math.inf
    z = _st.norm.ppf(1 - alpha) + _st.norm.ppf(power)
    return float(z * se)


def samples_needed(base_samples: Sequence[float], cur_samples: Sequence[float], effect: float,
                   alpha: float = 0.01, power: float = 0.8, cap: int = 10_000) -> int:
    """Samples per side that would tell a relative change of ``effect`` from noise.

    Uses the spread seen so far (the larger of the two sides, at least 0.1%) and never
    answers fewer than the rank test needs to reach ``alpha`` (:func:`min_samples_for`).
    Capped at ``cap``: a change that small is not worth timing.
    """
    from scipy import stats as _st

    floor = min_samples_for(alpha)
    effect = abs(float(effect))
    spreads = [s for s in (robust_rel_sd(base_samples), robust_rel_sd(cur_samples)) if math.isfinite(s)]
    if effect == 0 or not math.isfinite(effect):
        return cap if effect == 0 else floor
    if not spreads:
        return floor
    s = max(max(spreads), 1e-3)
    z = _st.norm.ppf(1 - alpha) + _st.norm.ppf(power)
    # se of each median = 1.2533 s / sqrt(n); two sides: sqrt(2) of that
    n = math.ceil(2 * (z * 1.2533 * s / effect) ** 2)
    return int(min(max(n, floor), cap))
