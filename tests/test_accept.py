"""``quantperf accept`` on real saved runs: save, regress, accept the regressed run's value, pass.

The suite records a user metric whose value comes from the environment, so the "change" is
exact and the test needs no model: the path under test is storage, the CLI and the verdict.
"""
from __future__ import annotations

import json

import pytest

from pytest_quantperf.cli import main

SUITE = """
import os

def test_step(quantperf):
    quantperf.record("step_ms", float(os.environ["STEP_MS"]), unit="ms")
"""
NODE = "test_accept_suite.py::test_step"


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run the one-test suite with a given step_ms; returns (run, storage path)."""
    pytester.makepyfile(test_accept_suite=SUITE)
    store = pytester.path / "store"

    def run(step_ms: float, *args: str) -> pytest.RunResult:
        monkeypatch.setenv("STEP_MS", str(step_ms))
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--quantperf-storage={store}", *args)

    return run, store


def accept(store, *args: str) -> int:
    return main(["--storage", str(store), "accept", "main", "--test", NODE, "--metric", "step_ms", *args])


def test_accept_from_the_failing_run_makes_the_next_compare_pass(suite, pytester, capsys):
    run, store = suite
    run(10.0, "--quantperf-save=main").assert_outcomes(passed=1)

    report = pytester.path / "pr.json"
    r = run(25.0, "--quantperf-baseline=main", f"--quantperf-json={report}")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*step_ms*regression*"])
    assert json.loads(report.read_text())["tests"][NODE]["metrics"]["step_ms"]["value"] == 25.0

    # the README form without a value: the baseline's own 10 ms would accept nothing, so it refuses
    assert accept(store, "--reason", "bigger batch, slower on purpose") == 2
    err = capsys.readouterr().err
    assert "--value V" in err and "--from RUN" in err and "the baseline holds 10 ms" in err
    assert "accepted" not in json.loads((store / "baselines" / "main.json").read_text())

    assert accept(store, "--from", str(report), "--reason", "bigger batch, slower on purpose", "--who", "dana") == 0
    out = capsys.readouterr().out
    assert f"accepted {NODE} step_ms = 25 ms (from {report}, created " in out and "by dana" in out

    r = run(25.0, "--quantperf-baseline=main")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*step_ms*accepted*bigger batch, slower on purpose*"])
    # the acceptance covers the accepted value, not anything worse
    run(75.0, "--quantperf-baseline=main").assert_outcomes(failed=1)


def test_accept_from_a_run_without_the_metric_names_value(suite, pytester, capsys):
    run, store = suite
    run(10.0, "--quantperf-save=main").assert_outcomes(passed=1)
    other = pytester.path / "other.json"
    other.write_text(json.dumps({"schema": 1, "tests": {}}))
    assert accept(store, "--from", str(other), "--reason", "r") == 2
    err = capsys.readouterr().err
    assert f"{other} has no value of {NODE} step_ms" in err and "--value V" in err
    assert accept(store, "--from", str(other), "--value", "12", "--reason", "r") == 2
    assert "not both" in capsys.readouterr().err
    assert accept(store, "--value", "12", "--reason", "r") == 0
    assert "(from --value)" in capsys.readouterr().out
