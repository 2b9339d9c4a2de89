"""Quantization beyond bitsandbytes on the CPU, driven through the fixture as a user does:
torchao int8 (weight-only and dynamic), quanto int8/int4, ``quantization_config=`` and a
pre-quantized checkpoint made once in the run; the clear errors of what cannot run here.

One pytester run holds the loads (the session cache shares them between its tests); the
footprints are checked against the bytes of the tensors the weights really hold, summed in the
test itself from ``__tensor_flatten__``, not by the plugin's own counter.
"""
from __future__ import annotations

import json

import pytest
# imported before any pytester run (see tests/test_plugin.py)
import torch  # noqa: F401

pytest.importorskip("torchao")
pytest.importorskip("optimum.quanto")

RUN = ("--quantperf-repeat=1", "--quantperf-warmup=0", "-p", "no:cacheprovider")

METHODS_SUITE = '''
import pytest
import torch

METHODS = {
    # quant: (method, layer kind, bytes per quantized weight at most, footprint budget MiB)
    "torchao-int8": ("torchao", "Int8Tensor", 1.1, 215),
    "torchao-int8-dyn": ("torchao", "Int8Tensor+act", 1.1, 215),
    "quanto-int8": ("quanto", "QLinear/qint8", 1.1, 215),
    "quanto-int4": ("quanto", "QLinear/qint4", 0.6, 112),
}


TEXT = ("The light bulb was developed by many inventors in the nineteenth century. Thomas Edison made a "
        "practical one in 1879, and his company sold electric light to whole cities.")


def real_bytes(model):
    """What the weights hold: plain tensors' bytes; a subclass' inner tensors, recursively."""
    def inner(t):
        if type(t) in (torch.Tensor, torch.nn.Parameter):
            return t.numel() * t.element_size()
        names, _ = t.__tensor_flatten__()
        return sum(inner(getattr(t, n)) for n in names if getattr(t, n) is not None)

    params = dict(model.named_parameters())  # tied embeddings once
    return sum(inner(p) for p in params.values()) + sum(inner(b) for b in model.buffers())


@pytest.mark.parametrize("quant", list(METHODS))
def test_method(quant, quant_model, quantperf, request):
    method, kind, max_bytes_per_weight, budget = METHODS[quant]
    request.node.add_marker(pytest.mark.quant_budget(footprint_mb=budget))
    lm = quant_model("default", quant=quant)
    s = lm.quant_summary
    assert (s.method, s.quantized_layers, s.layer_kinds, s.plain_linear) == (method, 210, (kind,), 1)
    assert s.params_quantized == 106_168_320 and round(s.quantized_share, 3) == 0.789
    assert lm.footprint_bytes == real_bytes(lm.model)
    assert lm.footprint_bytes == s.predicted_bytes  # the fit formula, to the byte
    quantized = lm.footprint_bytes - 28_311_552 * lm.model.dtype.itemsize  # less the tied embedding
    assert quantized / s.params_quantized < max_bytes_per_weight
    # transformers' own figure does not see inside the tensor subclasses
    assert lm.model.get_memory_footprint() > 2 * lm.footprint_bytes
    r = quantperf.generate(lm, "Who invented the light bulb?", max_new_tokens=4)
    assert r.new_tokens == 4
    res = quantperf.results
    assert res["footprint_mb"].value == pytest.approx(lm.footprint_mb)
    assert res["tokens_per_s"].value > 0


def test_config_passthrough_agrees_with_reference(quant_model, fp16_model, quantperf):
    from transformers import QuantoConfig

    lm = quant_model("default", quantization_config=QuantoConfig(weights="int8"))
    assert lm.label == "default/config:quanto"
    assert (lm.quant_summary.method, lm.quant_summary.quantized_layers) == ("quanto", 210)
    assert lm.footprint_bytes == real_bytes(lm.model)
    assert quant_model("default", quantization_config=QuantoConfig(weights="int8")) is lm  # cached by spec
    c = quantperf.compare(lm, fp16_model("default"), [TEXT])
    assert c.top1_agreement > 0.9 and c.kl_div < 0.05
    quantperf.multiple_choice(lm, "builtin", limit=2)
    assert quantperf.results["accuracy"].value in (0.0, 0.5, 1.0)


@pytest.mark.quant_budget(footprint_mb=100)
def test_tight_budget_fails(quant_model, quantperf):
    quantperf.generate(quant_model("default", quant="torchao-int8"), "Hello", max_new_tokens=2)


def test_checkpoint_made_and_loaded(quant_model, quantperf, tmp_path):
    src = quant_model("default", quant="torchao-int8")
    src.model.save_pretrained(tmp_path / "ckpt", safe_serialization=True)
    src.tokenizer.save_pretrained(tmp_path / "ckpt")
    lm = quant_model(str(tmp_path / "ckpt"), quant="checkpoint")
    s = lm.quant_summary
    assert (s.method, s.quantized_layers, s.layer_kinds) == ("torchao", 210, ("Int8Tensor",))
    assert lm.footprint_bytes == real_bytes(lm.model) == src.footprint_bytes
    assert lm.disk_bytes < 0.45 * 513 * 2**20
    r = quantperf.generate(lm, "Who invented the light bulb?", max_new_tokens=4)
    assert r.new_tokens == 4
'''


def test_methods_load_prove_measure_and_gate(pytester, run_quantperf):
    pytester.makepyfile(test_methods=METHODS_SUITE)
    r = run_quantperf("--quantperf-json=out.json", *RUN, fast=False)
    r.assert_outcomes(passed=6, failed=1)
    r.stdout.fnmatch_lines(["*budget footprint_mb: measured 210.1* MiB, max 100, margin*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    models = {}
    for t in doc["tests"].values():
        models.update(t.get("models") or {})
    q = models["default/quanto-int4"]["quant_summary"]
    assert (q["method"], q["quantized_layers"], q["layer_kinds"]) == ("quanto", 210, ["QLinear/qint4"])
    assert 100 < models["default/quanto-int4"]["footprint_mb"] < 112  # bf16 would be 256.6
    assert models["default/torchao-int8-dyn"]["spec"]["method"] == "torchao"
    assert models["default/config:quanto"]["spec"]["quantization_config"]["weights"] == "int8"


ERRORS_SUITE = '''
import pytest

@pytest.mark.parametrize("quant", ["int9", "torchao-int4", "fp8", "hqq-4bit", "gptq-int4"])
def test_refused(quant, quant_model):
    quant_model("default", quant=quant)


def test_config_that_did_not_apply(quant_model, monkeypatch):
    from pytest_quantperf.models import methods

    monkeypatch.setattr(methods, "quantization_config", lambda spec, *a: None)
    quant_model("default", quant="torchao-int8")


def test_checkpoint_without_quantization(quant_model):
    from pytest_quantperf.models import resolve_source, make_spec

    quant_model(resolve_source(make_spec("default"))[0], quant="checkpoint")
'''


def test_what_cannot_run_here_is_one_clear_line(pytester, run_quantperf):
    from pytest_quantperf.models import methods

    if methods.hqq_on_the_fly():
        pytest.skip("this transformers quantizes with HQQ on the fly: the refusal below is not expected")
    if methods._has("gptqmodel"):
        pytest.skip("gptqmodel is installed here: its missing-package refusal cannot be shown")
    pytester.makepyfile(test_errors=ERRORS_SUITE)
    r = run_quantperf(*RUN, fast=False)
    r.assert_outcomes(failed=7)
    r.stdout.fnmatch_lines([
        "*unknown quant 'int9': use one of fp32, fp16, bf16, int8, nf4, fp4, torchao-int8, torchao-int8-dyn, "
        "torchao-int4, quanto-int8, quanto-int4, gptq-int4, hqq-4bit, fp8, checkpoint, or quantization_config=*",
        "*quant='torchao-int4' needs a CUDA GPU, not cpu: *",
        "*quant='fp8' needs a CUDA GPU, not cpu: *",
        "*quant='hqq-4bit': transformers * cannot quantize with HQQ while loading*PR #45147, open*",
        "*quant='gptq-int4' needs gptqmodel, which is not installed: pip install gptqmodel optimum*",
        "*asked for default/torchao-int8 (torchao) but found no torchao quantized layer (211 plain nn.Linear): "
        "the quantization config did not apply*",
        "*quant='checkpoint' but * has no quantization_config in its config.json: it is not a pre-quantized*",
    ])
    assert "Traceback" not in r.stdout.str()


def _compressed_tensors_checkpoint(path) -> None:
    """A W8A16 (int8 per output channel) compressed-tensors checkpoint of the default model, made
    with compressed-tensors alone: llm-compressor's round-to-nearest path, without its calibration."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                 QuantizationStatus, apply_quantization_config)
    from compressed_tensors.quantization.utils import calculate_qparams

    from pytest_quantperf import models

    lm = models.load(models.make_spec("default", "fp32"))
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(num_bits=8, type="int", symmetric=True,
                                                                             strategy="channel"))
    apply_quantization_config(lm.model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"],
                                                           quantization_status=QuantizationStatus.INITIALIZED))
    for mod in lm.model.modules():
        if getattr(mod, "quantization_scheme", None) is not None:
            w = mod.weight.data
            scale, zp = calculate_qparams(w.amin(1, keepdim=True).clamp(max=0), w.amax(1, keepdim=True).clamp(min=0),
                                          mod.quantization_scheme.weights)
            mod.weight_scale.data.copy_(scale.reshape(mod.weight_scale.shape))
            mod.weight_zero_point.data.copy_(zp.reshape(mod.weight_zero_point.shape))
            mod.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(lm.model)
    compressor.compress_model(lm.model)
    lm.model.save_pretrained(path, safe_serialization=True)
    lm.tokenizer.save_pretrained(path)
    compressor.update_config(str(path))


def test_compressed_tensors_checkpoint_says_it_is_expanded_on_the_cpu(tmp_path):
    pytest.importorskip("compressed_tensors")
    from pytest_quantperf import models

    _compressed_tensors_checkpoint(tmp_path / "ct")
    lm = models.load(models.make_spec(str(tmp_path / "ct"), "checkpoint"))
    s = lm.quant_summary
    assert (s.method, s.quantized_layers, s.expanded_layers) == ("compressed-tensors", 210, 210)
    assert "expanded to full size on cpu" in s.note
    assert lm.disk_bytes < 0.45 * 513 * 2**20  # int8 on disk ...
    assert lm.footprint_bytes > 2 * lm.disk_bytes  # ... dense in memory: the report shows no saving
    text = lm.tokenizer.decode(lm.model.generate(**lm.tokenizer("Who invented the light bulb?", return_tensors="pt"),
                                                 max_new_tokens=4, do_sample=False)[0])
    assert text.startswith("Who invented the light bulb?") and len(text) > len("Who invented the light bulb?")
