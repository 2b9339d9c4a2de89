"""Budgets relative to the reference, proof that the quantization applied, paired accuracy verdicts."""
from __future__ import annotations

import json

import pytest


def test_vs_ref_budgets_and_paired_accuracy(pytester, run_quantperf):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quant_budget(footprint_mb_vs_ref=0.4, perplexity_vs_ref=2.0, accuracy_drop_vs_ref=0.25)
        def test_nf4_vs_fp32(quant_model, fp16_model, quantperf):
            ref = fp16_model("default")
            lm = quant_model("default", quant="nf4")
            text = "The history of the light bulb begins with early experiments in electric lighting. " * 8
            quantperf.perplexity(ref, text)
            quantperf.perplexity(lm, text)
            quantperf.multiple_choice(ref, "builtin", limit=24)
            quantperf.multiple_choice(lm, "builtin", limit=24)
            r = quantperf.results
            assert r["footprint_mb"].value < 0.4 * r["ref.footprint_mb"].value
            paired = r["accuracy"].extra["paired_vs_ref"]
            assert 0 <= paired["p_value"] <= 1 and paired["ci"][0] <= paired["drop"] <= paired["ci"][1]

        @pytest.mark.quant_budget(footprint_mb_vs_ref=0.01)
        def test_vs_ref_breach_is_named(quant_model, fp16_model, quantperf):
            quantperf.perplexity(fp16_model("default"), "Hello world. " * 10)
            quantperf.perplexity(quant_model("default", quant="nf4"), "Hello world. " * 10)

        @pytest.mark.quant_budget(tokens_per_s_vs_ref=0.5)
        def test_vs_ref_without_reference(quant_model, quantperf):
            quantperf.perplexity(quant_model("default", quant="nf4"), "Hello world. " * 10)
        """
    )
    r = run_quantperf("--quantperf-json=out.json")
    r.assert_outcomes(passed=1, failed=2)
    r.stdout.fnmatch_lines([
        "*budget footprint_mb_vs_ref: * / reference * = 0.3*x, max 0.01*",
        "*budget tokens_per_s_vs_ref: needs tokens_per_s of this model and of the reference measured in the "
        "same session (missing: tokens_per_s, reference tokens_per_s)*",
    ])
    doc = json.loads((pytester.path / "out.json").read_text())
    t = doc["tests"]["test_vs_ref_budgets_and_paired_accuracy.py::test_nf4_vs_fp32"]
    assert t["metrics"]["ref.perplexity"]["model"] == "default/fp32"
    assert t["models"]["default/fp32"]["reference"] is True


def test_dropped_quantization_config_is_refused(pytester, run_quantperf):
    """int8 asked, but the quantization config never reaches transformers: the load must not pass as int8."""
    pytester.makeconftest(
        """
        import pytest
        from pytest_quantperf.models import loading

        @pytest.fixture(autouse=True)
        def drop_quantization_config(monkeypatch):
            monkeypatch.setattr(loading, "bnb_config", lambda spec: None)
        """
    )
    pytester.makepyfile(
        """
        def test_int8(quant_model):
            quant_model("default", quant="int8")

        def test_nf4(quant_model):
            quant_model("default", quant="nf4", double_quant=True)
        """
    )
    r = run_quantperf()
    r.assert_outcomes(failed=2)
    r.stdout.fnmatch_lines([
        "*QuantMismatchError: asked for default/int8 but found no bitsandbytes Linear8bitLt layer "
        "(211 plain nn.Linear, 0 Linear4bit): the quantization config did not apply*",
        "*QuantMismatchError: asked for default/nf4+dq but found no bitsandbytes Linear4bit layer*",
    ])


def test_quant_summary_matches_request():
    from pytest_quantperf import models
    from pytest_quantperf.errors import QuantMismatchError

    lm = models.load(models.make_spec("default", "fp4", compute_dtype="bf16", double_quant=True))
    s = lm.quant_summary
    assert (s.linear4bit, s.plain_linear, s.quant_types, s.compute_dtypes, s.double_quant) == \
        (210, 1, ("fp4",), ("bfloat16",), (True,))
    assert (s.params_total, s.params_quantized) == (134_515_008, 106_168_320)  # tied embeddings counted once
    assert s.predicted_bytes and abs(s.footprint_bytes - s.predicted_bytes) / s.predicted_bytes < 0.05
    wrong = models.make_spec("default", "nf4", compute_dtype="bf16", double_quant=True)
    with pytest.raises(QuantMismatchError, match="asked for default/nf4\\+dq@bf16 but the 4-bit layers use"):
        models.verify_quantization(s, wrong)
