"""FP32, FP16, BF16, INT8, NF4 and FP4 (4-bit with fp16 and fp32 compute) side by side.

Per configuration: multiple-choice accuracy (built-in set), perplexity, the weights' footprint,
latency per output token and throughput. On ``synthetic:`` models (the GPU default) the
accuracy columns stay empty: random weights have no accuracy to measure.
"""
import pytest
import torch

ON_GPU = torch.cuda.is_available()
PROMPT = "Who invented the light bulb?"
MAX_NEW = 32 if ON_GPU else 8
MC_LIMIT = None if ON_GPU else 8          # the whole built-in set on a GPU, a taste on the CPU
PPL_CHARS = None if ON_GPU else 2000       # ~450 tokens of the reference text on the CPU

# (row name, quant, compute dtype); fp16 compute works on the CPU too, only slower than fp32
CONFIGS = [
    ("fp32", "fp32", None),
    ("fp16", "fp16", None),
    ("bf16", "bf16", None),
    ("int8", "int8", None),
    ("nf4@fp16", "nf4", "fp16"),
    ("nf4@fp32", "nf4", "fp32"),
    ("fp4@fp16", "fp4", "fp16"),
    ("fp4@fp32", "fp4", "fp32"),
]


@pytest.mark.parametrize("row,quant,compute", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_config(row, quant, compute, quant_model, quantperf, suite_model, matrix):
    from pytest_quantperf.accuracy import default_text

    lm = quant_model(suite_model, quant=quant, compute_dtype=compute)
    quantperf.generate(lm, PROMPT, max_new_tokens=MAX_NEW)
    if not lm.synthetic:
        text = default_text()
        quantperf.perplexity(lm, text[:PPL_CHARS] if PPL_CHARS else text)
        quantperf.multiple_choice(lm, "builtin", limit=MC_LIMIT)
    res = quantperf.results
    mem = "vram_mb" if "vram_mb" in res else "host_rss_mb"
    matrix[row] = {name: res[name].value if name in res else float("nan")
                   for name in ("accuracy", "perplexity", "footprint_mb", "tpot_ms", "tokens_per_s", mem)}
    assert res["tokens_per_s"].value > 0


def test_footprints_follow_the_bit_widths(matrix):
    """fp32 > 16-bit > int8 > 4-bit: a matrix whose sizes disagree with the bit widths is wrong."""
    need = ("fp32", "bf16", "int8", "nf4@fp16", "fp4@fp16")
    if not all(r in matrix for r in need):
        pytest.skip("needs the fp32, bf16, int8 and 4-bit rows of this run")
    fp = {r: matrix[r]["footprint_mb"] for r in need}
    assert fp["fp32"] > fp["bf16"] > fp["int8"] > fp["nf4@fp16"]
    assert fp["nf4@fp16"] == pytest.approx(fp["fp4@fp16"], rel=0.01)  # same packing, other code book
    if "fp16" in matrix:
        assert matrix["fp16"]["footprint_mb"] == pytest.approx(fp["bf16"], rel=0.001)
