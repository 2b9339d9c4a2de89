"""Will it fit? Weight and peak memory of a model predicted from its config, before any load.

Loading a 7B model only to learn that it does not fit a 6 GiB card costs minutes; its config
alone says how many parameters each layer has, and the bit widths of a quantization say how
many bytes they take. The parameters are counted by building the model on PyTorch's ``meta``
device (shapes without storage, milliseconds even for 70B), which works for any architecture
transformers knows; the KV cache comes from the config fields.

What the weights occupy, per quantization (bitsandbytes, as transformers applies it):

* ``fp32`` / ``fp16`` / ``bf16``: 4 / 2 / 2 bytes per parameter.
* ``nf4`` / ``fp4``: every ``nn.Linear`` except the output head packs two parameters per byte,
  plus one fp32 absmax per block of 64 (0.5 bit/param) and a 16-entry fp32 code per layer.
  With double quantization the absmax values are quantized to 8 bit, with one fp32 absmax per
  256 of them, a 256-entry fp32 code and an offset per layer: ≈0.127 bit/param, a saving of
  ≈0.373 bit/param.
* ``int8`` (LLM.int8): one byte per parameter plus one fp32 scale per output row (``SCB``).
* ``torchao-int8`` / ``torchao-int8-dyn`` (``Int8Tensor``): one int8 per parameter, one scale
  per output row in the parameter dtype and one int8 zero point per row.
* ``quanto-int8``: one int8 per parameter and one scale per output row in the parameter dtype,
  plus two fp32 scalars (input/output scale) per layer.
* ``quanto-int4``: two parameters per byte, a scale and a shift in the parameter dtype per group
  along the input features (group 128, stepped down by 32 until it divides the input width, as
  quanto does), two fp32 scalars per layer; bf16 on the CPU by default (its TinyGemm kernel).
* ``torchao-int4`` (CUDA): two parameters per byte, bf16 scale and zero point per group of 128.
* ``gptq-int4``: packed int4 (``qweight``), per group of 128: fp16 scales and packed int4 zero
  points (``qzeros``), and an int32 ``g_idx`` per input feature.
* ``hqq-4bit``: packed int4, per group of 64 a scale and a zero point in the compute dtype.
* ``fp8`` (CUDA): one byte per parameter and one fp32 scale per 128×128 block.
* ``checkpoint``: a GPTQ/AWQ checkpoint's own bits and group size (from its
  ``quantization_config``); other checkpoints cannot be predicted from the config alone.
* Everything else (embeddings, norms, biases, an untied ``lm_head``) stays in the dtype the
  project's loader gives unquantized weights: the quant's own dtype for fp32/fp16/bf16, else the
  compute dtype, which defaults to fp16 on CUDA and to float32 on the CPU (where transformers
  and bitsandbytes compute in float32). Modules a model keeps in fp32 (``_keep_in_fp32_modules``)
  stay at 4 bytes.

Peak memory adds the KV cache of ``context_len`` tokens × ``batch`` and an activation estimate
(see :func:`activation_estimate`); :meth:`FitPrediction.fits` adds the CUDA context, which
torch's allocator never sees.

The command (``quantperf fit``, :func:`format_prediction`) is :mod:`pytest_quantperf.cli.fit`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence


MIB = 1 << 20
GIB = 1 << 30

QUANTS = ("fp32", "fp16", "bf16", "int8", "nf4", "fp4", "torchao-int8", "torchao-int8-dyn", "torchao-int4",
          "quanto-int8", "quanto-int4", "gptq-int4", "hqq-4bit", "fp8", "checkpoint")
FLOAT_QUANTS = ("fp32", "fp16", "bf16")
# where a prediction must match the measured footprint within 5 %, checked after every load
EXACT_QUANTS = ("fp32", "fp16", "bf16", "int8", "nf4", "fp4", "torchao-int8", "torchao-int8-dyn",
                "quanto-int8", "quanto-int4")
GROUP_QUANTO_INT4 = 128
GROUP_TORCHAO_INT4 = 128
GROUP_GPTQ = 128
GROUP_HQQ = 64
FP8_BLOCK = 128
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_DTYPE_ALIASES = {"fp32": "float32", "float32": "float32", "float": "float32",
                  "fp16": "float16", "float16": "float16", "half": "float16",
                  "bf16": "bfloat16", "bfloat16": "bfloat16"}

BLOCKSIZE_4BIT = 64          # bitsandbytes' default absmax block for 4-bit weights
BLOCKSIZE_NESTED = 256       # block of the second-level (double-quant) absmax
CODE_4BIT_ENTRIES = 16       # fp32 entries of the nf4/fp4 code each QuantState holds
CODE_NESTED_ENTRIES = 256    # fp32 entries of the 8-bit dynamic code of the nested state

# CUDA context, cuBLAS workspaces and kernels loaded by torch: on the device, outside the
# allocator's statistics. On an H100 (driver 580, torch 2.11, CUDA 13) NVML charged the process
# about 750 MiB beyond a 128 MiB tensor; rounded up, so that "fits" errs on the safe side.
CUDA_CONTEXT_BYTES = 768 * MIB


class FitError(ValueError):
    """A prediction was asked of something that cannot be predicted; the message says what to do."""


def predictable(quant: str) -> bool:
    """Whether ``predict`` of this quant is exact enough to check a load's footprint against it."""
    return quant in EXACT_QUANTS


def quanto_group(in_features: int, group: int = GROUP_QUANTO_INT4) -> int | None:
    """quanto's int4 group size for a layer: 128, stepped down by 32 until it divides the width."""
    if in_features <= group:
        return None
    while in_features % group != 0 and group > 32:
        group -= 32
    return group if in_features % group == 0 else None


# --------------------------------------------------------------------------- configs

def normalize_dtype(name: Any) -> str:
    s = str(name).replace("torch.", "").lower()
    if s not in _DTYPE_ALIASES:
        raise FitError(f"unknown dtype {name!r}: use one of fp32, fp16, bf16")
    return _DTYPE_ALIASES[s]


def load_config(source: Any) -> tuple[Any, str]:
    """(transformers config, label) from a config object, a dict, ``synthetic:<preset>``, a local
    directory or ``config.json``, a ``.gguf`` file, ``"default"`` or a hub id in the local cache."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(source, PretrainedConfig):
        return source, getattr(source, "name_or_path", "") or source.model_type
    if isinstance(source, dict):
        d = dict(source)
        model_type = d.pop("model_type", None)
        if not model_type:
            raise FitError("a config dict needs a 'model_type' (e.g. 'llama') to know the architecture")
        for k in ("architectures", "transformers_version", "_name_or_path"):
            d.pop(k, None)
        return AutoConfig.for_model(model_type, **d), str(model_type)
    if not isinstance(source, (str, os.PathLike)):
        raise FitError(f"cannot read a model config from {type(source).__name__}: pass a config, a dict, "
                       "a directory, a .gguf file, a hub id or synthetic:<preset>")
    s = os.fspath(source)
    if s.startswith("synthetic:"):
        from .sources import synthetic_config

        try:
            return synthetic_config(s), s
        except Exception as e:
            raise FitError(str(e)) from e
    if s == "default":
        from .sources import default_gguf_path

        try:
            gguf = default_gguf_path()
        except Exception as e:
            raise FitError(str(e)) from e
        return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name), "default"
    p = Path(s).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name), s
    if p.is_file() and p.name.endswith(".json"):
        with open(p, encoding="utf-8") as f:
            return load_config(json.load(f))[0], s
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FitError(f"{s} is a directory without config.json: point at a transformers model directory")
        return AutoConfig.from_pretrained(str(p)), s
    try:
        return AutoConfig.from_pretrained(s, local_files_only=True), s
    except Exception as e:
        raise FitError(
            f"no config for {s!r}: it is not a local directory, .gguf file or synthetic:<preset>, and the hub id "
            "is not in the local cache (prediction never downloads: run `huggingface-cli download "
            f"{s} config.json` first)") from e


# --------------------------------------------------------------------------- parameter counts

@dataclass(frozen=True)
class ParamCounts:
    """What a model holds, by how quantization treats it."""

    linears: tuple[tuple[int, int], ...]   # (params, out_features) of each quantizable nn.Linear
    other_params: int                      # embeddings, norms, biases, the output head ...
    fp32_params: int                       # params in modules kept in fp32 whatever the dtype
    buffer_bytes: int                      # persistent and non-persistent buffers (rotary tables)
    method: str                            # "meta" or "fields"

    @property
    def linear_params(self) -> int:
        return sum(n for n, _ in self.linears)

    @property
    def total(self) -> int:
        return self.linear_params + self.other_params + self.fp32_params


_COUNT_CACHE: dict[str, ParamCounts] = {}


def count_params(config: Any) -> ParamCounts:
    """Count parameters on the ``meta`` device; fall back to config fields for llama-style decoders."""
    key = None
    try:
        key = config.to_json_string(use_diff=False)
    except Exception:
        pass
    if key is not None and key in _COUNT_CACHE:
        return _COUNT_CACHE[key]
    try:
        counts = _count_on_meta(config)
    except Exception as meta_error:
        try:
            counts = count_from_fields(config)
        except Exception as e:
            raise FitError(f"cannot count the parameters of this {getattr(config, 'model_type', '?')} config: "
                           f"building it on the meta device failed ({meta_error}) and its fields do not "
                           f"describe a llama-style decoder ({e})") from e
    if key is not None:
        _COUNT_CACHE[key] = counts
    return counts


def _skip_patterns(model: Any) -> list[str]:
    """Modules transformers' bitsandbytes integration leaves unquantized (the output head, ties)."""
    skip: list[str] = []
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        skip.extend(get_keys_to_not_convert(model))
    except Exception:
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        skip.extend(n for n, m in model.named_modules() if out is not None and m is out)
    skip.extend(getattr(model, "_keep_in_fp32_modules", None) or [])
    return skip


def _should_convert(name: str, patterns: Sequence[str]) -> bool:
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module

        return bool(should_convert_module(name, list(patterns)))
    except Exception:
        return not any(name == p or name.startswith(p + ".") or name.endswith(p) for p in patterns)


def _count_on_meta(config: Any) -> ParamCounts:
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # pragma: no cover - old transformers
        Conv1D = ()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    skip = _skip_patterns(model)
    fp32_keep = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    fp32_keep += list(getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    linears: list[tuple[int, int]] = []
    other = fp32 = 0
    seen: set[int] = set()
    for name, mod in model.named_modules():
        quantizable = (type(mod) is nn.Linear or (Conv1D and isinstance(mod, Conv1D))) and _should_convert(name, skip)
        kept_fp32 = bool(fp32_keep) and not _should_convert(name, fp32_keep)
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if quantizable and pname == "weight":
                out = p.shape[1] if (Conv1D and isinstance(mod, Conv1D)) else p.shape[0]
                linears.append((p.numel(), int(out)))
            elif kept_fp32:
                fp32 += p.numel()
            else:
                other += p.numel()
    buf = 0
    seen_b: set[int] = set()
    for b in model.buffers():
        if id(b) not in seen_b:
            seen_b.add(id(b))
            buf += b.numel() * b.element_size()
    return ParamCounts(tuple(linears), other, fp32, buf, "meta")


def _g(c: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = c.get(n) if isinstance(c, dict) else getattr(c, n, None)
        if v is not None:
            return v
    return default


def count_from_fields(config: Any) -> ParamCounts:
    """Parameter counts of a llama-style decoder (GQA attention, gated MLP, RMS norms) from fields.

    The fallback when a config cannot be built: biases only where ``attention_bias`` /
    ``mlp_bias`` say so, rotary tables of head_dim/2 fp32 values (two copies, as transformers keeps).
    """
    from ..gpu import text_config

    c = text_config(config)
    H = int(_g(c, "hidden_size"))
    L = int(_g(c, "num_hidden_layers"))
    nh = int(_g(c, "num_attention_heads"))
    nkv = int(_g(c, "num_key_value_heads", default=nh))
    hd = int(_g(c, "head_dim", default=H // nh))
    inter = int(_g(c, "intermediate_size"))
    V = int(_g(c, "vocab_size"))
    tied = bool(_g(c, "tie_word_embeddings", default=True))
    # Qwen2-style models carry q/k/v biases without a config field saying so
    abias = bool(_g(c, "attention_bias", default=False))
    qkv_bias = abias or _g(c, "model_type") in ("qwen2",)
    mbias = bool(_g(c, "mlp_bias", default=False))
    linears: list[tuple[int, int]] = []
    other = V * H + H  # embeddings + final norm
    for _ in range(L):
        for i, (out, inp) in enumerate(((nh * hd, H), (nkv * hd, H), (nkv * hd, H), (H, nh * hd))):
            linears.append((out * inp, out))
            other += out if (abias or (qkv_bias and i < 3)) else 0
        for out, inp in ((inter, H), (inter, H), (H, inter)):
            linears.append((out * inp, out))
            other += out if mbias else 0
        other += 2 * H  # input and post-attention norms
    if not tied:
        other += V * H
    return ParamCounts(tuple(linears), other, 0, 2 * (hd // 2) * 4, "fields")


# --------------------------------------------------------------------------- prediction

@dataclass(frozen=True)
class FitPrediction:
    """Predicted memory of one model, quantization, context and batch; bytes unless named ``_mb``.

    ``weight_bytes`` is everything the loaded weights occupy (packed weights, quantization
    constants, unquantized parameters and buffers): what ``measured_weight_bytes`` measures and
    the ``footprint_mb`` metric reports. ``quant_state_bytes`` is the part of it that the
    quantization constants take. ``peak_bytes`` = weights + KV cache + activations: comparable
    with ``torch.cuda.max_memory_allocated`` after a prefill of ``context_len`` tokens.
    """

    model: str
    quant: str
    device: str
    context_len: int
    batch: int
    param_dtype: str
    compute_dtype: str | None
    double_quant: bool
    params_total: int
    params_quantized: int
    weight_bytes: int
    quant_state_bytes: int
    unquantized_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    peak_bytes: int
    overhead_bytes: int
    count_method: str

    @property
    def weight_mb(self) -> float:
        return self.weight_bytes / MIB

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / MIB

    @property
    def required_mb(self) -> float:
        """Peak plus what lives outside torch's allocator (the CUDA context): what a card must have."""
        return (self.peak_bytes + self.overhead_bytes) / MIB

    @property
    def bits_per_param(self) -> float:
        return 8.0 * self.weight_bytes / self.params_total if self.params_total else float("nan")

    @property
    def bits_per_weight(self) -> float:
        """Bits each quantized weight costs, its scales, zero points and codes included (by group size)."""
        if not self.params_quantized:
            return float("nan")
        return 8.0 * (self.weight_bytes - self.unquantized_bytes) / self.params_quantized

    def fits(self, gpu_mb: float) -> bool:
        """Whether a device with ``gpu_mb`` MiB holds the predicted peak and the CUDA context."""
        return self.required_mb <= float(gpu_mb)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(weight_mb=round(self.weight_mb, 2), peak_mb=round(self.peak_mb, 2),
                 required_mb=round(self.required_mb, 2),
                 bits_per_weight=None if math.isnan(self.bits_per_weight) else round(self.bits_per_weight, 3))
        return d


def _weight_bytes(counts: ParamCounts, quant: str, param_bytes: int, double_quant: bool,
                  bits: int = 4, group: int | None = None) -> tuple[int, int, int]:
    """(weight bytes, quant-state bytes, unquantized bytes) of counted parameters."""
    unquant = counts.other_params * param_bytes + counts.fp32_params * 4 + counts.buffer_bytes
    if quant in ("fp32", "fp16", "bf16"):
        return counts.linear_params * param_bytes + unquant, 0, unquant
    packed = state = 0
    for n, out in counts.linears:
        inp = n // out if out else 0
        if quant in ("torchao-int8", "torchao-int8-dyn"):
            packed += n
            state += out * (param_bytes + 1)  # scale in the parameter dtype, int8 zero point
        elif quant == "quanto-int8":
            packed += n
            state += out * param_bytes + 8
        elif quant == "quanto-int4":
            g = quanto_group(inp)
            packed += (n + 1) // 2
            state += (n // g if g else out) * 2 * param_bytes + 8
        elif quant == "torchao-int4":
            packed += (n + 1) // 2
            state += math.ceil(n / GROUP_TORCHAO_INT4) * 2 * 2
        elif quant == "gptq-int4":
            g = group or GROUP_GPTQ
            groups = math.ceil(inp / g) if g > 0 else 1
            packed += math.ceil(n * bits / 8)
            state += groups * out * 2 + math.ceil(groups * out * bits / 8) + inp * 4
        elif quant == "hqq-4bit":
            packed += (n + 1) // 2
            state += math.ceil(n / GROUP_HQQ) * 2 * param_bytes
        elif quant == "fp8":
            packed += n
            state += math.ceil(out / FP8_BLOCK) * math.ceil(inp / FP8_BLOCK) * 4
    if packed:
        return packed + state + unquant, state, unquant
    if quant in ("nf4", "fp4"):
        for n, _out in counts.linears:
            packed += (n + 1) // 2
            blocks = math.ceil(n / BLOCKSIZE_4BIT)
            state += CODE_4BIT_ENTRIES * 4
            if double_quant:
                state += blocks + 4  # uint8 absmax + fp32 offset
                state += math.ceil(blocks / BLOCKSIZE_NESTED) * 4 + CODE_NESTED_ENTRIES * 4
            else:
                state += blocks * 4
    elif quant == "int8":
        for n, out in counts.linears:
            packed += n
            state += out * 4  # SCB: one fp32 scale per output row
    return packed + state + unquant, state, unquant


def activation_estimate(config: Any, counts: ParamCounts, quant: str, *, context_len: int, batch: int,
                        act_bytes: int) -> int:
    """Transient memory of a prefill of ``context_len`` tokens (the largest moment of a generate call).

    A documented estimate, not a measurement: with B = batch, T = context_len, H = hidden size,
    I = intermediate size, V = vocabulary and a = bytes of the activation dtype,
    * hidden-size buffers: 4·B·T·H·a (residual stream, normed input, attention output, a copy in flight)
      and the q/k/v projections B·T·(heads + 2·kv_heads)·head_dim·a;
    * MLP: 3·B·T·I·a (gate, up and their product);
    * logits: generate keeps only the last position: B·V·(a + 4 + 4) (raw, fp32, processed scores);
    * 4-bit prefill dequantizes the largest weight to the compute dtype; LLM.int8 holds an int8
      copy of the input and an int32 output of the widest layer.
    Attention scores are not materialised (SDPA's flash / memory-efficient kernels).
    """
    from ..gpu import text_config

    c = text_config(config)
    H = int(_g(c, "hidden_size", "n_embd", "d_model", default=0))
    nh = int(_g(c, "num_attention_heads", "n_head", default=1))
    nkv = int(_g(c, "num_key_value_heads", default=nh))
    hd = int(_g(c, "head_dim", default=(H // nh) if nh else 0))
    inter = int(_g(c, "intermediate_size", "n_inner", "ffn_dim", default=4 * H))
    V = int(_g(c, "vocab_size", default=0))
    B, T, a = int(batch), int(context_len), int(act_bytes)
    total = 4 * B * T * H * a + B * T * (nh + 2 * nkv) * hd * a
    total += 3 * B * T * inter * a
    total += B * V * (a + 4 + 4)
    if counts.linears:
        biggest = max(n for n, _ in counts.linears)
        widest = max(out for _, out in counts.linears)
        if quant in ("nf4", "fp4"):
            total += biggest * a
        elif quant == "int8":
            total += B * T * max(H, inter) + B * T * widest * 4
    return int(total)


def _kv_bytes(config: Any, context_len: int, batch: int, dtype_bytes: int) -> int:
    """KV cache of ``batch`` sequences of ``context_len`` tokens; sliding-window layers hold at most the window."""
    from ..gpu import kv_cache_bytes_per_token, text_config

    c = text_config(config)
    per_token = kv_cache_bytes_per_token(c, dtype_bytes)
    layers = int(_g(c, "num_hidden_layers", "n_layer", "num_layers"))
    window = _g(c, "sliding_window")
    types = _g(c, "layer_types")
    if window and types and len(types) == layers:
        per_layer = per_token // layers
        return int(batch * sum(per_layer * (min(context_len, int(window)) if "sliding" in str(t) else context_len)
                               for t in types))
    return int(batch * context_len * per_token)


def default_param_dtype(quant: str, compute_dtype: str | None, device: str) -> str:
    """The dtype unquantized weights get from the project's loader (``models.weight_dtype``)."""
    if quant in ("fp32", "fp16", "bf16"):
        return normalize_dtype(quant)
    if compute_dtype:
        return normalize_dtype(compute_dtype)
    from .spec import method_compute_dtype

    return method_compute_dtype(quant, str(device))


def _checkpoint_quant(source: Any) -> tuple[str, int, int | None]:
    """(quant, bits, group size) of a GPTQ/AWQ checkpoint, from its config's ``quantization_config``."""
    q = None
    if isinstance(source, (str, os.PathLike)) and (Path(source) / "config.json").is_file():
        with open(Path(source) / "config.json", encoding="utf-8") as f:
            q = json.load(f).get("quantization_config")
    if not isinstance(q, dict):
        raise FitError(f"quant 'checkpoint': {source} is not a local checkpoint directory whose config.json "
                       "has a quantization_config")
    method = str(q.get("quant_method", "?")).lower()
    if method in ("gptq", "awq") and q.get("bits"):
        return "gptq-int4", int(q["bits"]), int(q.get("group_size") or GROUP_GPTQ)
    raise FitError(f"quant 'checkpoint': the {method} checkpoint's size cannot be predicted from its config "
                   "(only GPTQ/AWQ bits and group size are); load it and read footprint_mb")


def predict(config_or_model_id: Any, quant: str, *, context_len: int = 2048, batch: int = 1,
            compute_dtype: str | None = None, double_quant: bool = False, device: str = "cuda") -> FitPrediction:
    """Predict weight and peak memory of a model from its config alone (nothing is loaded).

    ``config_or_model_id``: a transformers config, a dict, ``synthetic:<preset>``, a local
    directory, a ``.gguf`` file, ``"default"`` or a cached hub id. ``device`` decides the dtype of
    unquantized parameters (see the module docstring) and whether a CUDA context is counted.
    """
    q = str(quant).lower()
    if q not in QUANTS:
        raise FitError(f"unknown quant {quant!r}: use one of {', '.join(QUANTS)}")
    if double_quant and q not in ("nf4", "fp4"):
        raise FitError(f"double quantization applies to nf4/fp4 only, not {q}")
    for name, v in (("context_len", context_len), ("batch", batch)):
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "context_len" else 1):
            raise FitError(f"{name} must be a {'non-negative' if name == 'context_len' else 'positive'} integer, got {v!r}")
    bits, group = 4, None
    if q == "checkpoint":
        q, bits, group = _checkpoint_quant(config_or_model_id)
    cfg, label = load_config(config_or_model_id)
    counts = count_params(cfg)
    pdt = default_param_dtype(q, compute_dtype, device)
    pbytes = DTYPE_BYTES[pdt]
    weight, state, unquant = _weight_bytes(counts, q, pbytes, bool(double_quant), bits, group)
    kv = _kv_bytes(cfg, context_len, batch, pbytes)
    act = activation_estimate(cfg, counts, q, context_len=context_len, batch=batch, act_bytes=pbytes)
    cdt = None
    if q not in FLOAT_QUANTS:
        cdt = normalize_dtype(compute_dtype) if compute_dtype else pdt
    return FitPrediction(
        model=str(label), quant=q, device=str(device), context_len=context_len, batch=batch,
        param_dtype=pdt, compute_dtype=cdt, double_quant=bool(double_quant) and q in ("nf4", "fp4"),
        params_total=counts.total, params_quantized=counts.linear_params if q not in FLOAT_QUANTS else 0,
        weight_bytes=int(weight), quant_state_bytes=int(state), unquantized_bytes=int(unquant),
        kv_cache_bytes=kv, activation_bytes=act, peak_bytes=int(weight + kv + act),
        overhead_bytes=CUDA_CONTEXT_BYTES if str(device).startswith("cuda") else 0,
        count_method=counts.method)
