"""NF4 tuning: what double quantization saves per parameter, and what it costs in speed.

bitsandbytes keeps one fp32 absmax per block of 64 weights (0.5 bits/param). Double
quantization stores those constants in 8 bits with one fp32 per 256 of them
(8/64 + 32/(64·256) ≈ 0.127 bits/param): about 0.37 bits/param saved, paid for with one more
dequantization step in every matmul. Both are measured here for each compute dtype.
"""
import pytest
import torch

ON_GPU = torch.cuda.is_available()
PROMPT = "Who invented the light bulb?"
MAX_NEW = 32 if ON_GPU else 8
COMPUTE = ["fp16", "bf16", "fp32"] if ON_GPU else ["fp32", "bf16"]


@pytest.mark.parametrize("compute", COMPUTE)
def test_double_quant(compute, quant_model, quantperf, suite_model, table):
    plain = quant_model(suite_model, quant="nf4", compute_dtype=compute, double_quant=False)
    dq = quant_model(suite_model, quant="nf4", compute_dtype=compute, double_quant=True)
    quantperf.generate(plain, PROMPT, max_new_tokens=MAX_NEW)
    quantperf.generate(dq, PROMPT, max_new_tokens=MAX_NEW)
    res = quantperf.results
    qparams = dq.quant_summary.params_quantized
    saved_bits = (plain.footprint_bytes - dq.footprint_bytes) * 8 / qparams
    speed = res[f"tokens_per_s[{dq.label}]"].value / res["tokens_per_s"].value
    quantperf.record("dq_saved_bits_per_param", saved_bits, unit="bit/param", better="higher")
    quantperf.record("dq_saved_mb", (plain.footprint_bytes - dq.footprint_bytes) / 2**20, unit="MiB",
                     better="higher")
    quantperf.record("dq_speed_ratio", speed, unit="x", better="higher")
    table[f"nf4@{compute}"] = {
        "footprint_mb": plain.footprint_mb, "footprint_mb_dq": dq.footprint_mb,
        "saved_bits_per_param": saved_bits, "saved_mb": (plain.footprint_bytes - dq.footprint_bytes) / 2**20,
        "tokens_per_s": res["tokens_per_s"].value, "tokens_per_s_dq": res[f"tokens_per_s[{dq.label}]"].value,
        "speed_ratio_dq": speed,
    }
    assert 0.3 < saved_bits < 0.45, f"double quant saved {saved_bits:.3f} bits/param, expected about 0.37"
