"""The ``quantperf`` command: list, show, compare, report, history, accept, fit, ab."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from pytest_quantperf.cli import build_parser, main
from pytest_quantperf.results import SCHEMA, make_metric
from pytest_quantperf.store.storage import Storage

from test_report_support import preload

preload()

SPEED = "tests/test_gen.py::test_speed[default/nf4]"
MEM = "tests/test_gen.py::test_memory"


def doc(speed: float, vram: float = 100.0, hw: str = "cpu-test-2c", created: str = "2026-11-01T03:00:00Z",
        commit: str = "aaa", extra_tests: dict | None = None) -> dict:
    tests = {
        SPEED: {"nodeid": SPEED, "outcome": "passed", "budgets": {"tokens_per_s": 10.0}, "verdicts": [],
                "models": {}, "metrics": {
                    "tokens_per_s": make_metric("tokens_per_s", [speed * (1 + 0.004 * (i % 5 - 2)) for i in range(10)],
                                                model="default/nf4").to_dict()}},
        MEM: {"nodeid": MEM, "outcome": "passed", "budgets": {}, "verdicts": [], "models": {},
              "metrics": {"vram_mb": make_metric("vram_mb", vram).to_dict()}},
    }
    tests.update(extra_tests or {})
    return {"schema": SCHEMA, "name": None, "created": created, "env": {"hardware_id": hw, "cpu": "test"},
            "git": {"commit": commit, "branch": "main", "dirty": False}, "options": {}, "tests": tests}


@pytest.fixture
def store(tmp_path) -> Path:
    """main: 40 tok/s (saved twice from one commit); pr-slow: 20 tok/s; pr-same: 40 tok/s."""
    s = Storage(str(tmp_path / "store"))
    s.save("main", doc(39.8, created="2026-11-01T03:00:00Z", commit="c2"))
    s.save("main", doc(40.0, created="2026-11-02T03:00:00Z", commit="c2"))
    s.save("pr-slow", doc(20.0, created="2026-11-03T03:00:00Z", commit="c3"))
    s.save("pr-same", doc(40.0, created="2026-11-04T03:00:00Z", commit="c4"))
    return tmp_path / "store"


def q(store: Path, *args: str) -> list[str]:
    return ["--storage", str(store), *args]


def test_list(store, capsys):
    assert main(q(store, "list")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "tests", "hardware", "saved", "commit", "hardware", "copies"]
    assert [ln.split()[0] for ln in lines[2:5]] == ["main", "pr-same", "pr-slow"]
    assert lines[2].split()[1:3] == ["2", "cpu-test-2c"] and lines[2].split()[4] == "c2"
    assert "(3 baselines in" in out
    assert main(q(store, "list", "--json")) == 0
    entries = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in entries} == {"main", "pr-slow", "pr-same"}


def test_list_of_empty_storage_says_how_to_fill_it(tmp_path, capsys):
    assert main(["list", "--storage", str(tmp_path / "nothing")]) == 0
    assert "no baselines in" in capsys.readouterr().out


def test_storage_option_before_or_after_the_verb(store, capsys):
    assert main(["list", "--storage", str(store)]) == 0
    a = capsys.readouterr().out
    assert main(["--storage", str(store), "list"]) == 0
    assert capsys.readouterr().out == a


def test_show(store, capsys):
    assert main(q(store, "show", "main", "--color=never")) == 0
    out = capsys.readouterr().out
    assert out.startswith("baseline 'main' · saved ") and "hardware cpu-test-2c" in out and "commit c2" in out
    assert "tests/test_gen.py::test_speed[default/nf4]" in out and "tokens_per_s" in out and "40 tok/s" in out
    assert "vram_mb" in out and "100.0 MiB" in out


def test_show_a_run_file(store, tmp_path, capsys):
    f = tmp_path / "run.json"
    f.write_text(json.dumps(doc(33.0)))
    assert main(q(store, "show", str(f), "-v")) == 0
    out = capsys.readouterr().out
    assert out.startswith(str(f)) and "33 tok/s" in out and "n=10" in out


def test_unknown_baseline_is_exit_2_with_suggestions(store, capsys):
    assert main(q(store, "show", "mian")) == 2
    err = capsys.readouterr().err
    assert "quantperf show: no baseline named 'mian'" in err and "did you mean main" in err


def test_compare_regression_exits_1(store, capsys, tmp_path):
    rc = main(q(store, "compare", "main", "pr-slow", "--color=never", "--html", str(tmp_path / "c.html"),
                "--markdown", str(tmp_path / "c.md"), "--json", str(tmp_path / "c.json")))
    assert rc == 1
    cap = capsys.readouterr()
    assert cap.out.startswith("baseline 'pr-slow' against baseline 'main'")
    assert "tokens_per_s  20 tok/s" in cap.out and "-49.9%" in cap.out and "regression" in cap.out  # from the mean of two saves
    assert "1 regression" in cap.out and "baseline 'main' (cpu-test-2c, same hardware)" in cap.out
    data = json.loads((tmp_path / "c.json").read_text())
    row = next(r for r in data["report"]["rows"] if r["metric"] == "tokens_per_s")
    assert row["status"] == "regression" and row["gating"] is True and row["budget_status"] is None
    assert "regression" in (tmp_path / "c.md").read_text()
    assert BeautifulSoup((tmp_path / "c.html").read_text(), "html.parser").find("h2", string="Needs attention (1)")
    assert "wrote" in cap.err
    # the JSON written carries the verdicts: reporting it again shows the same regression
    assert main(q(store, "report", str(tmp_path / "c.json"), "--markdown", str(tmp_path / "again.md"))) == 0
    assert "❌ regression" in (tmp_path / "again.md").read_text()


def test_compare_same_speed_exits_0(store, capsys):
    assert main(q(store, "compare", "main", "pr-same", "-q")) == 0
    assert "0 regressions" in capsys.readouterr().out


def test_compare_gives_the_plugins_verdicts(store):
    """The same rules as the plugin: compare_runs on the same documents."""
    from pytest_quantperf.verdicts.compare import compare_runs

    s = Storage(str(store))
    base, cur = s.load("main")[0], s.load("pr-slow")[0]
    expected = {(v.nodeid, v.metric): v.status
                for v in compare_runs(base, cur, history=s.history("main", skip_invalid=True)).verdicts}
    assert expected[(SPEED, "tokens_per_s")] == "regression"
    out = Path(store).parent / "c.json"
    main(q(store, "compare", "main", "pr-slow", "--json", str(out)))
    got = {(r["nodeid"], r["metric"]): r["baseline_status"] for r in json.loads(out.read_text())["report"]["rows"]}
    assert got == expected


def test_compare_history_files_and_other_hardware(store, tmp_path, capsys):
    hist = sorted((store / "history").glob("*_main.json"))
    assert len(hist) == 2
    assert main(q(store, "compare", str(hist[0]), str(hist[1]))) == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc(20.0, hw="gpu-nvidia-a10g-x1")))
    capsys.readouterr()
    # speed measured elsewhere: shown as a regression that does not gate, unless asked
    assert main(q(store, "compare", "main", str(other), "--color=never")) == 0
    out = capsys.readouterr().out
    assert "regression (not gated)" in out and "OTHER hardware" in out
    assert main(q(store, "compare", "main", str(other), "--gate-cross-hardware")) == 1


def test_compare_honours_tolerance(store):
    assert main(q(store, "compare", "main", "pr-slow", "--tolerance", "tokens_per_s=60%")) == 0
    assert main(q(store, "compare", "main", "pr-slow", "--tolerance", "tokens_per_s=oops")) == 2


def test_compare_shows_new_and_gone_tests(store, tmp_path, capsys):
    d = doc(40.0, extra_tests={"tests/test_new.py::test_x": {
        "nodeid": "tests/test_new.py::test_x", "metrics": {"latency_ms": make_metric("latency_ms", [1.0, 2.0]).to_dict()}}})
    del d["tests"][MEM]
    f = tmp_path / "run.json"
    f.write_text(json.dumps(d))
    assert main(q(store, "compare", "main", str(f))) == 0
    out = capsys.readouterr().out
    assert "1 test new (not in the baseline; listed, not failed):" in out
    assert "1 test in the baseline but not run (listed, not failed):" in out and MEM in out


def test_report(store, tmp_path, capsys):
    html = tmp_path / "r" / "main.html"
    assert main(q(store, "report", "main", "--html", str(html), "--json", str(tmp_path / "r.json"))) == 0
    soup = BeautifulSoup(html.read_text(), "html.parser")
    assert SPEED in soup.get_text()
    assert soup.find("h2", string="Trend over saved runs") is not None  # two saved runs of main
    assert json.loads(soup.find("script").string)["tests"][SPEED]
    assert main(q(store, "report", "pr-slow", "--baseline", "main", "--markdown", str(tmp_path / "r.md"))) == 1
    assert "regression" in (tmp_path / "r.md").read_text()


def test_report_needs_a_destination(store, capsys):
    assert main(q(store, "report", "main")) == 2
    assert "--html PATH" in capsys.readouterr().err


def test_history_table_values_and_trend(store, tmp_path, capsys):
    assert main(q(store, "history")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["saved", "name", "kind", "tests", "hardware", "commit", "/", "acceptance"]
    assert len(out) == 2 + 4
    assert main(q(store, "history", "main", "--test", "test_speed", "--metric", "tokens_per_s",
                  "--html", str(tmp_path / "h.html"))) == 0
    cap = capsys.readouterr()
    rows = cap.out.splitlines()[2:]
    assert [r.split()[2] for r in rows] == ["c2", "c2"]
    assert "39.8 tok/s" in rows[0] and "40 tok/s" in rows[1]
    page = BeautifulSoup((tmp_path / "h.html").read_text(), "html.parser")
    assert page.find("svg") is not None and "tokens_per_s" in str(page.find("svg"))
    assert main(q(store, "history", "main", "--metric", "nope")) == 2
    assert "nothing in the history matches --metric 'nope'" in capsys.readouterr().err


def test_accept_then_compare_passes_with_the_reason(store, capsys):
    # --from takes the value another run measured (a saved name or a --quantperf-json file)
    assert main(q(store, "accept", "pr-same", "--test", SPEED, "--metric", "tokens_per_s", "--from", "pr-slow",
                  "--reason", "checked", "--who", "bob")) == 0
    assert "= 20 tok/s (from baseline 'pr-slow', created 2026-11-03T03:00:00Z)" in capsys.readouterr().out
    assert main(q(store, "accept", "main", "--test", SPEED, "--metric", "tokens_per_s", "--value", "20",
                  "--reason", "smaller KV cache, slower on purpose", "--who", "alice")) == 0
    capsys.readouterr()
    assert main(q(store, "compare", "main", "pr-slow", "--color=never")) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "smaller KV cache, slower on purpose" in out and "0 regressions" in out
    assert main(q(store, "history", "main")) == 0
    assert "accept" in capsys.readouterr().out
    assert main(q(store, "show", "main")) == 0
    assert "by alice" in capsys.readouterr().out


def test_accept_who_defaults_to_git_or_user(store, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("USER", "carol")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "nogit"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.chdir(tmp_path)
    assert main(q(store, "accept", "main", "--test", MEM, "--metric", "vram_mb", "--value", "100", "--reason", "r")) == 0
    assert "by carol" in capsys.readouterr().out


def test_accept_errors_name_what_is_wrong(store, capsys):
    assert main(q(store, "accept", "main", "--test", "tests/test_gen.py::test_sped[default/nf4]",
                  "--metric", "tokens_per_s", "--reason", "x")) == 2
    assert f"did you mean {SPEED}" in capsys.readouterr().err
    assert main(q(store, "accept", "main", "--test", SPEED, "--metric", "vram_mb", "--reason", "x")) == 2
    assert "it has tokens_per_s" in capsys.readouterr().err
    assert main(q(store, "accept", "main", "--test", SPEED, "--metric", "tokens_per_s", "--reason", "  ")) == 2
    assert "needs a reason" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(q(store, "accept", "main", "--test", SPEED, "--metric", "tokens_per_s"))
    assert e.value.code == 2
    assert "--reason" in capsys.readouterr().err


@pytest.mark.parametrize("verb,words", [
    ("list", ["stored baselines"]), ("show", ["NAME", "accepted values"]),
    ("compare", ["BASE", "OTHER", "Exit status 1", "--tolerance", "--html"]),
    ("report", ["RUN_OR_NAME", "--baseline", "--html", "--markdown", "--json"]),
    ("history", ["--test", "--metric", "--html", "trend"]),
    ("accept", ["--test", "--metric", "--reason", "--value", "--from", "--quantperf-json"]),
])
def test_every_verb_has_useful_help(verb, words, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for w in words:
        assert w in out, (verb, w)
    assert "--storage" in out or verb in ("fit", "ab")


def test_fit_is_delegated(capsys):
    assert main(["fit", "--help"]) == 0
    assert "--gpu-mb" in capsys.readouterr().out


def test_ab_is_delegated_or_explained(capsys, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("pytest_quantperf.ab.run") is None:
        assert main(["ab", "--base", "HEAD"]) == 2
        assert "pytest_quantperf.ab.run is missing" in capsys.readouterr().err
    else:
        monkeypatch.setitem(sys.modules, "pytest_quantperf.ab.run", None)  # as if it were not installed
        assert main(["ab", "--base", "HEAD"]) == 2
        assert "quantperf ab: not available" in capsys.readouterr().err


def test_no_verb_prints_help(capsys):
    assert main([]) == 2
    assert "verbs:" in capsys.readouterr().out


def test_console_script_and_python_m(store):
    r = subprocess.run([sys.executable, "-m", "pytest_quantperf", "--storage", str(store), "list"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "pr-slow" in r.stdout, r.stderr
    r = subprocess.run(["quantperf", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "compare BASE OTHER" in r.stdout


def test_parser_imports_no_pytest():
    r = subprocess.run([sys.executable, "-c", "import sys, pytest_quantperf.cli as c; c.build_parser(); "
                        "print(any(m == '_pytest' or m.startswith('_pytest.') for m in sys.modules))"],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr
    assert build_parser().prog == "quantperf"
