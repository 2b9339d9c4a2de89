"""The plugin costs nothing to a suite that does not use it, and ``-p no:quantperf`` switches it off.

Both run pytest in a subprocess: this process has numpy, scipy and torch loaded already.
"""
from __future__ import annotations

import json

import pytest

PLAIN = """
def test_one():
    assert 1 + 1 == 2

def test_two():
    assert "a" < "b"
"""

HEAVY = ("numpy", "scipy", "fsspec", "torch", "transformers", "pandas", "matplotlib", "jinja2")

# the last hook of a run: whatever the plugin imported at configure, collection, run and finish is
# in sys.modules by then
PROBE = """
import json, sys
import pytest

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    heavy = sorted(m for m in %r if m in sys.modules)
    ours = sorted(m for m in sys.modules if m.startswith("pytest_quantperf"))
    with open("probe.json", "w") as f:
        json.dump({"heavy": heavy, "ours": ours,
                   "registered": config.pluginmanager.get_plugin("pytest_quantperf.plugin") is not None
                   or config.pluginmanager.get_plugin("quantperf") is not None}, f)
""" % (HEAVY,)


def test_no_quantperf_runs_a_plain_suite_without_a_trace(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain=PLAIN)
    on = pytester.runpytest_subprocess("--help")
    assert "--quantperf-baseline" in on.stdout.str()  # installed: the switch below has something to do
    off = pytester.runpytest_subprocess("-p", "no:quantperf", "-rA")
    off.assert_outcomes(passed=2)
    text = [ln for ln in (off.stdout.lines + off.stderr.lines) if not ln.startswith("rootdir:")]
    assert not [ln for ln in text if "quantperf" in ln]  # (the rootdir line names this test)
    assert "--quantperf-baseline" not in pytester.runpytest_subprocess("-p", "no:quantperf", "--help").stdout.str()
    # the example suites' helpers read options with a default: no ValueError without the plugin
    pytester.makeconftest("""
        from pytest_quantperf.suite import default_suite_model

        def pytest_report_header(config):
            return f"suite model: {default_suite_model(config)}"
    """)
    r = pytester.runpytest_subprocess("-p", "no:quantperf")
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["suite model: *"])


@pytest.mark.parametrize("args", [(), ("--quantperf-tolerance=tokens_per_s=5%", "--quantperf-device=cpu")],
                         ids=["plain", "with-options"])
def test_unused_plugin_imports_nothing_heavy(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                            args: tuple[str, ...]) -> None:
    """Configure, collect, run and finish a plain suite: no numpy, scipy, fsspec or torch."""
    # only this plugin: another installed plugin that imports numpy would hide what this one does
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_plain=PLAIN)
    pytester.makeconftest(PROBE)
    r = pytester.runpytest_subprocess("-p", "pytest_quantperf.plugin", *args)
    r.assert_outcomes(passed=2)
    probe = json.loads((pytester.path / "probe.json").read_text())
    assert probe["registered"] and "pytest_quantperf.plugin" in probe["ours"]
    assert probe["heavy"] == [], f"a session that never uses quantperf imported {probe['heavy']}"
    assert not {"pytest_quantperf.models", "pytest_quantperf.verdicts.compare", "pytest_quantperf.store.storage",
                "pytest_quantperf.report"} & set(probe["ours"])


def test_report_header_and_no_unprefixed_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain=PLAIN)
    r = pytester.runpytest_subprocess("--quantperf-save=main", "--quantperf-device=cpu", "-p", "no:cacheprovider")
    r.stdout.fnmatch_lines(["quantperf: baseline=- save=main storage=*.quantperf device=cpu"])
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert not [ln for ln in plain.stdout.lines if ln.startswith("quantperf:")]
    markers = pytester.runpytest_subprocess("--markers").stdout.str()
    assert "@pytest.mark.quant_budget" in markers and "@pytest.mark.gpu:" not in markers


def test_readme_lists_every_option_as_the_options_table_says():
    """README's options table is generated from options.OPTIONS: it cannot drift from the plugin."""
    from pathlib import Path

    from pytest_quantperf.options import OPTIONS, flag, markdown_table

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- options:start -->\n", 1)[1].split("\n<!-- options:end -->", 1)[0]
    assert table == markdown_table()
    assert all(flag(o) in table for o in OPTIONS)
