"""Quickstart: is the 4-bit default model still fast enough, small enough and accurate enough?

Runs on the CPU in a few minutes (and unchanged on a GPU, where vram_mb is measured too).
"""
import pytest


@pytest.mark.quant_budget(footprint_mb=200, host_rss_mb=8000, tokens_per_s=1, perplexity=30.0,
                          accuracy=0.3, footprint_mb_vs_ref=0.4, perplexity_vs_ref=1.7)
def test_nf4_is_small_fast_and_accurate(quant_model, fp16_model, quantperf):
    ref = fp16_model("default")                      # fp16 on CUDA, fp32 on the CPU
    lm = quant_model("default", quant="nf4")         # cached for the session
    quantperf.generate(lm, "Who invented the light bulb?", max_new_tokens=16)
    quantperf.perplexity(lm)                         # built-in public-domain reference text
    quantperf.perplexity(ref)
    quantperf.multiple_choice(lm, "builtin", limit=60)
    quantperf.compare(lm, ref)                       # KL divergence and top-1 agreement vs the reference


@pytest.mark.quant_budget(footprint_mb=300, tokens_per_s=0.5, kl_div=0.05, top1_agreement=0.9)
def test_bf16_matches_the_reference(quant_model, fp16_model, quantperf):
    ref = fp16_model("default")
    lm = quant_model("default", quant="bf16")
    quantperf.generate(lm, "Who invented the light bulb?", max_new_tokens=16)
    quantperf.compare(lm, ref)
