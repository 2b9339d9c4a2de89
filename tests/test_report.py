"""Reports of a real plugin run: terminal, JSON, Markdown, exports, JUnit properties.

The suites under test record their own metrics through ``quantperf.record`` (a real plugin
path: budgets, baselines, verdicts, reports) so no model has to load.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_quantperf.report.view import shorten_nodeid

from test_report_support import preload

preload()

FAST = """
import pytest

@pytest.mark.quant_budget(tokens_per_s=10)
def test_speed(quantperf):
    quantperf.record("tokens_per_s", [40.0, 41, 42, 43, 39, 40.5, 41.5, 40.2], unit="tok/s", better="higher")
    quantperf.record("vram_mb", 100.0, unit="MiB")

def test_latency(quantperf):
    quantperf.record("latency_ms", [10.0, 10.2, 10.1, 9.9, 10.05, 10.15], unit="ms")
"""

# tokens/s falls to 37%: beyond what a baseline saved once decides for a wall-clock figure (about
# -58% with the assumed 12% run-to-run spread; benchmarks/verdict_rates.py), so a regression
SLOW = FAST.replace("[40.0, 41, 42, 43, 39, 40.5, 41.5, 40.2]", "[15.0, 15.5, 16, 14.5, 15.2, 15.4, 14.8, 15.1]")


def run(pytester: pytest.Pytester, *args: str):
    return pytester.runpytest("-p", "no:cacheprovider", "--quantperf-storage=store", *args)


def save_main(pytester: pytest.Pytester, src: str = FAST) -> None:
    pytester.makepyfile(test_suite=src)
    r = run(pytester, "--quantperf-save=main")
    assert r.ret == 0, r.stdout.str()


def report_json(path: Path) -> dict:
    def no_nan(x):
        raise AssertionError(f"non-JSON constant {x} in the report")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_nan)


# --------------------------------------------------------------------------- terminal

def test_terminal_table_and_summary_with_a_regression(pytester):
    save_main(pytester)
    pytester.makepyfile(test_suite=SLOW)
    r = run(pytester, "--quantperf-baseline=main")
    assert r.ret == 1
    r.stdout.fnmatch_lines([
        "*= quantperf =*",
        "test_suite.py::test_speed  (failed)  REGRESSION",
        "*metric*value*budget*baseline*change*verdict*",
        "*tokens_per_s*15.15 tok/s ±*%*≥ 10*40.75*-62.8%*regression",
        "*↳ tokens_per_s: baseline 40.75 tok/s → now 15.15 tok/s (-62.8%; tolerance 10%) (98% interval [[]-8*%, -1*%]*",
        "test_suite.py::test_latency  INCONCLUSIVE",
        "*latency_ms*10.* ms*10.*inconclusive*",
        "*↳ latency_ms: *inconclusive (these runs decide changes beyond +1*%; save the baseline again*`quantperf ab`)",
        "quantperf: 2 tests, 3 metrics, 0 budgets breached, 1 regression, 1 inconclusive, "
        "0 improvements · baseline 'main' (cpu-*, same hardware)",
    ])


def test_quiet_shows_the_summary_and_only_rows_that_need_attention(pytester):
    save_main(pytester)
    pytester.makepyfile(test_suite=SLOW)
    r = run(pytester, "--quantperf-baseline=main", "-q")
    out = r.stdout.str()
    r.stdout.fnmatch_lines(["REGRESSION   test_suite.py::test_speed  tokens_per_s: baseline 40.75 tok/s → now *",
                            "quantperf: 2 tests, 3 metrics, 0 budgets breached, 1 regression*"])
    assert "metric  value" not in out  # no tables
    # the unchanged latency is inconclusive against one save: in the reports, not in the -q list
    assert "test_latency" not in out.split("= quantperf =")[-1].split("short test summary")[0]


def test_verbose_shows_every_metric_with_samples_and_ci(pytester):
    pytester.makepyfile(test_suite=FAST)
    r = run(pytester, "-v")
    assert r.ret == 0
    r.stdout.fnmatch_lines([
        "*metric*value*samples*budget*baseline*change*verdict*",
        "*tokens_per_s*40.75 tok/s*n=8 cv *% CI [[]39, 43]*≥ 10*pass*",
        "*vram_mb*100.0 MiB*n=1*",
        "quantperf: 2 tests, 3 metrics, 0 budgets breached*· no baseline",
    ])


def test_default_verbosity_hides_secondary_metrics_and_says_so(pytester):
    pytester.makepyfile(test_suite="""
        def test_x(quantperf):
            quantperf.record("latency_ms", [1.0, 1.1, 1.2], unit="ms")
            quantperf.record("tokens_per_s", [5.0, 5.1, 5.2], unit="tok/s", better="higher")
            quantperf.record("load_s", 3.0, unit="s")
            quantperf.record("disk_mb", 300.0, unit="MiB")
    """)
    out = run(pytester).stdout.str()
    section = out.split("= quantperf =")[1]
    assert "latency_ms" in section and "tokens_per_s" in section
    assert "load_s" not in section and "disk_mb" not in section
    assert "(+2 more metrics; -v shows every metric)" in section
    assert "load_s" in run(pytester, "-v").stdout.str().split("= quantperf =")[1]


@pytest.mark.parametrize("nodeid,width,expected", [
    ("tests/a/b/c/test_x.py::test_f[p]", 80, "tests/a/b/c/test_x.py::test_f[p]"),
    ("tests/very/deep/path/of/folders/test_models.py::TestK::test_generate[nf4-bf16]", 60,
     "tests/…/test_models.py::TestK::test_generate[nf4-bf16]"),
    ("tests/very/deep/path/test_models.py::test_generate[" + "x" * 80 + "]", 60, None),
])
def test_long_node_ids_keep_file_function_and_params(nodeid, width, expected):
    s = shorten_nodeid(nodeid, width)
    assert len(s) <= width
    if expected:
        assert s == expected
    else:
        assert s.startswith("test_models.py::test_generate[xxx") and s.endswith("xxx]") and "…" in s


def test_long_node_id_is_shortened_in_the_terminal(pytester, monkeypatch):
    monkeypatch.setenv("COLUMNS", "140")
    sub = pytester.mkpydir("tests_deep")
    d = sub
    for part in ("a_rather_long_folder", "another_long_folder", "and_one_more_folder"):
        d = d / part
        d.mkdir()
        (d / "__init__.py").write_text("")
    (d / "test_deep.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('cfg', ['nf4-bfloat16-double-quant-on-a-long-parameter-id'])\n"
        "def test_generate_speed(quantperf, cfg):\n"
        "    quantperf.record('latency_ms', [1.0, 1.1, 1.2], unit='ms')\n")
    out = run(pytester).stdout.str()
    section = out.split("= quantperf =")[1]
    assert "tests_deep/…/test_deep.py::test_generate_speed[nf4-bfloat16-double-quant-on-a-long-parameter-id]" \
        in section


# --------------------------------------------------------------------------- special runs

def test_empty_run_writes_reports_that_say_so(pytester):
    pytester.makepyfile(test_plain="def test_nothing_measured():\n    assert True\n")
    r = run(pytester, "--quantperf-html=r.html", "--quantperf-json=r.json", "--quantperf-markdown=r.md")
    assert r.ret == 0
    assert "quantperf" not in r.stdout.str().split("passed")[0].split("test_plain.py")[-1]
    data = report_json(pytester.path / "r.json")
    assert data["tests"] == {} and data["report"]["summary"]["tests"] == 0
    assert data["report"]["summary"]["status"] == "pass"
    assert "No test measured anything" in (pytester.path / "r.html").read_text()
    assert "No test measured anything" in (pytester.path / "r.md").read_text()


def test_run_without_baseline(pytester):
    pytester.makepyfile(test_suite=FAST)
    r = run(pytester, "--quantperf-json=r.json")
    assert r.ret == 0
    r.stdout.fnmatch_lines(["quantperf: 2 tests*· no baseline"])
    s = report_json(pytester.path / "r.json")["report"]["summary"]
    assert s["baseline"] is None and s["new_tests"] == [] and s["gone_tests"] == []
    rows = report_json(pytester.path / "r.json")["report"]["rows"]
    assert {r["status"] for r in rows if r["metric"] != "tokens_per_s"} == {""}


def test_missing_baseline_is_a_warning_not_a_failure(pytester):
    pytester.makepyfile(test_suite=FAST)
    r = run(pytester, "--quantperf-baseline=nope", "--quantperf-json=r.json")
    assert r.ret == 0
    r.stdout.fnmatch_lines(["quantperf: baseline 'nope' not found in *: nothing compared*",
                            "quantperf: 2 tests*· baseline 'nope' not found"])
    s = report_json(pytester.path / "r.json")["report"]["summary"]
    assert s["baseline"]["found"] is False and s["status"] == "warn"


def _move_to_other_hardware(store: Path, name: str = "main", other: str = "gpu-nvidia-a10g-x1") -> None:
    """Make the stored baseline look as if another machine saved it."""
    for p in store.rglob(f"{name}.json"):
        if "by-hardware" in p.parts:
            p.unlink()
            continue
        doc = json.loads(p.read_text())
        doc["env"]["hardware_id"] = other
        p.write_text(json.dumps(doc))


def test_baseline_from_other_hardware_is_shown_but_speed_does_not_gate(pytester):
    save_main(pytester)
    _move_to_other_hardware(pytester.path / "store")
    pytester.makepyfile(test_suite=SLOW)
    r = run(pytester, "--quantperf-baseline=main", "--quantperf-json=r.json", "--quantperf-html=r.html",
            "--quantperf-markdown=r.md")
    assert r.ret == 0, r.stdout.str()  # speed measured elsewhere: reported, not failed
    r.stdout.fnmatch_lines([
        "*tokens_per_s*regression (not gated)*",
        "*baseline 'main' (gpu-nvidia-a10g-x1, OTHER hardware: speed not gated)*",
    ])
    data = report_json(pytester.path / "r.json")
    s = data["report"]["summary"]
    assert s["baseline"]["matched_hardware"] is False and s["baseline"]["hardware_id"] == "gpu-nvidia-a10g-x1"
    assert s["counts"]["regression"] == 0 and s["counts"]["regression_not_gated"] == 1
    row = next(r for r in data["report"]["rows"] if r["metric"] == "tokens_per_s")
    assert row["cross_hardware"] is True and row["gating"] is False
    assert "other hardware" in (pytester.path / "r.html").read_text()
    assert "measured on other hardware" in (pytester.path / "r.md").read_text()


def test_failing_run_reports_breaches_and_failures_and_is_not_saved(pytester):
    pytester.makepyfile(test_suite="""
        import pytest

        @pytest.mark.quant_budget(tokens_per_s=100, latency_ms=5)
        def test_too_slow(quantperf):
            quantperf.record("tokens_per_s", [40.0, 41.0, 42.0], unit="tok/s", better="higher")

        def test_body_fails(quantperf):
            quantperf.record("latency_ms", [1.0, 1.1, 1.2], unit="ms")
            assert False, "boom"
    """)
    r = run(pytester, "--quantperf-save=main", "--quantperf-json=r.json", "--quantperf-markdown=r.md")
    assert r.ret == 1
    r.stdout.fnmatch_lines([
        "test_suite.py::test_too_slow  (failed)  BREACH",
        "*tokens_per_s*41 tok/s*≥ 100*breach",
        "*latency_ms*—*≤ 5*missing*",
        "test_suite.py::test_body_fails  (failed)",
        "quantperf: baseline 'main' NOT saved: 2 test(s) failed*",
        "quantperf: 2 tests, 2 metrics, 2 budgets breached, 0 regressions*",
    ])
    assert not (pytester.path / "store" / "baselines" / "main.json").exists()
    s = report_json(pytester.path / "r.json")["report"]["summary"]
    assert s["status"] == "fail" and s["counts"]["breach"] == 1 and s["counts"]["missing"] == 1
    assert set(s["failed_tests"]) == {"test_suite.py::test_too_slow", "test_suite.py::test_body_fails"}
    assert s["saved"] is None and any("NOT saved" in w for w in s["warnings"])
    md = (pytester.path / "r.md").read_text()
    attention = md.split("### Needs attention")[1].split("###")[0]
    assert "tokens_per_s" in attention and "breach" in attention and "missing" in attention
    assert md.index("### Needs attention") < md.index("All tests")


def test_new_and_gone_tests_are_listed_not_failed(pytester):
    save_main(pytester)
    pytester.makepyfile(test_suite="""
        def test_latency(quantperf):
            quantperf.record("latency_ms", [10.0, 10.2, 10.1, 9.9, 10.05, 10.15], unit="ms")

        def test_brand_new(quantperf):
            quantperf.record("latency_ms", [1.0, 1.1, 1.2], unit="ms")
    """)
    r = run(pytester, "--quantperf-baseline=main", "--quantperf-json=r.json")
    assert r.ret == 0
    r.stdout.fnmatch_lines([
        "test_suite.py::test_brand_new  (new test)",
        "1 test new (not in the baseline; listed, not failed):",
        "  test_suite.py::test_brand_new",
        "1 test in the baseline but not run (listed, not failed):",
        "  test_suite.py::test_speed",
        "*· 1 new test · 1 not run",
    ])
    s = report_json(pytester.path / "r.json")["report"]["summary"]
    assert s["new_tests"] == ["test_suite.py::test_brand_new"] and s["gone_tests"] == ["test_suite.py::test_speed"]


def test_inconclusive_and_accepted_states(pytester):
    from pytest_quantperf.cli import main as cli

    # +15% against one save: the interval reaches far past the tolerance both ways -> inconclusive,
    # shown in the reports, never a pass and never a printed warning
    pytester.makepyfile(test_suite="def test_few(quantperf):\n"
                                   "    quantperf.record('latency_ms', [10.0, 10.1], unit='ms')\n")
    assert run(pytester, "--quantperf-save=main").ret == 0
    pytester.makepyfile(test_suite="def test_few(quantperf):\n"
                                   "    quantperf.record('latency_ms', [11.5, 11.6], unit='ms')\n")
    r = run(pytester, "--quantperf-baseline=main", "--quantperf-json=r.json")
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*latency_ms*11.55 ms*10.05*+14.9%*inconclusive*", "*0 regressions, 1 inconclusive, *"])
    assert "warning" not in r.stdout.str().lower()
    # +120%: the whole interval above zero, not wholly beyond the tolerance -> inconclusive and a warning
    pytester.makepyfile(test_suite="def test_few(quantperf):\n"
                                   "    quantperf.record('latency_ms', [22.0, 22.1], unit='ms')\n")
    r = run(pytester, "--quantperf-baseline=main", "--quantperf-json=r.json")
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*latency_ms*22.05 ms*10.05*+119.4%*inconclusive*",
                            "*↳ latency_ms: baseline 10.05 ms → now 22.05 ms (+119.4%; tolerance 10%) "
                            "(98% interval [[]+*%, +*%]; run-to-run spread ±12% assumed*): inconclusive (shown worse, by how much*",
                            "*0 regressions, 1 inconclusive (1 shown worse)*"])
    v, = [x for x in report_json(pytester.path / "r.json")["tests"]["test_suite.py::test_few"]["verdicts"]
          if x["metric"] == "latency_ms"]
    assert v["shown_worse"] and not v["reasons"]
    # a regression accepted on purpose: the status stays, the reason holds it back from failing
    save_main(pytester)
    pytester.makepyfile(test_suite=SLOW)
    assert cli(["--storage", str(pytester.path / "store"), "accept", "main", "--test", "test_suite.py::test_speed",
                "--metric", "tokens_per_s", "--value", "15.1", "--reason", "new sampler, slower on purpose",
                "--who", "alice"]) == 0
    r = run(pytester, "--quantperf-baseline=main", "--quantperf-json=r.json", "--quantperf-html=r.html")
    assert r.ret == 0, r.stdout.str()
    r.stdout.fnmatch_lines(["*tokens_per_s*-62.8%*regression*",
                            "*[[]not gated: accepted at 15.1 by alice: new sampler, slower on purpose]*",
                            "*0 regressions (+1 not gated)*"])
    row = next(x for x in report_json(pytester.path / "r.json")["report"]["rows"] if x["metric"] == "tokens_per_s")
    assert row["status"] == "regression" and not row["gating"] and row["accepted"]["reason"] == "new sampler, slower on purpose"
    assert "new sampler, slower on purpose" in (pytester.path / "r.html").read_text()


# --------------------------------------------------------------------------- JSON / Markdown

def test_json_report_shape(pytester):
    save_main(pytester)
    pytester.makepyfile(test_suite=SLOW)
    run(pytester, "--quantperf-baseline=main", "--quantperf-json=out/r.json")
    data = report_json(pytester.path / "out" / "r.json")
    # the run document ...
    for k in ("schema", "name", "created", "env", "git", "options", "baseline", "tests"):
        assert k in data
    assert data["tests"]["test_suite.py::test_speed"]["metrics"]["tokens_per_s"]["samples"][0] == 15.0
    # ... plus the verdict summary
    rep = data["report"]
    assert set(rep) >= {"schema", "summary", "rows", "models", "trends"}
    s = rep["summary"]
    assert set(s) >= {"status", "tests", "metrics", "counts", "failed_tests", "new_tests", "gone_tests", "baseline",
                      "warnings", "saved"}
    assert s["status"] == "fail" and s["counts"]["regression"] == 1 and s["counts"]["gating"] == 1
    row = next(r for r in rep["rows"] if r["metric"] == "tokens_per_s")
    assert set(row) >= {"nodeid", "metric", "model", "value", "unit", "n", "cv", "ci", "budget", "baseline",
                        "change", "tolerance", "p_value", "status", "baseline_status", "budget_status", "gating",
                        "message", "messages", "cross_hardware", "accepted"}
    assert row["status"] == "regression" and row["gating"] is True and row["budget_status"] == "pass"
    assert row["budget"] == {"key": "tokens_per_s", "limit": 10.0, "bound": "min", "status": "pass",
                             "message": row["budget"]["message"]}
    assert math.isclose(row["change"], 15.15 / 40.75 - 1, rel_tol=1e-6)
    assert oct((pytester.path / "out" / "r.json").stat().st_mode & 0o777) != oct(0o600)


def test_markdown_report_and_github_step_summary(pytester, monkeypatch):
    summary = pytester.path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    save_main(pytester)
    pytester.makepyfile(test_suite=SLOW + """

@pytest.mark.parametrize("p", ["a|b"])
def test_pipe(quantperf, p):
    quantperf.record("latency_ms", [1.0, 1.1, 1.2], unit="ms")
""")
    r = run(pytester, "--quantperf-baseline=main", "--quantperf-markdown=r.md")
    assert r.ret == 1
    md = (pytester.path / "r.md").read_text()
    assert md.startswith("## quantperf: ❌ failed")
    assert "### Needs attention" in md and "| `test_suite.py::test_speed` | tokens_per_s |" in md
    assert "`test_suite.py::test_pipe[a\\|b]`" in md  # a pipe must not split the table row
    for line in md.splitlines():
        if line.startswith("| `test_suite.py::test_pipe"):
            assert line.replace("\\|", "").count("|") == 8
    text = summary.read_text()
    assert text.startswith("# earlier step\n") and md in text
    run(pytester, "--quantperf-baseline=main", "--quantperf-markdown=r.md")
    assert summary.read_text().count("## quantperf:") == 2  # appended, never overwritten


def test_no_step_summary_without_markdown_option(pytester, monkeypatch):
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.makepyfile(test_suite=FAST)
    run(pytester)
    assert not summary.exists()


# --------------------------------------------------------------------------- exports and JUnit

def test_github_action_benchmark_export(pytester):
    pytester.makepyfile(test_suite=FAST)
    r = run(pytester, "--quantperf-export=github-action-benchmark:bench/gab.json")
    assert r.ret == 0
    smaller = json.loads((pytester.path / "bench" / "gab-smaller.json").read_text())
    bigger = json.loads((pytester.path / "bench" / "gab-bigger.json").read_text())
    assert {e["name"] for e in smaller} == {"test_suite.py::test_speed vram_mb", "test_suite.py::test_latency latency_ms"}
    assert [e["name"] for e in bigger] == ["test_suite.py::test_speed tokens_per_s"]
    for e in smaller + bigger:
        assert set(e) <= {"name", "unit", "value", "range", "extra"} and {"name", "unit", "value"} <= set(e)
        assert isinstance(e["value"], float) and isinstance(e["extra"], str)
    assert bigger[0] == {"name": "test_suite.py::test_speed tokens_per_s", "unit": "tok/s", "value": 40.75,
                         "range": bigger[0]["range"], "extra": "n=8"}
    assert bigger[0]["range"].startswith("± ")


def test_pytest_benchmark_export_matches_pytest_benchmark_stats(pytester):
    pytester.makepyfile(test_suite=FAST)
    r = run(pytester, "--quantperf-export=pytest-benchmark:pb.json")
    assert r.ret == 0
    data = json.loads((pytester.path / "pb.json").read_text())
    assert set(data) == {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    # only timing metrics with a time unit, in seconds (tokens/s is a rate, vram a size)
    assert [b["fullname"] for b in data["benchmarks"]] == ["test_suite.py::test_latency::latency_ms"]
    b = data["benchmarks"][0]
    assert set(b) >= {"group", "name", "fullname", "params", "stats", "options"}
    want = [10.0, 10.2, 10.1, 9.9, 10.05, 10.15]
    assert b["stats"]["data"] == pytest.approx([x / 1000 for x in want])
    stats_mod = pytest.importorskip("pytest_benchmark.stats")
    ref = stats_mod.Stats()
    for x in want:
        ref.update(x / 1000)
    for field in stats_mod.Stats.fields:
        if isinstance(getattr(ref, field), float):
            assert b["stats"][field] == pytest.approx(getattr(ref, field)), field
        else:
            assert b["stats"][field] == getattr(ref, field), field


def test_junit_xml_carries_the_metrics_as_properties(pytester):
    pytester.makepyfile(test_suite=FAST)
    r = run(pytester, "--junitxml=junit.xml")
    assert r.ret == 0
    root = ET.parse(pytester.path / "junit.xml").getroot()
    props = {}
    for case in root.iter("testcase"):
        for p in case.iter("property"):
            props[(case.get("name"), p.get("name"))] = p.get("value")
    assert props[("test_speed", "quantperf.tokens_per_s")] == "40.75 tok/s"
    assert props[("test_speed", "quantperf.vram_mb")] == "100 MiB"
    assert props[("test_latency", "quantperf.latency_ms")].endswith(" ms")


def test_unwritable_report_path_is_a_warning_naming_the_problem(pytester):
    pytester.makepyfile(test_suite=FAST)
    (pytester.path / "blocker").write_text("a file, not a folder")
    r = run(pytester, "--quantperf-json=blocker/r.json")
    assert r.ret == 0
    r.stdout.fnmatch_lines(["quantperf: could not write a report: *blocker*"])
