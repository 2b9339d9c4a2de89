"""Saved runs as a table, for notebooks and spreadsheets: ``pytest_quantperf.load_runs()``.

One row per saved run, test and metric, oldest first::

    import pytest_quantperf
    df = pytest_quantperf.load_runs(".quantperf", name="main")
    df[df.metric == "tokens_per_s"].pivot_table(index="created", columns="nodeid", values="value")

pandas is imported when called (it is a dependency, but not one every pytest run should pay for).
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["COLUMNS", "load_runs"]

COLUMNS = ("created", "name", "hardware_id", "commit", "branch", "nodeid", "outcome", "metric", "value", "unit",
           "better", "kind", "n", "model")


def load_runs(storage: str | os.PathLike[str] = ".quantperf", name: str | None = None, *,
              test: str | None = None, metric: str | None = None) -> Any:
    """The history of ``storage`` (a path or fsspec URL) as a ``pandas.DataFrame`` of :data:`COLUMNS`.

    ``name`` keeps one baseline name's runs; ``test`` keeps node ids containing it; ``metric`` one
    metric (``ref.`` and ``[label]`` variants are separate metrics). Acceptance records are not
    runs and are left out; ``created`` is a UTC timestamp.
    """
    import pandas as pd

    from .storage import Storage

    rows = []
    for h in Storage(os.fspath(storage)).history(name, skip_invalid=True):
        if h.get("kind") == "accept":
            continue
        git = h.get("git") or {}
        for nodeid, t in (h.get("tests") or {}).items():
            if test and test not in nodeid:
                continue
            for mname, m in (t.get("metrics") or {}).items():
                if metric and mname != metric:
                    continue
                rows.append((h.get("created"), h.get("name"), (h.get("env") or {}).get("hardware_id"),
                             git.get("commit"), git.get("branch"), nodeid, t.get("outcome"), mname, m.get("value"),
                             m.get("unit", ""), m.get("better", ""), m.get("kind", ""),
                             len(m.get("samples") or []) or 1, m.get("model")))
    df = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    df["created"] = pd.to_datetime(df["created"], utc=True)
    df["value"] = pd.to_numeric(df["value"])
    return df
