"""nf4_options: the model under test and the summary table printed at the end."""
from __future__ import annotations

import pytest

from pytest_quantperf.suite import default_suite_model, markdown_table

ROWS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def suite_model(pytestconfig: pytest.Config) -> str:
    return default_suite_model(pytestconfig)


@pytest.fixture
def table(pytestconfig: pytest.Config) -> dict:
    return pytestconfig.stash.setdefault(ROWS, {})


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, None)
    if not rows:
        return
    terminalreporter.write_sep("=", "nf4 options")
    terminalreporter.write_line(markdown_table(rows, "config"))
