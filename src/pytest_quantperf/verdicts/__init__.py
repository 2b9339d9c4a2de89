"""Verdicts: the one rule (:mod:`.rule`), the reasons that withhold gating (:mod:`.reasons`), tolerances
(:mod:`.tolerance`), per-test and run comparisons (:mod:`.compare`) and budgets (:mod:`.budgets`).

Pure Python: this package imports neither torch nor pytest.
"""
from .reasons import Reason, reasons_for
from .rule import ALPHA, INCONCLUSIVE, IMPROVEMENT, PASS, REGRESSION, RULE_STATUSES, Band, Decision, band_for, decide

__all__ = ["ALPHA", "INCONCLUSIVE", "IMPROVEMENT", "PASS", "REGRESSION", "RULE_STATUSES", "Band", "Decision",
           "band_for", "decide", "Reason", "reasons_for"]
