"""What a new user meets on the first day: reference-only budgets, n/a on the CPU, quiet A/A runs."""
from __future__ import annotations

import json

import pytest


def _verdicts(doc, nodeid):
    return {(v.get("source"), v["metric"]): v for v in doc["tests"][nodeid]["verdicts"]}


def test_a_test_of_the_reference_alone_is_budgeted_and_saved(pytester, run_quantperf):
    pytester.makepyfile(test_fp="""
        import pytest

        @pytest.mark.quant_budget(tokens_per_s=0.01, latency_ms=600000)
        def test_fp(fp16_model, quantperf):
            quantperf.generate(fp16_model("default"), "The capital of France is", max_new_tokens=8)
    """)
    r = run_quantperf("--quantperf-save=main", "--quantperf-json=out.json")
    r.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "out.json").read_text())
    t = doc["tests"]["test_fp.py::test_fp"]
    assert "tokens_per_s" in t["metrics"] and "ref.tokens_per_s" not in t["metrics"]
    v = _verdicts(doc, "test_fp.py::test_fp")
    assert v[("budget", "tokens_per_s")]["status"] == "pass"
    assert v[("budget", "latency_ms")]["status"] == "pass"
    assert (pytester.path / ".quantperf" / "baselines" / "main.json").exists()
    # and the next run compares it against that baseline
    r = run_quantperf("--quantperf-baseline=main", "--quantperf-json=out2.json")
    r.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "out2.json").read_text())
    v = _verdicts(doc, "test_fp.py::test_fp")
    # against one save the wall clock's interval is wider than the 10% band: the rule leaves it open,
    # unless a reason (a busy host) stands beside a larger move; it never fails the test
    tps = v[("baseline", "tokens_per_s")]
    assert tps["status"] == "inconclusive" or tps["reasons"], tps["message"]
    assert not tps["gating"] and "these runs decide changes beyond" in tps["message"]


def test_gpu_only_budgets_are_na_on_the_cpu(pytester, run_quantperf):
    pytester.makepyfile(test_na="""
        import pytest

        @pytest.mark.quant_budget(vram_mb=6000, gpu_ms_per_token=50, energy_j_per_token=5, tokens_per_s=0.01)
        def test_nf4(quant_model, quantperf):
            quantperf.generate(quant_model("default", quant="nf4"), "Hello", max_new_tokens=4)

        @pytest.mark.quant_budget(perplexity=40.0)
        def test_never_measured(quant_model, quantperf):
            quant_model("default", quant="nf4")
            quantperf.record("x", 1.0)
    """)
    r = run_quantperf("--quantperf-json=out.json", "--quantperf-markdown=out.md", "--quantperf-html=out.html")
    # a metric the device could measure and the test did not is still a failure
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*budget perplexity: budgeted at 40 but never measured by this test*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    v = _verdicts(doc, "test_na.py::test_nf4")
    for key in ("vram_mb", "gpu_ms_per_token", "energy_j_per_token"):
        assert v[("budget", key)]["status"] == "n/a", key
        assert "no CUDA device in this run" in v[("budget", key)]["message"]
        assert not v[("budget", key)]["gating"]
    assert v[("budget", "tokens_per_s")]["status"] == "pass"
    rows = [r for r in doc["report"]["rows"] if r["nodeid"] == "test_na.py::test_nf4" and r["budget"]]
    assert {r["metric"]: r["status"] for r in rows}["vram_mb"] == "n/a"
    assert doc["report"]["summary"]["counts"]["n/a"] == 3
    assert "n/a" in (pytester.path / "out.md").read_text()
    assert "no CUDA device in this run" in (pytester.path / "out.html").read_text()
    r.stdout.fnmatch_lines(["*3 budgets n/a on this device*"])


def test_unchanged_runs_print_no_warning(pytester, run_quantperf):
    """Save, then compare the same suite: single-sample and session-dependent figures stay quiet."""
    pytester.makepyfile(test_aa="""
        import pytest

        @pytest.mark.quant_budget(tokens_per_s=0.01, host_rss_mb=20000)
        def test_nf4(quant_model, quantperf):
            quantperf.generate(quant_model("default", quant="nf4"), "Hello", max_new_tokens=4)
    """)
    run_quantperf("--quantperf-save=main").assert_outcomes(passed=1)
    for i in range(2):
        r = run_quantperf("--quantperf-baseline=main", f"--quantperf-json=aa{i}.json")
        r.assert_outcomes(passed=1)
        doc = json.loads((pytester.path / f"aa{i}.json").read_text())
        v = _verdicts(doc, "test_aa.py::test_nf4")
        assert v[("baseline", "load_s")]["status"] == "not_gated"
        assert v[("baseline", "host_rss_mb")]["status"] == "not_gated"
        assert v[("baseline", "footprint_mb")]["status"] == "pass"
        assert "assumed" in v[("baseline", "latency_ms")]["evidence"]
        # never a regression, an improvement or a pass of a timing figure: one save leaves it open
        for (src, metric), x in v.items():
            if src == "baseline" and x["kind"] == "timing" and metric != "load_s":  # load time: shown, not compared
                assert x["status"] == "inconclusive" or x["reasons"], (metric, x["message"])
        warned = [ln for ln in r.stdout.lines if "QuantperfWarning" in ln]
        assert warned == []


def test_a_warn_only_run_that_breached_never_becomes_the_baseline(pytester, run_quantperf):
    pytester.makepyfile(test_w="""
        import pytest

        @pytest.mark.quant_budget(tokens_per_s=1e9)
        def test_slow(quantperf):
            quantperf.record("x", [1.0, 1.1, 1.2])
            quantperf.record("tokens_per_s", [5.0, 5.0, 5.0], better="higher")
    """)
    r = run_quantperf("--quantperf-save=main", "--quantperf-warn-only")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*baseline 'main' NOT saved*--quantperf-warn-only*"])
    assert not (pytester.path / ".quantperf" / "baselines" / "main.json").exists()


def test_an_unchanged_run_beside_a_busy_process_does_not_fail(pytester, run_quantperf):
    """One core taken by a neighbour stalls torch's threads: the verdict names the host, never fails."""
    import os
    import subprocess
    import sys

    pytester.makepyfile(test_busy="""
        def test_bf16(quant_model, quantperf):
            quantperf.generate(quant_model("default", quant="bf16"), "Hello", max_new_tokens=4)
    """)
    run_quantperf("--quantperf-save=main").assert_outcomes(passed=1)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        r = run_quantperf("--quantperf-baseline=main", "--quantperf-json=busy.json")
    finally:
        spinner.kill()
        spinner.wait()
    r.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "busy.json").read_text())
    t = doc["tests"]["test_busy.py::test_bf16"]
    host = t["metrics"]["latency_ms"]["extra"]["host"]
    assert host["runs"] == len(t["metrics"]["latency_ms"]["samples"]) and host["state"] in (
        "quiet", "contended", "too_busy")
    if len(os.sched_getaffinity(0)) <= 2:  # one spinner holds half of a 2-core machine
        assert host["state"] in ("contended", "too_busy"), host
    baseline = [v for v in t["verdicts"] if v.get("source") == "baseline"]
    assert not any(v["gating"] for v in baseline)
    # a timing figure the neighbour moved far is shown with the host as its reason
    assert all(v["reasons"] for v in baseline if v["kind"] == "timing" and v["status"] == "regression")


def test_figures_shown_worse_make_one_warning_per_test(pytester, run_quantperf):
    """Latency, per-token time and tokens/s are one measurement: one line says they are worse, and how to settle it."""
    body = """
        def test_t(quantperf):
            quantperf.record("latency_ms", [{a}, {a}], unit="ms")
            quantperf.record("tpot_ms", [{b}, {b}], unit="ms")
            quantperf.record("footprint_mb", [100.0], unit="MiB")
    """
    pytester.makepyfile(test_n=body.format(a=100.0, b=10.0))
    run_quantperf("--quantperf-save=main").assert_outcomes(passed=1)
    pytester.makepyfile(test_n=body.format(a=220.0, b=22.0))  # +120%: worse for sure, not surely beyond +10%
    r = run_quantperf("--quantperf-baseline=main", "--quantperf-json=n.json")
    r.assert_outcomes(passed=1)
    warned = [ln for ln in r.stdout.lines if "QuantperfWarning" in ln]
    assert len(warned) == 1, warned
    assert "latency_ms +120.0%, tpot_ms +120.0%" in warned[0] and "quantperf ab" in warned[0]
    assert "footprint_mb" not in warned[0]
    v = _verdicts(json.loads((pytester.path / "n.json").read_text()), "test_n.py::test_t")
    assert v[("baseline", "latency_ms")]["status"] == v[("baseline", "tpot_ms")]["status"] == "inconclusive"


def test_a_failing_test_shows_no_import_noise_of_the_quantizers(pytester, run_quantperf):
    """A failure report shows what the test captured: no line of the quantizers' first import
    (torchao's missing optional kernels, torch's pytree deprecations, bitsandbytes' torch.jit ones)."""
    pytest.importorskip("torchao")  # the [quant] extra: transformers then imports it with any quantized load
    pytester.makepyfile(test_noise="""
        def test_nf4_then_fails(quant_model, quantperf):
            quantperf.generate(quant_model("default", quant="nf4"), "Hello", max_new_tokens=2)
            assert False, "the user's own failure"
    """)
    r = run_quantperf("-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    out = r.stdout.str() + r.stderr.str()
    assert "the user's own failure" in out
    for noise in ("torchao", "_pytree.py", "script_method", "DeprecationWarning"):
        assert noise not in out, noise
