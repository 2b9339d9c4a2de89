"""Does a 7B model in NF4 fit a 6 GB card, and up to which context length?

``vram_mb`` is torch's peak allocation during the measured generations; a real card also holds
the CUDA context (~0.75 GiB here, from ``pytest_quantperf.models.fit``), which the sweep adds before
comparing with the card. On the CPU: the default model against a host-memory budget.
"""
import pytest
import torch

from pytest_quantperf.models import fit

CARD_MB = 6000
ON_GPU = torch.cuda.is_available()
CONTEXT = 2048 if ON_GPU else 512
BUDGET = dict(vram_mb=CARD_MB) if ON_GPU else dict(host_rss_mb=2500)
COMPUTE = None if ON_GPU else "bf16"  # bitsandbytes' 4-bit CPU path is fastest in bf16
MAX_NEW = 16 if ON_GPU else 8
SWEEP = [1024, 2048, 3072, 4096, 6144, 8192]


@pytest.mark.quant_budget(**BUDGET)
def test_nf4_fits_at_context(quant_model, quantperf, suite_model, prompt_of):
    lm = quant_model(suite_model, quant="nf4", compute_dtype=COMPUTE)
    r = quantperf.generate(lm, prompt_of(lm, CONTEXT - MAX_NEW), max_new_tokens=MAX_NEW)
    assert abs(r.prompt_tokens - (CONTEXT - MAX_NEW)) <= 8


def longest_predicted(model: str, limit_mb: float, max_ctx: int) -> int:
    """Binary search over the context length on fit.predict's ``required_mb`` (weights+KV+activations+context)."""
    def fits(c: int) -> bool:
        return fit.predict(model, "nf4", context_len=c, compute_dtype="float16", device="cuda").required_mb <= limit_mb

    if not fits(1):
        return 0
    lo, hi = 1, max_ctx
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def test_context_sweep(quant_model, quantperf, pytestconfig, suite_model, prompt_of):
    seven_b = suite_model if suite_model.startswith("synthetic:") else "synthetic:mistral-7b"
    predicted = longest_predicted(seven_b, CARD_MB, 32768)
    quantperf.record("longest_context_predicted", predicted, unit="tokens", better="higher")
    print(f"\n{seven_b} nf4 on a {CARD_MB} MB card: longest context predicted to fit = {predicted} tokens")
    peaks = [fit.predict(seven_b, "nf4", context_len=c, compute_dtype="float16", device="cuda").required_mb
             for c in SWEEP]
    assert peaks == sorted(peaks) and 512 <= predicted < 32768
    if not ON_GPU or not suite_model.startswith("synthetic:"):
        return  # the measured half needs the 7B on a GPU
    lm = quant_model(seven_b, quant="nf4")
    overhead = fit.CUDA_CONTEXT_BYTES / 2**20
    measured = 0
    for c in SWEEP:
        r = quantperf.generate(lm, prompt_of(lm, c - 4), max_new_tokens=4, repeat=1, warmup=1, gpu_time=False)
        need = r.values["vram_mb"] + overhead
        pred = fit.predict(seven_b, "nf4", context_len=c, compute_dtype="float16", device="cuda").required_mb
        print(f"  context {c:5d}: measured peak + CUDA context {need:7.0f} MiB, predicted {pred:7.0f} MiB")
        quantperf.record(f"required_mb_ctx{c}", need, unit="MiB")
        if need > CARD_MB:
            break
        measured = c
    quantperf.record("longest_context_measured", measured, unit="tokens", better="higher")
    # the prediction may be off by one step of the sweep, not more
    assert measured > 0 and abs(SWEEP.index(measured) - max(i for i, c in enumerate(SWEEP) if c <= predicted)) <= 1
