"""Saved runs as a DataFrame (``pytest_quantperf.load_runs``) and as CSV (``quantperf history --csv``)."""
from __future__ import annotations

import pandas as pd

import pytest_quantperf
from pytest_quantperf.cli import main
from pytest_quantperf.results import SCHEMA, make_metric
from pytest_quantperf.store.storage import Storage

T = "tests/test_gen.py::test_speed"


def _doc(speed: float, created: str, commit: str) -> dict:
    metrics = {"tokens_per_s": make_metric("tokens_per_s", [speed, speed + 1, speed - 1], model="default/nf4").to_dict(),
               "vram_mb": make_metric("vram_mb", 100.0).to_dict()}
    return {"schema": SCHEMA, "name": None, "created": created, "env": {"hardware_id": "cpu-test", "cpu": "test"},
            "git": {"commit": commit, "branch": "main", "dirty": False}, "options": {},
            "tests": {T: {"nodeid": T, "outcome": "passed", "budgets": {}, "verdicts": [], "models": {},
                          "metrics": metrics}}}


def _store(tmp_path) -> str:
    s = Storage(str(tmp_path / "store"))
    s.save("main", _doc(40.0, "2026-11-01T03:00:00Z", "c1"))
    s.save("main", _doc(30.0, "2026-11-02T03:00:00Z", "c2"))
    s.save("pr", _doc(50.0, "2026-11-03T03:00:00Z", "c3"))
    s.accept("main", T, "tokens_per_s", 30.0, "slower on purpose", "ci")
    return str(tmp_path / "store")


def test_load_runs_is_one_row_per_run_test_and_metric(tmp_path):
    url = _store(tmp_path)
    df = pytest_quantperf.load_runs(url, "main")
    assert list(df.columns) == list(pytest_quantperf.store.runs.COLUMNS)
    assert len(df) == 4  # two runs x two metrics; the acceptance is not a run
    speed = df[df.metric == "tokens_per_s"].sort_values("created")
    assert list(speed.value) == [40.0, 30.0] and list(speed.commit) == ["c1", "c2"]
    assert list(speed.n) == [3, 3] and set(speed.unit) == {"tok/s"} and set(speed.better) == {"higher"}
    assert str(df["created"].dtype).startswith("datetime64") and df["created"].dt.tz is not None
    assert len(pytest_quantperf.load_runs(url, metric="vram_mb")) == 3  # every name
    assert pytest_quantperf.load_runs(url, test="no-such-test").empty


def test_history_csv_writes_what_load_runs_returns(tmp_path, capsys):
    url = _store(tmp_path)
    out = tmp_path / "h.csv"
    assert main(["history", "main", "--metric", "tokens_per_s", "--csv", str(out), "--storage", url]) == 0
    assert "2 rows" in capsys.readouterr().out
    back = pd.read_csv(out)
    assert list(back.value) == [40.0, 30.0] and set(back.nodeid) == {T}
    assert main(["history", "--csv", str(out), "--limit", "1", "--storage", url]) == 0
    assert set(pd.read_csv(out).commit) == {"c3"}
