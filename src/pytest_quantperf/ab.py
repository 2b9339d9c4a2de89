"""``quantperf ab``'s Python API, where it has always been imported from.

The command is :mod:`pytest_quantperf.cli.ab`, the runs :mod:`pytest_quantperf.abrun`, the
verdicts :mod:`pytest_quantperf.abverdict` and their statistics :mod:`pytest_quantperf.stats.rounds`;
this module re-exports their public names (docs/ab.md, *Python API*) and imports nothing else.
Nothing in the package imports it.  ``python -m pytest_quantperf.ab ARGS`` is ``quantperf ab ARGS``.
"""
from __future__ import annotations

import sys

from .abrun import ABError, RunLog, Tree, format_host_table, measured_host, run_ab, run_host_state
from .abverdict import STATUSES, ABVerdict, format_table, judge_metric, judge_rounds, second_look, undecided
from .cli.ab import PROG, main
from .stats import DEFAULT_ALPHA, rounds_for_alpha, second_look_alpha, stratified_rank_p

__all__ = ["ABError", "ABVerdict", "judge_metric", "judge_rounds", "rounds_for_alpha", "run_ab",
           "format_table", "format_host_table", "run_host_state", "stratified_rank_p", "main", "DEFAULT_ALPHA",
           "measured_host", "RunLog", "Tree", "STATUSES", "PROG", "second_look", "undecided", "second_look_alpha"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
