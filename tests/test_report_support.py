"""Shared by the report and CLI tests (no tests of its own)."""
from __future__ import annotations

import importlib


def preload() -> None:
    """Import what a plugin run imports, before pytester's in-process runs.

    pytester restores ``sys.modules`` after each in-process run; C extensions imported inside a
    run (NVML bindings, matplotlib's) would be dropped and imported again, which they do not
    survive. Imported here first, they stay.
    """
    for mod in ("pytest_quantperf.plugin", "pytest_quantperf.session", "pytest_quantperf.recorder",
                "pytest_quantperf.verdicts.budgets", "pytest_quantperf.verdicts.compare", "pytest_quantperf.store.storage",
                "pytest_quantperf.envinfo", "pytest_quantperf.stats", "pytest_quantperf.models",
                "pytest_quantperf.scale", "pytest_quantperf.report", "pytest_quantperf.report.view",
                "pytest_quantperf.report.terminal", "pytest_quantperf.report.markdown",
                "pytest_quantperf.report.exports", "pytest_quantperf.report.html", "pytest_quantperf.report.charts",
                "pytest_quantperf.cli", "jinja2", "markupsafe", "matplotlib.figure",
                "matplotlib.backends.backend_svg", "filelock", "fsspec", "torch", "pynvml", "tqdm"):
        importlib.import_module(mod)
    from pytest_quantperf.envinfo import fingerprint, git_info

    fingerprint("cpu")
    git_info(".")
