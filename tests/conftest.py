"""Shared helpers: run the plugin as a user does, through pytester, on the real default model."""
from __future__ import annotations

import pytest

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
