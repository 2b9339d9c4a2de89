"""nf4_options: the model under test and the summary table printed at the end."""
from __future__ import annotations

import pytest

ROWS = pytest.StashKey[dict]()


def on_gpu(config: pytest.Config) -> bool:
    import torch

    return torch.cuda.is_available() and config.getoption("quantperf_device") != "cpu"


@pytest.fixture(scope="session")
def suite_model(pytestconfig: pytest.Config) -> str:
    if pytestconfig.getoption("quantperf_model"):
        return "default"
    return "synthetic:mistral-7b" if on_gpu(pytestconfig) else "default"


@pytest.fixture
def table(pytestconfig: pytest.Config) -> dict:
    return pytestconfig.stash.setdefault(ROWS, {})


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, None)
    if not rows:
        return
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    terminalreporter.write_sep("=", "nf4 options")
    terminalreporter.write_line("| config | " + " | ".join(cols) + " |")
    terminalreporter.write_line("|---" * (len(cols) + 1) + "|")
    for k, r in rows.items():
        terminalreporter.write_line(f"| {k} | " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
