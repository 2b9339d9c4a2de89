"""quant_matrix: the configurations, and one pandas table (configuration × metric) at the end.

``--matrix-csv=PATH`` (or the environment variable ``QUANTPERF_MATRIX_CSV``) also writes the
table as CSV. The table is built from what each test recorded through ``quantperf.results``;
run the suite without ``-n`` (xdist workers keep their rows to themselves).
"""
from __future__ import annotations

import os

import pytest

from pytest_quantperf.suite import default_suite_model

ROWS = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--matrix-csv", metavar="PATH", default=os.environ.get("QUANTPERF_MATRIX_CSV"),
                     help="write the quant matrix (configuration × metric) as CSV to PATH")


@pytest.fixture(scope="session")
def suite_model(pytestconfig: pytest.Config) -> str:
    return default_suite_model(pytestconfig)


@pytest.fixture
def matrix(pytestconfig: pytest.Config) -> dict:
    """``matrix[config] = {metric: value}``."""
    return pytestconfig.stash.setdefault(ROWS, {})


def build_table(rows: dict):
    import pandas as pd

    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "config"
    return df


def markdown(df) -> str:
    fmt = lambda v: "" if v != v else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| config | " + " | ".join(df.columns) + " |", "|---" * (len(df.columns) + 1) + "|"]
    lines += [f"| {i} | " + " | ".join(fmt(v) for v in row) + " |" for i, row in zip(df.index, df.itertuples(index=False))]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, None)
    if not rows:
        return
    df = build_table(rows)
    terminalreporter.write_sep("=", "quant matrix")
    terminalreporter.write_line(markdown(df))
    path = config.getoption("matrix_csv")
    if path:
        df.to_csv(path, float_format="%.6g")
        terminalreporter.write_line(f"quant matrix written to {os.path.abspath(path)}")
