"""One model in 16-bit and in 4-bit NF4: speed, peak memory, footprint and size on disk.

The budgets are relative to the 16-bit reference measured in the same run, so they hold on any
machine: NF4 must take at most this share of the 16-bit footprint and keep at least this share
of its decode speed.
"""
import pytest
import torch

PROMPT = "Who invented the light bulb?"
ON_GPU = torch.cuda.is_available()
# GPU (7B): NF4 ≈ 0.29 of fp16's weights. CPU (135M): the unquantized 28M-parameter embedding
# stays 16-bit, so NF4 keeps ≈ 0.43 of the bf16 footprint. Its speed share there is 1.4 on a quiet
# runner but fell to 0.22 with one cold repetition beside another job on 2 cores: the floor is 0.1.
BUDGET = (dict(footprint_mb_vs_ref=0.35, tokens_per_s_vs_ref=0.25) if ON_GPU
          else dict(footprint_mb_vs_ref=0.5, tokens_per_s_vs_ref=0.1))
MAX_NEW = 32 if ON_GPU else 12


@pytest.mark.quant_budget(**BUDGET)
def test_nf4_vs_16bit(quant_model, fp16_model, quantperf, suite_model, sixteen_bit, table, saved_mb):
    ref = fp16_model(suite_model, quant=sixteen_bit)
    lm = quant_model(suite_model, quant="nf4", compute_dtype=sixteen_bit)
    quantperf.generate(ref, PROMPT, max_new_tokens=MAX_NEW)
    quantperf.generate(lm, PROMPT, max_new_tokens=MAX_NEW)
    res = quantperf.results
    mem = "vram_mb" if "vram_mb" in res else "host_rss_mb"
    for name, key, model in ((sixteen_bit, "ref.{}", ref), ("nf4", "{}", lm)):
        size, how = saved_mb(model)
        quantperf.record(f"saved_mb_{name}", size, unit="MiB")
        table[f"{model.label}"] = {
            "latency_ms": res[key.format("latency_ms")].value,
            "ttft_ms": res[key.format("ttft_ms")].value,
            "tokens_per_s": res[key.format("tokens_per_s")].value,
            f"peak_{mem}": res[key.format(mem)].value,
            "footprint_mb": res[key.format("footprint_mb")].value,
            f"disk_mb ({how})": size,
        }
    assert res["footprint_mb"].value < res["ref.footprint_mb"].value
