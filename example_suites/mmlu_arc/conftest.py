"""mmlu_arc: the questions to score on, how many, and the table printed at the end of the run.

lm-eval's hub tasks need their data: from the Hugging Face Hub, or from the datasets cache when
offline. A task whose data is not there skips with the reason; the built-in questions
(``quantperf_builtin``, shipped with the package) always run, so the suite says something on any
machine.
"""
from __future__ import annotations

import pytest

from pytest_quantperf.accuracy import lm_eval as le
from pytest_quantperf.suite import markdown_table, on_gpu

ROWS = pytest.StashKey[dict]()
HUB_TASKS = ("mmlu", "arc_easy", "arc_challenge")
TASKS = (*HUB_TASKS, le.BUILTIN_TASK)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lm-eval-limit", type=int, default=None,
                     help="questions per task (default: all on a GPU, 40 on the CPU)")


@pytest.fixture(scope="session")
def limit(pytestconfig: pytest.Config) -> int | None:
    given = pytestconfig.getoption("--lm-eval-limit")
    return given if given is not None else (None if on_gpu(pytestconfig) else 40)


@pytest.fixture(scope="session")
def suite_model(pytestconfig: pytest.Config) -> str:
    """Real weights everywhere: accuracy on random (synthetic) weights is refused.
    ``--quantperf-model=PATH_OR_ID`` points ``"default"`` at the model to judge."""
    return "default"


@pytest.fixture
def task_spec():
    """``task_spec(name)``: what ``quantperf.lm_eval`` takes for a task of this suite; skips a hub
    task whose data is neither reachable nor cached, with lm-eval's reason."""
    def spec(name: str):
        if name == le.BUILTIN_TASK:
            return le.builtin_task()
        why = le.unavailable_reason(name)
        if why:
            pytest.skip(why)
        return name

    return spec


@pytest.fixture
def table(pytestconfig: pytest.Config) -> dict:
    """``table[model] = {column: value}``: the comparison printed after the run."""
    return pytestconfig.stash.setdefault(ROWS, {})


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, None)
    if rows:
        cols = [*(t for t in TASKS if any(t in r for r in rows.values())), "footprint_mb", "tpot_ms", "memory_mb"]
        ordered = {name: {c: r.get(c, "") for c in cols} for name, r in rows.items()}
        terminalreporter.write_sep("=", "mmlu_arc")
        terminalreporter.write_line(markdown_table(ordered, "model"))
