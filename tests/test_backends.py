"""The llama.cpp and MLX backends on the default model's real weights.

Each backend must give exactly N new tokens (EOS does not stop it), sane timestamps, the same
greedy text as transformers fp32 on the same weights, and work through Recorder and budgets.
Skipped, with the reason, where ``llama_cpp`` / ``mlx`` do not import.
"""
from __future__ import annotations

import json

import pytest

from pytest_quantperf import backends
from pytest_quantperf.backends.llama_cpp import gguf_spec, gguf_type_name, load_gguf
from pytest_quantperf.backends.mlx import load_mlx
from pytest_quantperf.errors import BackendUnavailable, MeasurementError, ModelError
from pytest_quantperf.backends import backend_for
from pytest_quantperf.measure.generate import SamplingPlan, measure_generate

PROMPT = "Who invented the light bulb?"
LLAMA_SKIP = backends.unavailable_reason("llama_cpp")
MLX_SKIP = backends.unavailable_reason("mlx")
needs_llama = pytest.mark.skipif(LLAMA_SKIP is not None, reason=LLAMA_SKIP or "")
needs_mlx = pytest.mark.skipif(MLX_SKIP is not None, reason=MLX_SKIP or "")


@pytest.fixture(scope="module")
def gguf_lm():
    if LLAMA_SKIP:
        pytest.skip(LLAMA_SKIP)
    # one thread: ggml's spinning thread barrier crawls when other processes hold the cores
    lm = load_gguf("default", n_ctx=512, n_threads=1)
    yield lm
    lm.model.close()


@pytest.fixture(scope="module")
def fp32_ids():
    """transformers fp32 greedy tokens on the same weights (the GGUF file, dequantized)."""
    from pytest_quantperf.models import load, make_spec

    lm = load(make_spec("default", "fp32", device="cpu"))
    b = backend_for(lm)
    return b.run(b.prepare([PROMPT]), 16).output_ids


def agreeing_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def test_gguf_type_names():
    assert gguf_type_name(3) == "q4_1"
    assert gguf_type_name("7") == "q8_0"
    assert gguf_type_name(1) == "f16"
    assert gguf_type_name(0) == "f32"
    assert gguf_type_name(None) == "gguf"


def test_llama_loader_refuses_what_it_cannot_load(tmp_path):
    with pytest.raises(ModelError, match="loads .gguf files"):
        gguf_spec(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        gguf_spec(tmp_path / "missing.gguf")
    from pytest_quantperf.backends import load_with_backend

    with pytest.raises(ModelError, match="unknown backend 'vllm': use one of transformers, llama_cpp, mlx"):
        load_with_backend("vllm")


@needs_llama
def test_gguf_handle_describes_the_file(gguf_lm):
    assert gguf_lm.backend == "llama_cpp" and gguf_lm.device == "cpu"
    assert gguf_lm.spec.quant == "q4_1"
    assert gguf_lm.label == "SmolLM2-135M-Instruct.Q4_1.gguf/q4_1"
    s = gguf_lm.quant_summary
    assert 134_000_000 < s.params_total < 135_000_000
    # Q4_1 stores 4-bit values plus a scale and a minimum per 32: 5 bits, more with f32/q8 parts
    assert 5.0 < s.bits_per_param < 6.5
    assert 85 < gguf_lm.footprint_mb < gguf_lm.disk_mb < 100
    json.dumps(gguf_lm.summary())  # the run document must be able to hold it


@needs_llama
def test_exactly_n_tokens_even_past_eos(gguf_lm):
    b = backend_for(gguf_lm)
    prep = b.prepare([PROMPT])
    assert b.prompt_tokens(prep) == 6
    t = b.run(prep, 40)
    assert t.new_tokens == len(t.output_ids) == 40 and t.batch == 1
    # the model ends its answer (EOS, <|im_end|>) within 40 tokens (at token 18), and the run goes on
    assert gguf_lm.tokenizer.eos_token_id in t.output_ids[:-1]
    assert t.start < t.first_token < t.end


@needs_llama
def test_runs_are_deterministic_and_timed_sanely(gguf_lm):
    res = measure_generate(gguf_lm, [PROMPT], 12, SamplingPlan(repeat=3, warmup=1))
    m = res.median
    assert res.new_tokens == 12 and len(res.samples["latency_ms"]) == 3 and res.warmup_runs == 1
    assert 0 < m["ttft_ms"] < m["latency_ms"]
    # latency = ttft + 11 decode steps
    assert m["tpot_ms"] * 11 == pytest.approx(m["latency_ms"] - m["ttft_ms"], rel=0.25)
    assert m["tokens_per_s"] == pytest.approx(1000 / m["tpot_ms"], rel=0.25)
    assert m["host_rss_mb"] > 50  # the mapped weights are resident
    b = backend_for(gguf_lm)
    assert b.run(b.prepare([PROMPT]), 12).output_ids == b.run(b.prepare([PROMPT]), 12).output_ids


@needs_llama
def test_greedy_text_agrees_with_transformers_fp32(gguf_lm, fp32_ids):
    b = backend_for(gguf_lm)
    ids = b.run(b.prepare([PROMPT]), 16).output_ids
    n = agreeing_prefix(ids, fp32_ids)
    print(f"llama.cpp q4_1 vs transformers fp32 (dequantized from the same file): {n}/16 greedy tokens agree")
    assert n >= 8, (ids, fp32_ids)


@needs_llama
def test_bad_requests_say_what_to_do(gguf_lm):
    b = backend_for(gguf_lm)
    with pytest.raises(MeasurementError, match="one sequence at a time"):
        b.prepare([PROMPT, PROMPT])
    with pytest.raises(MeasurementError, match="exceeds the llama.cpp context n_ctx=512"):
        b.run(b.prepare([PROMPT]), 600)


@needs_llama
def test_llama_cpp_scores_answers_like_transformers_on_the_same_weights(gguf_lm):
    """Multiple choice on the GGUF file: lm-eval's requests, token for token the same as the
    transformers tokenizer makes them, scored by llama.cpp. Its Q4_1 matmuls round activations,
    so log-likelihoods differ a little from the dequantized fp32 weights in transformers; the
    context cache shared by a question's choices changes nothing."""
    from pytest_quantperf import accuracy as A
    from pytest_quantperf.accuracy.loglik import _request
    from pytest_quantperf.backends import llama_cpp
    from pytest_quantperf.models import load, make_spec

    _, reqs, _ = A.mc_requests("builtin", limit=8)
    shared = llama_cpp.loglikelihoods(gguf_lm, reqs)
    alone = [llama_cpp.loglikelihoods(gguf_lm, [r])[0] for r in reqs[:6]]
    assert alone == pytest.approx(shared[:6], abs=1e-3)
    tf = load(make_spec("default", "fp32", device="cpu"))
    assert all(_request(gguf_lm.tokenizer, c, x) == _request(tf.tokenizer, c, x) for c, x in reqs)
    assert shared == pytest.approx(A.loglikelihoods(tf.model, tf.tokenizer, reqs), abs=1.5)
    ours = A.multiple_choice(None, gguf_lm.tokenizer, "builtin", limit=8,
                             scorer=lambda r: llama_cpp.loglikelihoods(gguf_lm, r))
    assert ours.accuracy >= 0.5  # well above chance (0.25) on the easy built-in questions


@needs_llama
def test_multiple_choice_runs_on_llama_cpp_and_other_accuracy_says_why_not(gguf_lm):
    from pytest_quantperf.recorder import AccuracyRefused, Recorder
    from pytest_quantperf.session import QuantperfSession, Settings

    rec = Recorder(QuantperfSession(Settings(device="cpu", plan=SamplingPlan(repeat=1, warmup=0))), "t::mc")
    res = rec.multiple_choice(gguf_lm, "builtin", limit=4)
    assert res.n == 4 and rec.results["accuracy"].items == tuple(float(c) for c in res.correct)
    with pytest.raises(AccuracyRefused, match="lm_eval on .* refused: the llama_cpp backend scores multiple_choice.*"
                                              "lm-eval's HFLM, which drives a transformers model"):
        rec.lm_eval(gguf_lm, "arc_easy")


@needs_llama
def test_budgets_work_through_the_recorder(gguf_lm):
    from pytest_quantperf.verdicts.budgets import parse_budget
    from pytest_quantperf.recorder import Recorder, judge
    from pytest_quantperf.session import QuantperfSession, Settings

    qs = QuantperfSession(Settings(device="cpu", plan=SamplingPlan(repeat=2, warmup=1)))
    ok = parse_budget("t::ok", (), {"tokens_per_s": 1, "host_rss_mb": 100_000, "footprint_mb": 100})
    rec = Recorder(qs, "t::ok", ok)
    rec.generate(gguf_lm, PROMPT, max_new_tokens=6)
    assert {"latency_ms", "ttft_ms", "tpot_ms", "tokens_per_s", "host_rss_mb", "footprint_mb",
            "disk_mb", "load_s"} <= set(rec.results)
    assert rec.result.models[gguf_lm.label]["backend"] == "llama_cpp"
    assert judge(qs, rec.result, ok, device="cpu").failures == []

    tight = parse_budget("t::tight", (), {"tokens_per_s": 1e6, "footprint_mb": 10})
    rec2 = Recorder(qs, "t::tight", tight)
    rec2.generate(gguf_lm, PROMPT, max_new_tokens=6)
    fails = judge(qs, rec2.result, tight, device="cpu").failures
    assert len(fails) == 2 and any("tokens_per_s" in f for f in fails) and any("footprint_mb" in f for f in fails)


@needs_llama
def test_through_pytest_with_a_fixture_of_ones_own(pytester, run_quantperf):
    pytester.makeconftest(
        """
        import pytest
        from pytest_quantperf.backends.llama_cpp import load_gguf

        @pytest.fixture(scope="session")
        def gguf_model():
            return load_gguf("default", n_ctx=256, n_threads=1)
        """)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quant_budget(tokens_per_s=0.5, host_rss_mb=8000, footprint_mb=100)
        def test_gguf(gguf_model, quantperf):
            r = quantperf.generate(gguf_model, "Hello", max_new_tokens=5)
            assert r.new_tokens == 5

        @pytest.mark.quant_budget(footprint_mb=50)
        def test_gguf_too_big(gguf_model, quantperf):
            quantperf.generate(gguf_model, "Hello", max_new_tokens=3)
        """)
    r = run_quantperf("--quantperf-json=out.json")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*footprint_mb: measured 92.1* MiB, max 50*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    t = doc["tests"]["test_through_pytest_with_a_fixture_of_ones_own.py::test_gguf"]
    assert t["models"]["SmolLM2-135M-Instruct.Q4_1.gguf/q4_1"]["backend"] == "llama_cpp"
    assert t["metrics"]["tokens_per_s"]["n"] == 3


# --------------------------------------------------------------------------- MLX

@pytest.fixture(scope="module")
def mlx_lm():
    if MLX_SKIP:
        pytest.skip(MLX_SKIP)
    return load_mlx("default")


def test_mlx_absent_is_a_clear_error(monkeypatch):
    # patched where it lives: load_mlx and load_gguf ask backends.unavailable_reason, which asks this
    monkeypatch.setattr(backends, "available", lambda backend: False)
    with pytest.raises(BackendUnavailable, match=r"pytest-quantperf\[mlx\]"):
        load_mlx("default")
    with pytest.raises(BackendUnavailable, match=r"pytest-quantperf\[gguf\]"):
        load_gguf("default")


@needs_mlx
def test_mlx_generates_n_tokens_agreeing_with_transformers(mlx_lm, fp32_ids):
    assert mlx_lm.backend == "mlx" and mlx_lm.spec.quant == "mlx-fp32"
    assert 500 < mlx_lm.footprint_mb < 530  # 134.5M fp32 parameters
    b = backend_for(mlx_lm)
    t = b.run(b.prepare([PROMPT]), 8)
    assert t.new_tokens == len(t.output_ids) == 8 and t.start < t.first_token < t.end
    n = agreeing_prefix(t.output_ids, fp32_ids)
    print(f"mlx fp32 vs transformers fp32: {n}/8 greedy tokens agree")
    assert n >= 5, (t.output_ids, fp32_ids)


@needs_mlx
def test_mlx_4bit_is_really_quantized():
    lm = load_mlx("default", quantize_bits=4)
    s = lm.quant_summary
    assert lm.spec.quant == "mlx-q4" and s.quantized_layers > 200 and s.bits == 4
    assert 70 < lm.footprint_mb < 90  # 4 bits + an fp32 scale and bias per 64 weights ≈ 5 bits/param
    assert s.params_total == pytest.approx(134_515_008, rel=0.01)
    res = measure_generate(lm, [PROMPT], 3, SamplingPlan(repeat=1, warmup=1))
    assert res.new_tokens == 3 and res.median["tokens_per_s"] > 0
    with pytest.raises(ModelError, match="quantize_bits must be one of"):
        load_mlx("default", quantize_bits=5)
