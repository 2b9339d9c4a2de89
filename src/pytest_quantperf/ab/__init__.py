"""``quantperf ab``'s Python API (docs/ab.md, *Python API*).

The command is :mod:`pytest_quantperf.cli.ab`, the runs :mod:`.run`, the verdicts :mod:`.verdict`
and their statistics :mod:`pytest_quantperf.stats.rounds`. The names below are imported on first
use, so the command, which imports ``ab.run``, does not import itself back through this package.
``python -m pytest_quantperf.ab ARGS`` is ``quantperf ab ARGS``.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_PUBLIC: dict[str, str] = {
    **dict.fromkeys(("ABError", "RunLog", "Tree", "format_host_table", "measured_host", "run_ab",
                     "run_host_state"), ".run"),
    **dict.fromkeys(("STATUSES", "ABVerdict", "format_table", "judge_metric", "judge_rounds", "second_look",
                     "undecided"), ".verdict"),
    **dict.fromkeys(("PROG", "main"), "..cli.ab"),
    **dict.fromkeys(("DEFAULT_ALPHA", "rounds_for_alpha", "second_look_alpha", "stratified_rank_p"), "..stats"),
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
