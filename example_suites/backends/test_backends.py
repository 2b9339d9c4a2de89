"""transformers vs llama.cpp (vs MLX where it imports) on the same model file.

Per backend: latency, time to first token, tokens/s, CPU use, peak host memory, the weights'
footprint, and whether its greedy output agrees with transformers fp32 token for token.
llama.cpp runs the GGUF file as stored (Q4_1 for the default model); transformers runs the same
weights dequantized to fp32, so disagreement would point at the backend, not the weights.
"""
import pytest

from pytest_quantperf.backends import backend_for

PROMPT = "Who invented the light bulb?"
MAX_NEW = 12
MIN_AGREEING = {"transformers": MAX_NEW, "llama_cpp": 6, "mlx": 4}


@pytest.mark.quant_budget(tokens_per_s=0.5)
@pytest.mark.parametrize("backend", ["transformers", "llama_cpp", "mlx"])
def test_backend(backend, backend_model, quantperf, cpu_meter, reference_ids, table):
    lm = backend_model(backend)
    with cpu_meter() as cpu:
        r = quantperf.generate(lm, PROMPT, max_new_tokens=MAX_NEW)
    b = backend_for(lm)
    ids = b.run(b.prepare([PROMPT]), MAX_NEW).output_ids
    ref = reference_ids(PROMPT, MAX_NEW)
    agreeing = next((i for i, (x, y) in enumerate(zip(ids, ref)) if x != y), MAX_NEW)
    quantperf.record("cpu_percent", cpu.percent, unit="%")
    quantperf.record("greedy_agreement", agreeing / MAX_NEW, unit="share", better="higher")
    res = quantperf.results
    table[f"{backend} ({lm.spec.quant})"] = {
        "latency_ms": res["latency_ms"].value, "ttft_ms": res["ttft_ms"].value,
        "tokens_per_s": res["tokens_per_s"].value, "cpu_percent": cpu.percent,
        "host_rss_mb": res["host_rss_mb"].value, "footprint_mb": lm.footprint_mb,
        "greedy_agreement": f"{agreeing}/{MAX_NEW}", "text": repr(r.text[:30]),
    }
    assert len(ids) == MAX_NEW
    assert agreeing >= MIN_AGREEING[backend], f"{backend}: only {agreeing}/{MAX_NEW} greedy tokens agree: {r.text!r}"
