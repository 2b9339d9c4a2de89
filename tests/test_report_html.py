"""The HTML report: self-contained, escaped, charted, and readable in a real browser."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from pytest_quantperf.verdicts.compare import compare_runs
from pytest_quantperf.report import build_view, json_report, load_history
from pytest_quantperf.report.html import render_html, safe_json
from pytest_quantperf.results import SCHEMA, make_metric
from pytest_quantperf.store.storage import Storage

from test_report_support import preload

preload()

EVIL = "<script>alert('x')</script>"


def _doc(values: dict[str, dict[str, object]], created: str, hw: str = "cpu-test-2c", commit: str = "abc") -> dict:
    """A run document: ``{nodeid: {metric: samples or value}}``, each config labelled by its node id's param."""
    tests = {}
    for nid, metrics in values.items():
        label = nid.split("[", 1)[1].rstrip("]") if "[" in nid else None
        tests[nid] = {"nodeid": nid, "outcome": "passed", "budgets": {}, "verdicts": [],
                      "models": {label: {"label": label, "footprint_mb": 100.0, "reference": False,
                                         "quant_summary": {"quant": "nf4", "linear4bit": 210, "linear8bit": 0,
                                                           "plain_linear": 1, "quant_types": ["nf4"],
                                                           "compute_dtypes": ["float32"], "double_quant": [False],
                                                           "params_total": 1000, "params_quantized": 789,
                                                           "quantized_share": 0.789,
                                                           "footprint_bytes": 173_000_000,
                                                           "predicted_bytes": 172_000_000}}} if label else {},
                      "metrics": {k: make_metric(k, v, model=label).to_dict() for k, v in metrics.items()}}
    return {"schema": SCHEMA, "name": "main", "created": created, "env": {"hardware_id": hw, "cpu": "test"},
            "git": {"commit": commit, "branch": "main", "dirty": False}, "options": {}, "tests": tests}


def _metrics(speed: float) -> dict[str, object]:
    return {"tokens_per_s": [speed * (1 + 0.01 * (i % 5 - 2)) for i in range(10)],
            "latency_ms": [1000 / speed * (1 + 0.01 * (i % 5 - 2)) for i in range(10)],
            "host_rss_mb": 900.0, "footprint_mb": 160.0 if speed > 30 else 260.0}


@pytest.fixture(scope="module")
def rich_report(tmp_path_factory) -> tuple[Path, dict]:
    """A report with everything: baseline, history, a regression, an improvement, an inconclusive row."""
    tmp = tmp_path_factory.mktemp("rich")
    st = Storage(str(tmp / "store"))
    ids = [f"tests/test_gen.py::test_generate[default/{q}]" for q in ("nf4", "bf16", "int8")]
    for day in range(1, 6):
        st.save("main", _doc({ids[0]: _metrics(40 + day * 0.2), ids[1]: _metrics(25), ids[2]: _metrics(18)},
                             f"2026-11-0{day}T03:00:00Z", commit="c1"))  # five saves of one commit
    base = st.load("main", "cpu-test-2c")[0]
    cur = _doc({ids[0]: _metrics(18), ids[1]: _metrics(70),
                ids[2]: {**_metrics(18), "latency_ms": [70.0, 85.0]},
                f"tests/test_gen.py::test_odd[{EVIL}]": {"latency_ms": [1.0, 1.1, 1.2]}},
               "2026-11-09T03:00:00Z", commit="c9")
    comp = compare_runs(base, cur, history=[json.loads(p.read_text()) for p in sorted((tmp / "store" / "history").glob("*.json"))])
    for v in comp.verdicts:
        cur["tests"][v.nodeid]["verdicts"].append({**v.to_dict(), "source": "baseline"})
    cur["baseline"] = {"name": "main", "hardware_id": "cpu-test-2c", "matched_hardware": True,
                       "created": base["created"]}
    view = build_view(cur, baseline_doc=base, history=load_history(st, "main", cur))
    html = render_html(view, json_report(cur, view), baseline_doc=base)
    path = tmp / "report.html"
    path.write_text(html, encoding="utf-8")
    return path, view


def test_report_has_header_counts_table_and_three_kinds_of_chart(rich_report):
    path, view = rich_report
    soup = BeautifulSoup(path.read_text(), "html.parser")
    assert soup.title.string.startswith("quantperf report")
    text = soup.get_text(" ")
    assert "same hardware" in text and "cpu-test-2c" in text
    statuses = {r["status"] for t in view["tests"] for r in t["rows"]}
    assert {"regression", "improvement", "inconclusive", "new"} <= statuses
    counts = {c.select_one(".l").get_text(): int(c.select_one(".n").get_text()) for c in soup.select(".count")}
    assert counts["regressions"] == view["summary"]["counts"]["regression"] >= 2
    # int8: its unchanged tokens/s, and its latency from two scattered samples; five saves decide only beyond +30%
    assert counts["inconclusive"] == 2 and counts["improvements"] >= 1
    # every test and metric is in a table with budget, baseline, change and verdict columns
    heads = [th.get_text() for th in soup.select("details.test table.m tr th")][:10]
    assert heads == ["metric", "model", "value", "samples", "budget", "baseline", "change", "tolerance", "verdict",
                     "detail"]
    n_rows = sum(len(t["rows"]) for t in view["tests"])
    assert len(soup.select("details.test table.m tr.r-regression, details.test table.m tr[class^=r-]")) == n_rows
    # charts: quant configs side by side, samples against the baseline, the trend over saved runs
    h2 = [h.get_text() for h in soup.find_all("h2")]
    assert "Quantization configs side by side" in h2 and "Trend over saved runs" in h2
    svgs = soup.find_all("svg")
    assert len(svgs) >= 3 + 2
    config_svg = str(soup.find("h2", string="Quantization configs side by side").find_next("svg"))
    for label in ("default/nf4", "default/bf16", "default/int8", "decode tokens/s", "weights footprint"):
        assert label in config_svg
    assert "% from the baseline median" in str(soup.select_one(".chart.samples svg"))
    # the quantization proof per model
    assert "210 4-bit + 0 8-bit linear layers" in text and "78.9% of params quantized" in text


def test_report_is_self_contained(rich_report):
    path, _ = rich_report
    soup = BeautifulSoup(path.read_text(), "html.parser")
    assert not soup.find_all("link") and not soup.find_all("img")
    assert all(s.get("type") == "application/json" and not s.get("src") for s in soup.find_all("script"))
    for tag in soup.find_all(True):
        for attr in ("src", "href"):
            v = tag.get(attr)
            assert not v or v.startswith("#"), (tag.name, attr, v)
    assert "url(" not in " ".join(s.get_text() for s in soup.find_all("style"))
    assert "@import" not in path.read_text()


def test_test_ids_are_escaped_everywhere(rich_report):
    path, _ = rich_report
    html = path.read_text()
    soup = BeautifulSoup(html, "html.parser")
    scripts = soup.find_all("script")
    assert len(scripts) == 1  # only the JSON block: the <script> in a test id is text
    assert "<script>alert" not in html  # never raw markup
    assert any(EVIL in c.get_text() for c in soup.select("details.test summary code"))
    data = json.loads(scripts[0].string)
    assert f"tests/test_gen.py::test_odd[{EVIL}]" in data["tests"]
    assert data["report"]["summary"]["tests"] == 4


def test_json_block_cannot_close_its_script_element():
    text = safe_json({"id": "</script><script>alert(1)</script>", "x": "a\u2028b", "nan": float("nan")})
    assert "</" not in text and "<" not in text and "\u2028" not in text
    assert json.loads(text) == {"id": "</script><script>alert(1)</script>", "x": "a\u2028b", "nan": None}


def test_plugin_writes_an_escaped_html_report(pytester):
    pytester.makepyfile(test_suite="""
        import pytest

        @pytest.mark.parametrize("name", ["<script>alert(1)</script>", "plain"])
        def test_evil(quantperf, name):
            quantperf.record("latency_ms", [1.0, 1.2, 1.1, 1.3], unit="ms")
    """)
    r = pytester.runpytest("-p", "no:cacheprovider", "--quantperf-storage=store", "--quantperf-save=main",
                           "--quantperf-html=out/report.html")
    assert r.ret == 0
    html = (pytester.path / "out" / "report.html").read_text()
    soup = BeautifulSoup(html, "html.parser")
    assert len(soup.find_all("script")) == 1
    assert "test_suite.py::test_evil[<script>alert(1)</script>]" in soup.get_text()
    assert "<script>alert(1)" not in html
    data = json.loads(soup.find("script").string)
    assert "test_suite.py::test_evil[<script>alert(1)</script>]" in data["tests"]
    assert "saved as baseline" in soup.get_text()
    # a second run compares against the first and draws the history
    r = pytester.runpytest("-p", "no:cacheprovider", "--quantperf-storage=store", "--quantperf-baseline=main",
                           "--quantperf-save=main", "--quantperf-html=out/report.html")
    soup = BeautifulSoup((pytester.path / "out" / "report.html").read_text(), "html.parser")
    assert soup.find("h2", string="Trend over saved runs") is not None
    assert len(soup.select(".chart.samples svg")) == 2


def test_empty_and_baseline_free_reports_render(tmp_path):
    view = build_view({"schema": SCHEMA, "tests": {}, "env": {}})
    html = render_html(view, {"tests": {}})
    assert "No test measured anything" in html and "No baseline" in html


def _distinct_colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").resize((320, 500))
        return len(set(small.getdata()))


@pytest.mark.skipif(not shutil.which("chromium") and not os.path.exists("/usr/bin/chromium"),
                    reason="chromium is not installed")
def test_report_renders_in_headless_chromium(rich_report, tmp_path):
    path, _ = rich_report
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    shot = tmp_path / "shot.png"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                        "--window-size=1280,2000", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    # a blank page is one colour; text, badges, tables and charts give hundreds
    assert _distinct_colours(shot) > 200
