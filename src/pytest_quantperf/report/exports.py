"""Exports to the tools people already chart with: github-action-benchmark and pytest-benchmark.

``github-action-benchmark:PATH`` writes two files, because that action takes one ``tool`` per
file: ``<stem>-smaller.json`` (``tool: customSmallerIsBetter``: latency, memory, perplexity...)
and ``<stem>-bigger.json`` (``tool: customBiggerIsBetter``: tokens/s, accuracy...), where
``<stem>`` is PATH without a ``.json`` suffix. Each is a JSON array of
``{"name", "unit", "value", "range", "extra"}``; ``name`` is ``"<nodeid> <metric>"``.

``pytest-benchmark:PATH`` writes pytest-benchmark's JSON (``machine_info``, ``commit_info``,
``benchmarks``, ``datetime``, ``version``) for the timing metrics, in seconds, so
``pytest-benchmark compare`` and its charting tools read it.
"""
from __future__ import annotations

import bisect
import datetime as _dt
import json
import math
import statistics
from typing import Any, Mapping

from .view import fmt_num

#: metric units that convert to seconds for pytest-benchmark
_TO_SECONDS = {"ms": 1e-3, "s": 1.0, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_TIMING_KINDS = ("timing", "gpu_timing")


def github_action_benchmark_paths(path: str) -> tuple[str, str]:
    stem = path[:-5] if path.endswith(".json") else path
    return f"{stem}-smaller.json", f"{stem}-bigger.json"


def github_action_benchmark(doc: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(smaller_is_better, bigger_is_better)`` entries for every gated metric of every test."""
    smaller: list[dict[str, Any]] = []
    bigger: list[dict[str, Any]] = []
    for nodeid, t in (doc.get("tests") or {}).items():
        for name, m in (t.get("metrics") or {}).items():
            v = m.get("value")
            if not isinstance(v, (int, float)) or not math.isfinite(v) or m.get("kind") == "info":
                continue
            better = m.get("better")
            if better not in ("lower", "higher"):
                continue
            samples = [x for x in (m.get("samples") or []) if isinstance(x, (int, float)) and math.isfinite(x)]
            entry: dict[str, Any] = {"name": f"{nodeid} {name}", "unit": m.get("unit") or "", "value": v}
            if len(samples) > 1:
                entry["range"] = f"± {fmt_num(statistics.stdev(samples))}"
            extra = [f"n={len(samples) or 1}"]
            if m.get("model"):
                extra.append(f"model={m['model']}")
            entry["extra"] = " ".join(extra)
            (smaller if better == "lower" else bigger).append(entry)
    return smaller, bigger


def _quartiles(data: list[float]) -> tuple[float, float]:
    """pytest-benchmark's quartiles (its Stats.q1/q3: Wikipedia methods 2 and 3)."""
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2:
        k, q = n // 4, n % 4
        if q == 1:
            return 0.25 * data[k - 1] + 0.75 * data[k], 0.75 * data[3 * k] + 0.25 * data[3 * k + 1]
        return 0.75 * data[k] + 0.25 * data[k + 1], 0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2]
    return statistics.median(data[: n // 2]), statistics.median(data[n // 2:])


def bench_stats(samples: list[float]) -> dict[str, Any]:
    """The ``stats`` block of a pytest-benchmark entry, computed as pytest-benchmark computes it."""
    data = list(samples)
    s = sorted(data)
    n = len(s)
    mean = statistics.fmean(s)
    sd = statistics.stdev(s) if n > 1 else 0.0
    q1, q3 = _quartiles(s)
    iqr = q3 - q1
    lo_f, hi_f = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_out = sum(1 for x in s if x < lo_f or x > hi_f)
    sd_out = sum(1 for x in s if x < mean - sd or x > mean + sd)
    if n == 1:
        ld, hd = s[0], s[0]
    else:
        ld = s[bisect.bisect_left(s, lo_f)]
        pos = bisect.bisect_right(s, hi_f)
        hd = s[-1] if pos == n else s[pos]
    total = sum(s)
    return {"min": s[0], "max": s[-1], "mean": mean, "stddev": sd, "rounds": n, "median": statistics.median(s),
            "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out, "stddev_outliers": sd_out,
            "outliers": f"{sd_out};{iqr_out}", "ld15iqr": ld, "hd15iqr": hd,
            "ops": n / total if total else 0, "total": total, "data": data}


def pytest_benchmark(doc: Mapping[str, Any], version: str = "5.1.0") -> dict[str, Any]:
    """pytest-benchmark's saved-run JSON for every timing metric with a time unit (converted to s)."""
    env = doc.get("env") or {}
    git = doc.get("git") or {}
    benches = []
    for nodeid, t in (doc.get("tests") or {}).items():
        test_name = nodeid.split("::")[-1]
        for name, m in (t.get("metrics") or {}).items():
            scale = _TO_SECONDS.get(str(m.get("unit") or ""))
            if scale is None or m.get("kind") not in _TIMING_KINDS:
                continue
            samples = [float(x) * scale for x in (m.get("samples") or []) if isinstance(x, (int, float))
                       and math.isfinite(x)]
            if not samples and isinstance(m.get("value"), (int, float)) and math.isfinite(m["value"]):
                samples = [float(m["value"]) * scale]
            if not samples:
                continue
            benches.append({
                "group": name, "name": f"{test_name}[{name}]", "fullname": f"{nodeid}::{name}",
                "params": {"metric": name, "model": m.get("model")}, "param": name,
                "extra_info": {"unit": "s", "source_unit": m.get("unit"), "model": m.get("model"),
                               "flags": list(m.get("flags") or [])},
                "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": len(samples),
                            "max_time": 0, "min_time": 0, "warmup": False},
                "stats": bench_stats(samples),
            })
    return {
        "machine_info": {"node": env.get("host"), "processor": env.get("cpu"), "machine": env.get("platform"),
                         "python_implementation": "CPython", "python_version": env.get("python"),
                         "release": "", "system": "", "cpu": {"brand_raw": env.get("cpu"),
                                                              "count": env.get("cpu_count")},
                         "gpu": env.get("gpu"), "hardware_id": env.get("hardware_id")},
        "commit_info": {"id": git.get("commit"), "branch": git.get("branch"), "dirty": git.get("dirty"),
                        "project": "", "time": doc.get("created")},
        "benchmarks": benches,
        "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "version": version,
    }


def write_exports(doc: Mapping[str, Any], exports: Any, write: Any) -> list[str]:
    """Write each ``(format, path)``; returns the paths written."""
    written = []
    for fmt, path in exports:
        if fmt == "github-action-benchmark":
            small, big = github_action_benchmark(doc)
            ps, pb = github_action_benchmark_paths(path)
            write(ps, json.dumps(small, indent=1))
            write(pb, json.dumps(big, indent=1))
            written += [ps, pb]
        elif fmt == "pytest-benchmark":
            write(path, json.dumps(pytest_benchmark(doc), indent=1))
            written.append(path)
        else:
            raise ValueError(f"unknown export format {fmt!r}: use github-action-benchmark or pytest-benchmark")
    return written
