"""Runs as the unit: a change between two runs judged against how much unchanged runs move.

scipy is imported inside the function.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from .samples import _clean, _rel_se_median

__all__ = ["RunLevelTest", "run_spread", "run_level_change"]


@dataclass(frozen=True)
class RunLevelTest:
    """A change between two runs judged against how much unchanged runs move.

    ``spread`` is the relative standard deviation of one run's figure (a run's median) from run
    to run; ``source`` says where it came from: ``history`` (measured on ``n_runs`` saved runs of
    the same baseline name and hardware) or ``assumed`` (no history yet: a stated prior).
    ``p_value`` is the one-sided probability of a change at least this far beyond the tolerance
    if the true change were exactly at the tolerance; ``ci`` the interval of the relative change.
    ``reference`` is what the change is taken from: the baseline's figure, or, when the baseline
    was saved ``n_reference`` >= 2 times from the same code, the geometric mean of those saves.
    """

    p_value: float
    ci: tuple[float, float]
    detectable: float
    spread: float
    source: str
    n_runs: int
    reference: float = math.nan
    n_reference: int = 1
    #: the saved runs moved less than the prior: the prior stands (``measured`` is what they moved)
    floored: bool = False
    measured: float = math.nan
    #: the two parts of the change's standard error (relative): what runs move by (``spread`` over
    #: the runs compared) and what the two runs' own samples leave unknown; the larger one rules
    se_runs: float = math.nan
    se_within: float = math.nan


def run_spread(run_values: Sequence[float]) -> float:
    """Relative run-to-run standard deviation of a figure from saved runs (sd of its logs)."""
    logs = [math.log(x) for x in _clean(run_values) if x > 0]
    return statistics.stdev(logs) if len(logs) >= 2 else math.inf


def run_level_change(base: float, cur: float, *, rel_tol: float, history: Sequence[float] = (),
                     prior_spread: float, base_samples: Sequence[float] = (),
                     cur_samples: Sequence[float] = (), alpha: float = 0.01,
                     repeats: Sequence[float] = (), prior_df: int | None = None) -> RunLevelTest:
    """Is ``cur`` beyond ``rel_tol`` of ``base`` by more than run-to-run noise explains?

    Repeats inside one run share the run's host load, clocks and memory placement, so they
    cannot say how far a whole run moves: the run is the unit. With three or more saved runs the
    spread is measured (a t quantile with ``runs - 1`` degrees of freedom keeps few runs honest);
    without, ``prior_spread`` stands in and the verdict says so, with a t quantile of ``prior_df``
    degrees of freedom where given (an assumed spread is uncertain itself). The standard error of the
    difference of two runs is ``spread * sqrt(2)``, never less than what the two sets of
    within-run samples alone imply.

    ``repeats``: the figure in every saved run of the baseline's own code (same commit, clean
    tree, same hardware; the baseline's run among them). With two or more and a measured spread,
    the baseline's level is their geometric mean, known to ``spread / sqrt(k)`` instead of
    ``spread``: saving a baseline several times narrows the changes it can tell apart.

    The measured spread can widen the prior, never narrow it: saves taken one after another share
    the host's state of those minutes, so they miss how far it drifts before the next compare
    (five saves in a row moved ±3% on the 2-core CPU runner; unchanged runs ten minutes later
    moved up to +38%). Where they moved less, the prior is taken as known (normal quantile): three
    or more saves at least show the host no noisier than the prior; with no saves nothing does, so
    ``prior_df`` widens the quantile there.
    """
    hist = [x for x in _clean(history) if x > 0]
    measured, floored = math.nan, False
    if len(hist) >= 3:
        measured = run_spread(hist)
        spread, source, df = measured, "history", len(hist) - 1
        if measured < prior_spread:  # the prior, with its normal quantile: the runs did not measure it
            spread, df, floored = prior_spread, None, True
    else:
        spread, source, df = prior_spread, "assumed", prior_df
    reps = [x for x in _clean(repeats) if x > 0] if source == "history" else []
    k = len(reps) if len(reps) >= 2 else 1
    if k > 1:
        base = math.exp(statistics.fmean(math.log(x) for x in reps))
    se_runs = se = spread * math.sqrt(1 + 1 / k)
    se_within = math.hypot(*(s if math.isfinite(s) else 0.0
                             for s in (_rel_se_median(base_samples) if len(_clean(base_samples)) >= 2 else 0.0,
                                       _rel_se_median(cur_samples) if len(_clean(cur_samples)) >= 2 else 0.0)))
    se = max(se, se_within, 1e-9)
    if df:  # measured spread, or a prior of stated weight: Student's t (scipy imported only then)
        from scipy import stats as _st

        t = _st.t(df)
        ppf, sf = t.ppf, t.sf
    else:  # a prior taken as known: the normal quantile, from the standard library
        nd = statistics.NormalDist()
        ppf, sf = nd.inv_cdf, (lambda x: 1.0 - nd.cdf(x))
    crit = float(ppf(1 - alpha))  # one-sided test at alpha; its interval is two-sided at 1 - 2 alpha
    if not (base > 0 and cur > 0):
        return RunLevelTest(math.nan, (math.nan, math.nan), math.nan, spread, source, len(hist), base, k,
                            floored, measured, se_runs, se_within)
    d = math.log(cur / base)
    edge = math.log1p(rel_tol) if d >= 0 else (-math.log1p(-rel_tol) if rel_tol < 1 else math.inf)
    excess = abs(d) - edge
    p = float(sf(excess / se)) if math.isfinite(excess) else 1.0
    ci = (math.expm1(d - crit * se), math.expm1(d + crit * se))
    detectable = math.expm1(math.log1p(rel_tol) + crit * se)
    return RunLevelTest(p, ci, detectable, spread, source, len(hist), base, k, floored, measured, se_runs,
                        se_within)
