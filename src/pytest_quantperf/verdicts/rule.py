"""The one verdict rule: a change's interval held against the tolerance band.

Every compared figure (against a baseline, against a budget's limit, across ``quantperf ab``
rounds) is put on one scale where positive means worse: the log ratio for a relative tolerance,
the signed difference for an absolute one, each turned so that "worse" is up. Its interval (from
the run-to-run spread for timings, from pairing per question or per token for accuracy, a single
point for deterministic figures) is then held against the band ``[-better_edge, worse_edge]``:

* **regression**: the whole interval lies beyond the worse edge;
* **improvement**: the whole interval lies beyond the better edge;
* **pass**: the whole interval lies inside the band: the figure is shown to be within tolerance;
* **inconclusive**: anything else.

A worse change beyond the tolerance therefore never passes (its point lies outside the band, and
so does part of any interval around it), and an interval that cannot fit inside the band can
never pass either: the message says which changes such runs decide. An inconclusive figure is
*shown worse* when its whole interval lies on the worse side of zero: the runs show it worse
without saying by how much; only those are printed as warnings.

Pure Python: no torch, pytest, numpy or scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["REGRESSION", "IMPROVEMENT", "PASS", "INCONCLUSIVE", "RULE_STATUSES", "ALPHA", "Band", "Decision",
           "decide", "band_for", "STAT_KINDS"]

REGRESSION, IMPROVEMENT, PASS, INCONCLUSIVE = "regression", "improvement", "pass", "inconclusive"
RULE_STATUSES = (REGRESSION, IMPROVEMENT, PASS, INCONCLUSIVE)
#: the one significance level: each side of a two-sided 1 - 2·ALPHA interval is a one-sided test at
#: ALPHA, for the baseline gate, budgets and ``quantperf ab`` alike
ALPHA = 0.01

#: kinds whose figures move from run to run: judged on an interval from their samples and the
#: spread between runs (compare, budgets and ``quantperf ab`` alike); other kinds repeat exactly
STAT_KINDS = ("timing", "energy", "gpu_timing")


@dataclass(frozen=True)
class Band:
    """The tolerance band on the worse-is-up scale: ``[-better, worse]`` (either may be infinite)."""

    worse: float
    better: float


def band_for(tolerance: float, relative: bool, lower_is_better: bool) -> Band:
    """The band of a tolerance on the worse-is-up scale.

    Relative: the scale is ``log(current / baseline)`` (turned for higher-is-better figures), so a
    10% tolerance is ``log 1.1`` on the way up and ``-log 0.9`` on the way down: the band is exactly
    the values within ±10% of the baseline. Absolute: the signed difference, the same both ways.
    """
    if not relative:
        return Band(tolerance, tolerance)
    up = math.log1p(tolerance)
    down = -math.log1p(-tolerance) if tolerance < 1 else math.inf
    return Band(up, down) if lower_is_better else Band(down, up)


@dataclass(frozen=True)
class Decision:
    status: str
    #: the whole interval is on the worse side of zero (the figure is shown worse)
    shown_worse: bool
    #: the smallest worse change (on the scale) these runs decide: the worse edge plus the
    #: interval's half-width below the point
    decides_beyond: float


def decide(point: float, lo: float, hi: float, band: Band) -> Decision:
    """Status of one figure from its point and interval on the worse-is-up scale."""
    if not all(math.isfinite(x) for x in (point,)) or math.isnan(lo) or math.isnan(hi):
        return Decision(INCONCLUSIVE, False, math.inf)
    if lo > band.worse:
        status = REGRESSION
    elif hi < -band.better:
        status = IMPROVEMENT
    elif lo >= -band.better and hi <= band.worse:
        status = PASS
    else:
        status = INCONCLUSIVE
    return Decision(status, lo > 0, band.worse + max(point - lo, 0.0))
