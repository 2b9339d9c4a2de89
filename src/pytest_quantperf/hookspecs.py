"""The hooks pytest-quantperf offers to conftest files and other plugins.

Registered through ``pytest_addhooks``; implement them in a ``conftest.py`` or a plugin with the
same name and any subset of the arguments (pluggy passes what you ask for). The signatures are
part of the public contract: new arguments may be added, none removed or renamed.
"""
from __future__ import annotations

from typing import Any, Mapping

import pytest


@pytest.hookspec
def pytest_quantperf_run_finished(config: pytest.Config, document: Mapping[str, Any]) -> None:
    """The run's final document, once per run, on the controller (never on an xdist worker).

    ``document`` is the run document as saved and reported (see docs/architecture.md: ``schema``,
    ``env``, ``git``, ``tests`` with each test's metrics, samples and verdicts), after the baseline
    was saved and the reports were written. Use it to push figures to a dashboard or a database.
    Read it, do not change it. Not called when no test used quantperf and no baseline, save or
    report was asked for: such a run has no document.
    """


@pytest.hookspec
def pytest_quantperf_extra_metrics(config: pytest.Config, nodeid: str, measurement: str, lm: Any,
                                   result: Any) -> Mapping[str, Any] | None:
    """More metrics for one measurement, recorded with the built-in ones.

    Called after each measurement of a test (``measurement`` is ``"generate"``; ``lm`` the model
    handle; ``result`` what the measuring call returned, e.g. the ``GenerateResult`` with its
    ``samples``). Return ``None`` or ``{name: value}``, where value is a number, a list of samples,
    or ``{"value": ..., "unit": ..., "better": "lower"|"higher"|"none"}``
    (``samples`` instead of ``value`` for several). Names are identifiers; they are recorded for
    the model like ``tokens_per_s``, budgeted and compared with a baseline like user metrics of
    ``quantperf.record``.
    """
