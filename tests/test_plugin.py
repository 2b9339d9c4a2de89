"""The plugin end to end on the real default model, driven as a user drives it."""
from __future__ import annotations

import json

import pytest
# imported here, before any in-process pytester run: such a run drops numpy from sys.modules,
# and numpy's C extension cannot be imported a second time in one process
import torch


def test_design_example_passes_and_reports(pytester, run_quantperf):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quant_budget(host_rss_mb=8000, tokens_per_s=0.5, perplexity=40.0, footprint_mb=200)
        def test_nf4_fits(quant_model, quantperf):
            lm = quant_model("default", quant="nf4")          # cached for the session
            r = quantperf.generate(lm, "Who invented the light bulb?", max_new_tokens=8)
            assert r.new_tokens == 8 and len(r.samples["latency_ms"]) == 3
            quantperf.perplexity(lm, "The quick brown fox jumps over the lazy dog. " * 20)
            res = quantperf.results
            assert 0 < res["ttft_ms"].value <= res["latency_ms"].value
            assert res["tokens_per_s"].better == "higher" and len(res["tokens_per_s"].samples) == 3
            assert lm.quant_summary.linear4bit == 210 and lm.quant_summary.quant_types == ("nf4",)

        def test_same_spec_is_cached(quant_model):
            a = quant_model("default", quant="nf4")
            b = quant_model("default", quant="nf4")
            assert a is b
        """
    )
    r = run_quantperf("--quantperf-json=out.json")
    r.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "out.json").read_text())
    t = doc["tests"]["test_design_example_passes_and_reports.py::test_nf4_fits"]
    assert set(t["metrics"]) >= {"latency_ms", "ttft_ms", "tpot_ms", "tokens_per_s", "host_rss_mb",
                                 "footprint_mb", "disk_mb", "load_s", "perplexity"}
    assert 140 < t["metrics"]["footprint_mb"]["value"] < 180  # nf4 of 135M params: ~159 MiB, not 513
    assert t["models"]["default/nf4"]["quant_summary"]["linear4bit"] == 210
    assert {v["metric"]: v["status"] for v in t["verdicts"]}["tokens_per_s"] == "pass"


def test_breach_fails_with_one_line_per_metric(pytester, run_quantperf):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quant_budget(tokens_per_s=1e9, latency_ms=0.001, vram_mb=10, kl_div=0.1, host_rss_mb=1e9)
        def test_too_tight(quant_model, quantperf):
            lm = quant_model("default", quant="bf16")
            quantperf.generate(lm, "Hello", max_new_tokens=4)
        """
    )
    r = run_quantperf()
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines([
        "*budget tokens_per_s: measured * tok/s, min 1e+09, margin*",
        "*budget latency_ms: measured * ms, max 0.001, margin*",
        "*budget kl_div: budgeted at 0.1 but never measured by this test*",
    ])
    # vram_mb cannot be measured without CUDA: n/a, not one of the problems
    r.stdout.fnmatch_lines(["*3 problem(s)*"])
    assert "budget vram_mb" not in r.stdout.str()
    assert "budget host_rss_mb: measured" not in r.stdout.str()  # the one limit that holds is not listed


def test_warn_only_reports_without_failing(pytester, run_quantperf):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quant_budget(tokens_per_s=1e9)
        def test_tight(quant_model, quantperf):
            quantperf.generate(quant_model("default", quant="bf16"), "Hi", max_new_tokens=2)
        """
    )
    r = run_quantperf("--quantperf-warn-only")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*budget tokens_per_s: measured*", "*--quantperf-warn-only: not failing*"])


@pytest.mark.parametrize("marker, message", [
    ("quant_budget(vram=10)", "unknown quant_budget key 'vram'. Valid keys: vram_mb, vram_mb_per_gpu"),
    ("quant_budget(vram_mb='6GB')", "quant_budget vram_mb must be a number, got '6GB' (str)"),
    ("quant_budget(tokens_per_s=-1)", "quant_budget tokens_per_s must not be negative, got -1"),
    ("quant_budget(0.001)", "quant_budget takes keyword arguments only"),
    ("quant_budget(tolerance={'tokens_per_s': 'fast'})", "quant_budget tolerance for 'tokens_per_s'"),
])
def test_bad_marker_is_a_usage_error_naming_test_and_key(pytester, marker, message):
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_x():
            pass
        """
    )
    r = pytester.runpytest_subprocess()
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([f"*test_bad_marker_is_a_usage_error_naming_test_and_key.py::test_x: *{message}*"])


def test_budget_on_unmeasured_test_fails(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quant_budget(perplexity=20)
        def test_forgot_to_measure():
            pass
        """
    )
    r = pytester.runpytest_subprocess()
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*perplexity: budgeted at 20 but never measured by this test*"])


def test_bad_options_are_usage_errors(pytester):
    pytester.makepyfile("def test_x(): pass")
    for args, msg in [(["--quantperf-tolerance=tokens_per_s=fast"], "--quantperf-tolerance"),
                      (["--quantperf-device=gpu"], "--quantperf-device: 'gpu' is not one of"),
                      (["--quantperf-repeat=0"], "repeat must be at least 1"),
                      (["--quantperf-save=../x"], "--quantperf-save"),
                      (["--quantperf-export=csv:x"], "--quantperf-export"),
                      (["--quantperf-pin-core=fastest"], "--quantperf-pin-core must be off, auto or a CPU number")]:
        r = pytester.runpytest_subprocess(*args)
        assert r.ret == pytest.ExitCode.USAGE_ERROR, args
        assert msg in r.stderr.str(), (args, r.stderr.str())


def test_user_metrics_and_model_errors(pytester, run_quantperf):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quant_budget(tolerance={"my_metric": "5%"})
        def test_record(quantperf):
            quantperf.record("my_metric", [1.0, 1.1, 0.9], unit="s", better="lower")
            quantperf.record("my_count", 3, better="higher")
            assert quantperf.results["my_metric"].value == 1.0
            assert quantperf.results["my_count"].kind == "exact"

        def test_missing_path(quant_model):
            quant_model("/nonexistent/model/dir", quant="nf4")

        def test_cuda_absent(quant_model):
            quant_model("default", quant="nf4", device="cuda")

        def test_bad_quant(quant_model):
            quant_model("default", quant="int4")

        def test_accuracy_on_synthetic_refused(quant_model, quantperf):
            lm = quant_model("synthetic:smollm2-135m", quant="bf16")
            quantperf.perplexity(lm)
        """
    )
    r = run_quantperf()
    r.assert_outcomes(passed=1, failed=4)
    r.stdout.fnmatch_lines([
        "*ModelError: model path '/nonexistent/model/dir' does not exist*",
        "*ModelError: device 'cuda' was asked for but CUDA is not available here*",
        "*ModelError: unknown quant 'int4': use one of fp32, fp16, bf16, int8, nf4, fp4*",
        "*AccuracyRefused: perplexity on synthetic:smollm2-135m/bf16 refused: synthetic models have random weights*",
    ])


def test_llama_cpp_backend_through_the_fixture(pytester, run_quantperf):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra 'gguf')")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quant_budget(tokens_per_s=0.1, footprint_mb=120)
        def test_gguf(quant_model, quantperf):
            lm = quant_model("default", backend="llama_cpp", n_threads=1)
            r = quantperf.generate(lm, "The capital of France is", max_new_tokens=6)
            assert r.new_tokens == 6 and lm.backend == "llama_cpp"
            assert quant_model("default", backend="llama_cpp", n_threads=1) is lm   # cached

        def test_gguf_accuracy_refused(quant_model, quantperf):
            quantperf.perplexity(quant_model("default", backend="llama_cpp", n_threads=1))

        def test_gguf_quant_refused(quant_model):
            quant_model("default", quant="nf4", backend="llama_cpp")
        """
    )
    r = run_quantperf()
    r.assert_outcomes(passed=1, failed=2)
    r.stdout.fnmatch_lines([
        "*AccuracyRefused: perplexity on * refused: the llama_cpp backend scores multiple_choice*next-token "
        "distributions over whole texts, which this backend does not compute*",
        "*quant/compute_dtype/double_quant do not apply to backend='llama_cpp'*",
    ])


def test_loaders_serve_module_scoped_fixtures(pytester, run_quantperf):
    """quant_model and fp16_model are session-scoped: a module-scoped fixture loads through them
    (no ScopeMismatch), once, and the vram_mb fail-fast still reads the running test's budget."""
    pytester.makepyfile(
        """
        import pytest
        import torch
        from pytest_quantperf.plugin import SESSION_KEY

        @pytest.fixture(scope="module")
        def lm(quant_model):
            return quant_model("synthetic:smollm2-135m", quant="fp32", device="cpu")

        @pytest.fixture(scope="module")
        def ref(fp16_model):
            return fp16_model("synthetic:smollm2-135m", device="cpu")

        @pytest.fixture(scope="module")
        def too_big(quant_model):
            return quant_model("synthetic:mistral-7b", quant="fp16", device="cuda")

        def test_one(lm, ref, quantperf):
            assert ref.reference and not lm.reference and ref.model is lm.model
            quantperf.record("x", 1.0)

        def test_two(lm, quantperf, request):
            assert request.config.stash[SESSION_KEY].cache.loads == 1
            quantperf.record("x", 2.0)

        @pytest.mark.skipif(not torch.cuda.is_available(), reason="the fail-fast applies on CUDA only")
        @pytest.mark.quant_budget(vram_mb=100)
        def test_weights_alone_exceed_the_budget(too_big):
            pass
        """
    )
    r = run_quantperf()
    if torch.cuda.is_available():
        r.assert_outcomes(passed=2, errors=1)
        r.stdout.fnmatch_lines(["*budget vram_mb: synthetic:mistral-7b/fp16 needs * MiB for its weights "
                                "alone (predicted from the config before loading), max 100: not loaded*"])
    else:
        r.assert_outcomes(passed=2, skipped=1)
    assert "ScopeMismatch" not in r.stdout.str()
