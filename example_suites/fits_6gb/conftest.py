"""fits_6gb: the model under test and prompts of an exact length.

On a GPU the suite asks about a 7B model (``synthetic:mistral-7b``: real shapes, random weights,
nothing to download); on the CPU it measures the small real default model against a host-memory
budget instead and keeps the 7B question to the prediction. ``--quantperf-model`` overrides.
"""
from __future__ import annotations

import pytest

from pytest_quantperf.suite import default_suite_model


@pytest.fixture(scope="session")
def suite_model(pytestconfig: pytest.Config) -> str:
    return default_suite_model(pytestconfig)


@pytest.fixture(scope="session")
def prompt_of():
    """``prompt_of(lm, n)``: a prompt of (about) n tokens of the reference text for this tokenizer."""
    from pytest_quantperf.accuracy import default_text

    text = default_text()

    def make(lm, n: int) -> str:
        ids = lm.tokenizer.encode(text)
        while len(ids) < n:
            ids = ids + ids
        return lm.tokenizer.decode(ids[:n], skip_special_tokens=True)

    return make
