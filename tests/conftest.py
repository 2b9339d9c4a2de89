"""Shared helpers: run the plugin as a user does, through pytester, on the real default model."""
from __future__ import annotations

import numpy  # noqa: F401
import pytest
import scipy.stats  # noqa: F401

# numpy and scipy load here, before any test: pytest_quantperf.stats imports them only when
# called, and an in-process pytester run that imported them first would drop them from
# sys.modules on its way out, after which their C extensions cannot be imported again

FAST = ("--quantperf-repeat=3", "--quantperf-warmup=1", "-p", "no:cacheprovider")


@pytest.fixture(autouse=True)
def _shared_model_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester moves HOME; keep the converted default model in the real cache so it converts once."""
    from pytest_quantperf.models import cache_root

    monkeypatch.setenv("QUANTPERF_CACHE", str(cache_root()))


@pytest.fixture
def run_quantperf(pytester: pytest.Pytester):
    """Run pytest in a subprocess with small, fixed repeats (timing tests never gate here)."""

    def run(*args: str, fast: bool = True) -> pytest.RunResult:
        return pytester.runpytest_subprocess(*(FAST if fast else ()), *args)

    return run
