"""Runs as the unit: the interval of a change between two runs, from how far unchanged runs move.

Repeats inside one run share its host load, clocks and memory placement, so they cannot say how
far a whole run moves; that spread is an assumption about the machine (a prior with a stated
weight) until saved runs of the same code measure it, and the two are pooled continuously: one
more save, or a save that moved a little more, moves the interval a little, never by a jump.

scipy is imported inside the functions that need it.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from .samples import _clean, _rel_se_median

__all__ = ["RunChange", "run_spread", "run_change", "t_quantile", "KNOWN_DF"]

#: the weight, in degrees of freedom, of a prior taken as well known (kernel time's 0.3%)
KNOWN_DF = 30.0


def t_quantile(p: float, df: float | None) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (the normal one for None)."""
    if df is None or not math.isfinite(df):
        return statistics.NormalDist().inv_cdf(p)
    from scipy import stats as _st

    return float(_st.t.ppf(p, df))


@dataclass(frozen=True)
class RunChange:
    """A change between runs in log space with its standard error and where the spread came from.

    ``d`` is ``log(current / reference)``; ``reference`` is the baseline's figure, or the geometric
    mean of its ``n_same_code`` saved runs of the same code. ``spread`` is the pooled log-sd of one
    run's figure, worth ``df`` degrees of freedom; ``source`` says in words how it was built.
    """

    d: float
    se: float
    df: float
    spread: float
    reference: float
    n_same_code: int
    source: str
    measured: float = math.nan

    def interval(self, alpha: float) -> tuple[float, float]:
        """The two-sided ``1 - 2 alpha`` interval of ``d``: each side is a one-sided test at alpha."""
        h = t_quantile(1 - alpha, self.df) * self.se
        return (self.d - h, self.d + h)

    def halfwidth(self, alpha: float) -> float:
        return t_quantile(1 - alpha, self.df) * self.se


def run_spread(run_values: Sequence[float]) -> float:
    """Relative run-to-run standard deviation of a figure from saved runs (sd of its logs)."""
    logs = [math.log(x) for x in _clean(run_values) if x > 0]
    return statistics.stdev(logs) if len(logs) >= 2 else math.inf


def run_change(base: float, cur: float, *, prior_spread: float, prior_df: float | None,
               same_code: Sequence[float] = (), base_samples: Sequence[float] = (),
               cur_samples: Sequence[float] = ()) -> RunChange:
    """The change from ``base`` to ``cur`` with the standard error run-to-run noise gives it.

    ``same_code``: the figure in every saved run of the baseline's own code (same commit, clean
    tree, same hardware; the baseline among them). With two or more, their log-sd (``k - 1``
    degrees of freedom) is pooled with the prior (``prior_df`` of them) into one spread,
    ``s² = (ν0·s0² + ν·s²) / (ν0 + ν)`` with ``ν0 + ν`` degrees of freedom, and the reference level
    is their geometric mean, known to ``s / sqrt(k)``. Runs of other commits never enter: a change
    of code is not noise. The two runs' own sample scatter (the standard error of each median) adds
    in quadrature. Non-positive figures give an infinite error: nothing is decided on them.
    """
    nu0 = KNOWN_DF if prior_df is None else float(prior_df)
    reps = [x for x in _clean(same_code) if x > 0]
    k = len(reps) if len(reps) >= 2 else 1
    measured = run_spread(reps) if k > 1 else math.nan
    if k > 1:
        nu = k - 1
        spread = math.sqrt((nu0 * prior_spread ** 2 + nu * measured ** 2) / (nu0 + nu))
        df = nu0 + nu
        base = math.exp(statistics.fmean(math.log(x) for x in reps))
        source = (f"run-to-run spread ±{spread * 100:.2g}%: the assumed ±{prior_spread * 100:.2g}% pooled with "
                  f"{k} saved runs of the baseline's code (they moved ±{measured * 100:.2g}%); baseline = their "
                  "geometric mean")
    else:
        spread, df = prior_spread, nu0
        source = (f"run-to-run spread ±{spread * 100:.2g}% assumed: no saved runs of the baseline's code "
                  "measure it")
    se_within = math.hypot(*(_rel_se_median(s) if len(_clean(s)) >= 2 else 0.0 for s in (base_samples, cur_samples)))
    se = math.hypot(spread * math.sqrt(1 + 1 / k), se_within if math.isfinite(se_within) else 0.0)
    if not (base > 0 and cur > 0):
        return RunChange(math.nan, math.inf, df, spread, base, k, source, measured)
    return RunChange(math.log(cur / base), se, df, spread, base, k, source, measured)
