"""Paired rounds: the statistics of ``quantperf ab``, base and head measured alternately.

Each round runs both sides once on the same machine, so load that hits both runs of a round
cancels in its ratio.  A round's figure is the median of its samples; the change is judged on
the per-round differences (log-ratios when every figure is positive), with the rounds as the
independent units from :func:`rounds_for_alpha` rounds on and the samples within each round
below that.  numpy and scipy are imported inside the functions.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from .paired import paired_bootstrap_diff_ci

__all__ = ["DEFAULT_ALPHA", "RoundsChange", "paired_rounds_change", "rounds_for_alpha", "rounds_shift_p",
           "signed_rank_p", "stratified_rank_p", "signed_rank_size", "second_look_alpha"]

# significance level of quantperf ab's verdicts: 7 rounds at it (rounds_for_alpha)
DEFAULT_ALPHA = 0.01


def rounds_for_alpha(alpha: float) -> int:
    """Fewest rounds at which a one-sided signed-rank test across rounds can reach ``p < alpha``.

    With N rounds all moving the same way the exact p-value is ``2**-N``: 7 rounds at 0.01,
    5 at 0.05.  Below this the round-level test cannot decide and the within-round rank test does.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    n = 1
    while 2.0 ** -n >= alpha:
        n += 1
    return n


def signed_rank_size(n: int, alpha: float) -> float:
    """How often the one-sided exact signed-rank test on ``n`` rounds says ``p < alpha`` when nothing
    changed: the largest null tail ``P(W+ >= w)`` below ``alpha`` (0.0 when there is none).

    The test's p-values are multiples of ``2**-n``, so its real false-alarm rate sits below
    ``alpha``: at 7 rounds and alpha 0.01 only "every round moved one way" (``2**-7 = 0.0078``)
    counts.  What is left, ``alpha`` minus this, can pay for a second look (:func:`second_look_alpha`).
    """
    if n < 1:
        return 0.0
    counts = [1] + [0] * (n * (n + 1) // 2)  # counts[w]: sign patterns whose positive ranks sum to w
    for k in range(1, n + 1):
        for w in range(len(counts) - 1, k - 1, -1):
            counts[w] += counts[w - k]
    tail, size = 0, 0.0
    for w in range(len(counts) - 1, -1, -1):
        tail += counts[w]
        if tail / 2.0 ** n >= alpha:
            break
        size = tail / 2.0 ** n
    return size


def second_look_alpha(first_rounds: int, alpha: float) -> float:
    """The significance level of a second look, over more rounds, after ``first_rounds`` left a figure
    undecided: ``alpha`` minus the first look's real size (:func:`signed_rank_size`), so that the
    two looks together raise a false alarm at most ``alpha`` of the time (a union bound: 0.0022 after
    7 rounds at 0.01).  0.0 below :func:`rounds_for_alpha` rounds, where the within-round rank test's
    continuous p-values spend all of ``alpha`` at the first look.
    """
    if first_rounds < rounds_for_alpha(alpha):
        return 0.0
    return max(alpha - signed_rank_size(first_rounds, alpha), 0.0)


@dataclass(frozen=True)
class RoundsChange:
    """The change of one figure over paired rounds, ``base[i]`` paired with ``head[i]``.

    ``log_scale`` when every figure is positive: then ``diffs`` are the per-round log-ratios
    ``d_i = log(head_i / base_i)``, ``base`` the geometric mean of the base figures and ``head``
    ``base · exp(mean d)``; otherwise ``diffs`` are plain differences and the means arithmetic.
    ``change`` is ``head / base - 1`` (relative to ``|base|``), ``round_changes`` that of each
    round, ``ci`` the paired bootstrap interval of ``change`` over rounds at ``conf`` (None when
    it cannot be computed).
    """

    base: float
    head: float
    change: float
    log_scale: bool
    diffs: tuple[float, ...]
    round_changes: tuple[float, ...]
    ci: tuple[float, float] | None
    conf: float


def paired_rounds_change(base: Sequence[float], head: Sequence[float], *, alpha: float = DEFAULT_ALPHA,
                         n_boot: int = 2000, seed: int = 0, interval: bool = True) -> RoundsChange:
    """Summarise finite per-round figures (medians) of both sides as a :class:`RoundsChange`.

    The interval is the paired bootstrap of the mean difference over rounds, at
    ``max(95%, 1 - 2·alpha)``; ``interval=False`` leaves it out (``ci`` None) for a caller that
    builds its own, as ``quantperf ab``'s verdict does.
    """
    bm, hm = list(base), list(head)
    if len(bm) != len(hm):
        raise ValueError(f"rounds must pair up, got {len(bm)} base and {len(hm)} head figures")
    log_scale = all(v > 0 for v in bm + hm)
    if log_scale:
        xs, ys = [math.log(v) for v in bm], [math.log(v) for v in hm]
        mean_d = statistics.fmean(y - x for x, y in zip(xs, ys))
        b = math.exp(statistics.fmean(xs))
        h = b * math.exp(mean_d)
        round_changes = tuple(hv / bv - 1 for bv, hv in zip(bm, hm))
    else:
        xs, ys = bm, hm
        mean_d = statistics.fmean(y - x for x, y in zip(xs, ys))
        b = statistics.fmean(bm)
        h = b + mean_d
        round_changes = tuple((hv - bv) / abs(bv) if bv else math.nan for bv, hv in zip(bm, hm))
    change = (h - b) / abs(b) if b else (0.0 if h == b else math.nan)

    def to_change(v: float) -> float:
        if log_scale:
            return math.exp(v) - 1
        return v / abs(b) if b else math.nan

    conf = max(0.95, 1 - 2 * alpha)
    ci = None
    if interval:
        lo, hi = paired_bootstrap_diff_ci(xs, ys, conf, n_boot, seed)
        ci = (to_change(lo), to_change(hi)) if math.isfinite(lo) else None
    return RoundsChange(base=b, head=h, change=change, log_scale=log_scale,
                        diffs=tuple(y - x for x, y in zip(xs, ys)), round_changes=round_changes, ci=ci, conf=conf)


def rounds_shift_p(diffs: Sequence[float], base_rounds: Sequence[Sequence[float]],
                   head_rounds: Sequence[Sequence[float]], *, up: bool,
                   alpha: float = DEFAULT_ALPHA) -> tuple[float, str]:
    """One-sided p-value that head moved ``up`` (or down) from base, and the test that gave it.

    From :func:`rounds_for_alpha` rounds on, the exact signed-rank test on the per-round
    ``diffs`` (``"signed-rank"``: the rounds are the independent units); with fewer rounds,
    where that test cannot reach ``alpha``, :func:`stratified_rank_p` on the samples of each
    round (``"stratified-rank"``).
    """
    alternative = "greater" if up else "less"
    if len(diffs) >= rounds_for_alpha(alpha):
        return signed_rank_p(diffs, alternative), "signed-rank"
    return stratified_rank_p(base_rounds, head_rounds, alternative), "stratified-rank"


def stratified_rank_p(base_rounds: Sequence[Sequence[float]], head_rounds: Sequence[Sequence[float]],
                      alternative: str = "greater") -> float:
    """One-sided van Elteren test: do head samples rank above base samples *within* each round?

    Each round is a stratum: the head samples' rank sum ``W_r`` among that round's pooled
    samples (mid-ranks for ties) is centred on its null mean ``n_r (N_r + 1) / 2`` and weighted
    by ``1 / (N_r + 1)``; the weighted sum over rounds, divided by its null standard deviation
    (tie-corrected), is compared with the normal distribution.  Ranking within rounds keeps a
    machine that was slower in one round than another from blurring the comparison, which a
    pooled Mann–Whitney test would suffer.  ``alternative="greater"``: head larger.  Rounds with
    an empty side are skipped; no information gives 1.0.
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', not {alternative!r}")
    import numpy as np
    from scipy import stats as _st

    t_sum = 0.0
    var_sum = 0.0
    for b, h in zip(base_rounds, head_rounds):
        b = [float(x) for x in b if math.isfinite(x)]
        h = [float(x) for x in h if math.isfinite(x)]
        n, m = len(h), len(b)
        if n == 0 or m == 0:
            continue
        big_n = n + m
        x = np.asarray(h + b)
        ranks = _st.rankdata(x)
        w_r = float(ranks[:n].sum()) - n * (big_n + 1) / 2.0
        _, ties = np.unique(x, return_counts=True)
        tie_term = float((ties ** 3 - ties).sum()) / (big_n * (big_n - 1)) if big_n > 1 else 0.0
        var = n * m / 12.0 * (big_n + 1 - tie_term)
        weight = 1.0 / (big_n + 1)
        t_sum += weight * w_r
        var_sum += weight * weight * var
    if var_sum <= 0:
        return 1.0
    z = t_sum / math.sqrt(var_sum)
    p = float(_st.norm.sf(z) if alternative == "greater" else _st.norm.cdf(z))
    return min(max(p, 0.0), 1.0)


def signed_rank_p(d: Sequence[float], alternative: str) -> float:
    """One-sided exact Wilcoxon signed-rank p-value; no evidence (1.0) when every difference is 0."""
    from scipy import stats as _st

    if all(v == 0 for v in d):
        return 1.0
    p = float(_st.wilcoxon(d, zero_method="wilcox", alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p
