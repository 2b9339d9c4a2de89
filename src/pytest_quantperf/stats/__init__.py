"""Statistics behind the verdicts: intervals, rank tests, paired tests and the sampling rules.

Everything here is deterministic (bootstraps take a fixed seed), works on plain sequences of
floats and knows nothing of pytest or torch, so the plugin, the ``quantperf`` command and the
tests all reach the same numbers from the same samples.  numpy and scipy are imported inside
the functions that use them: importing this package (as configure-time code may) stays cheap.

* :mod:`.samples`: the samples of one run: median intervals, Mann–Whitney, the bootstrap of a
  median ratio, the adaptive-sampling rule and sample-size advice;
* :mod:`.paired`: paired items (McNemar, paired bootstrap, paired p-value);
* :mod:`.runs`: runs as the unit: the interval of a change from the run-to-run spread;
* :mod:`.rounds`: paired rounds (``quantperf ab``): the change over rounds, the signed-rank test
  across rounds and the stratified rank test within them.

Every name is handed on here: ``stats.median_ci``, ``from pytest_quantperf.stats import ...``.
"""
from __future__ import annotations

from .paired import mcnemar_exact, paired_bootstrap_diff_ci, paired_p_value
from .rounds import (DEFAULT_ALPHA, RoundsChange, paired_rounds_change, rounds_for_alpha, rounds_shift_p,
                     second_look_alpha, signed_rank_p, signed_rank_size, stratified_rank_p)
from .runs import KNOWN_DF, RunChange, run_change, run_spread, t_quantile
from .samples import (AdaptiveRule, bootstrap_median_ratio_ci, mann_whitney, median_ci, min_detectable_change,
                      min_samples_for, rel_ci_halfwidth, robust_rel_sd, samples_needed, warmup_settled)

__all__ = [
    "median_ci", "rel_ci_halfwidth", "mann_whitney", "bootstrap_median_ratio_ci",
    "mcnemar_exact", "paired_bootstrap_diff_ci", "paired_p_value", "AdaptiveRule",
    "warmup_settled", "min_samples_for", "min_detectable_change", "samples_needed",
    "robust_rel_sd", "RunChange", "run_spread", "run_change", "t_quantile", "KNOWN_DF",
    "DEFAULT_ALPHA", "RoundsChange", "paired_rounds_change", "rounds_for_alpha", "rounds_shift_p",
    "signed_rank_p", "stratified_rank_p", "signed_rank_size", "second_look_alpha",
]
