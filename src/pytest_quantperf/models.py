"""Model specs, loading, the default model, synthetic presets and the session cache.

Kept free of pytest so the ``quantperf`` command and benchmarks load models the same way the
fixtures do. torch, transformers and bitsandbytes are imported inside functions: importing this
module costs nothing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import ModelError, QuantMismatchError  # noqa: F401 (re-exported: their old home)
from .sources import (DEFAULT_GGUF, DEFAULT_MODEL, SYNTHETIC_PRESETS, cache_root,  # noqa: F401 (re-exported)
                      default_gguf_path, file_sha256, gguf_to_safetensors, synthetic_config)
from .weights import measured_weight_bytes  # noqa: F401 (re-exported)

QUANTS = ("fp32", "fp16", "bf16", "int8", "nf4", "fp4")
DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides what a load produces; the session cache is keyed by it."""

    model: str = "default"
    quant: str = "fp16"
    compute_dtype: str | None = None
    double_quant: bool | None = None
    device: str = "cpu"
    trust_remote_code: bool = False
    load_kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def synthetic(self) -> bool:
        return self.model.startswith("synthetic:")

    @property
    def label(self) -> str:
        """Short human name: ``default/nf4+dq@bf16``."""
        name = self.model
        if not name.startswith("synthetic:") and (os.sep in name or name.endswith(".gguf")):
            name = Path(name).name
        lab = f"{name}/{self.quant}"
        if self.double_quant:
            lab += "+dq"
        if self.compute_dtype:
            lab += f"@{short_dtype(self.compute_dtype)}"
        for k, v in self.load_kwargs:
            if k in ("device_map", "max_memory"):
                lab += f",{k}"
        return lab

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "quant": self.quant, "compute_dtype": self.compute_dtype,
                "double_quant": self.double_quant, "device": self.device,
                "trust_remote_code": self.trust_remote_code,
                "load_kwargs": {k: _jsonable(v) for k, v in self.load_kwargs}}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return repr(v)


def _freeze(v: Any) -> Any:
    if isinstance(v, Mapping):
        return tuple(sorted(((k, _freeze(x)) for k, x in v.items()), key=lambda kv: str(kv[0])))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], (str, int))
                                          for x in v):
        return {k: _thaw(x) for k, x in v}
    return v


def short_dtype(name: str) -> str:
    n = normalize_dtype(name)
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[n]


def normalize_dtype(name: Any) -> str:
    s = str(name).replace("torch.", "")
    if s not in DTYPES:
        raise ModelError(f"unknown dtype {name!r}: use one of fp32, fp16, bf16")
    return DTYPES[s]


def resolve_device(device: str | None, *, cuda_available: bool | None = None) -> str:
    """``auto|cpu|cuda|cuda:N`` → a concrete device string; CUDA asked for but absent is an error."""
    device = (device or "auto").strip()
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if device == "auto":
        return "cuda:0" if cuda_available else "cpu"
    if device == "cpu":
        return "cpu"
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not m:
        raise ModelError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if not cuda_available:
        raise ModelError(
            f"device {device!r} was asked for but CUDA is not available here "
            "(torch.cuda.is_available() is False): use --quantperf-device=cpu or auto, or run on a GPU machine")
    idx = int(m.group(1) or 0)
    import torch

    if idx >= torch.cuda.device_count():
        raise ModelError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return f"cuda:{idx}"


def make_spec(model: str = "default", quant: str = "fp16", *, compute_dtype: str | None = None,
              double_quant: bool | None = None, device: str = "cpu", trust_remote_code: bool = False,
              **load_kwargs: Any) -> ModelSpec:
    """Validate user arguments into a spec; errors name the bad argument and the valid choices."""
    if not isinstance(model, str) or not model:
        raise ModelError(f"model must be a non-empty string, got {model!r}")
    q = str(quant).lower()
    if q not in QUANTS:
        raise ModelError(f"unknown quant {quant!r}: use one of {', '.join(QUANTS)}")
    if compute_dtype is not None:
        compute_dtype = normalize_dtype(compute_dtype)
    if double_quant and q not in ("nf4", "fp4"):
        raise ModelError(f"double_quant applies to nf4/fp4 only, not {q}")
    if q not in ("nf4", "fp4"):
        double_quant = None
    elif double_quant is None:
        double_quant = False
    if model.startswith("synthetic:"):
        preset = model.split(":", 1)[1]
        if preset not in SYNTHETIC_PRESETS:
            raise ModelError(f"unknown synthetic preset {preset!r}: use one of "
                             + ", ".join(f"synthetic:{p}" for p in SYNTHETIC_PRESETS))
    for bad in ("trust_remote_code", "quantization_config", "use_safetensors"):
        if bad in load_kwargs:
            raise ModelError(f"pass {bad} through the fixture's own arguments, not load_kwargs")
    return ModelSpec(model=model, quant=q, compute_dtype=compute_dtype, double_quant=double_quant,
                     device=device, trust_remote_code=bool(trust_remote_code),
                     load_kwargs=tuple(sorted((k, _freeze(v)) for k, v in load_kwargs.items())))


# --------------------------------------------------------------------------- synthetic presets

class ByteTokenizer:
    """Byte-level tokenizer for synthetic models: they have no vocabulary of their own.

    A prompt of n UTF-8 bytes is n tokens, so prompt lengths are honest and deterministic.
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.eos_token_id = None
        self.pad_token_id = 0
        self.padding_side = "left"

    def encode(self, text: str) -> list[int]:
        return [1 + (b % (self.vocab_size - 2)) for b in text.encode("utf-8")]

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return "".join(chr(32 + (int(i) - 1) % 95) for i in ids)

    def __call__(self, texts: str | list[str], return_tensors: str | None = None, padding: bool = False, **_: Any):
        import torch

        batch = [texts] if isinstance(texts, str) else list(texts)
        enc = [self.encode(t) or [1] for t in batch]
        n = max(len(e) for e in enc)
        ids = [[self.pad_token_id] * (n - len(e)) + e for e in enc]
        mask = [[0] * (n - len(e)) + [1] * len(e) for e in enc]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


# --------------------------------------------------------------------------- default model / GGUF

def resolve_source(spec: ModelSpec, default_model: str | None = None,
                   progress: Callable[[str], None] | None = None) -> tuple[str, dict[str, Any]]:
    """Where the weights come from: (path or hub id, extra from_pretrained kwargs)."""
    name = spec.model
    if name == "default":
        name = default_model or "default"
    if name in ("default", DEFAULT_MODEL):
        with _quiet_hf():
            return str(gguf_to_safetensors(default_gguf_path(), progress=progress)), {}
    if name.startswith("synthetic:"):
        return name, {}
    p = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not p.is_file():
            raise ModelError(f"GGUF file {name!r} does not exist")
        return str(gguf_to_safetensors(p.resolve(), progress=progress)), {}
    if p.is_dir():
        if not (list(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").exists()):
            raise ModelError(
                f"{name!r} has no .safetensors weights: only safetensors or GGUF are loaded "
                "(no pickle-based .bin files); convert it with save_pretrained(safe_serialization=True)")
        return str(p), {}
    if p.exists() or name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelError(f"model path {name!r} does not exist (and is not a hub id of the form org/name)")
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        return name, {}
    raise ModelError(f"model {name!r} is neither a directory, a .gguf file, a hub id, 'default' nor synthetic:<preset>")


# --------------------------------------------------------------------------- the loaded model

@dataclass(frozen=True)
class QuantSummary:
    """What the loaded model really is: the proof that the quantization applied."""

    quant: str
    linear4bit: int
    linear8bit: int
    plain_linear: int
    quant_types: tuple[str, ...]
    compute_dtypes: tuple[str, ...]
    double_quant: tuple[bool, ...]
    params_total: int
    params_quantized: int
    footprint_bytes: int
    predicted_bytes: int | None

    @property
    def quantized_share(self) -> float:
        return self.params_quantized / self.params_total if self.params_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"quant": self.quant, "linear4bit": self.linear4bit, "linear8bit": self.linear8bit,
                "plain_linear": self.plain_linear, "quant_types": list(self.quant_types),
                "compute_dtypes": list(self.compute_dtypes), "double_quant": list(self.double_quant),
                "params_total": self.params_total, "params_quantized": self.params_quantized,
                "quantized_share": round(self.quantized_share, 4),
                "footprint_bytes": self.footprint_bytes, "predicted_bytes": self.predicted_bytes}


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model handle: what fixtures return and what ``quantperf`` measures.

    ``reference`` marks the handle given out by ``fp16_model``: its metrics are recorded under
    ``ref.<name>`` and ``*_vs_ref`` budgets compare against them.
    """

    model: Any
    tokenizer: Any
    spec: ModelSpec
    device: str
    load_s: float
    footprint_bytes: int
    disk_bytes: int
    quant_summary: QuantSummary | None = None
    source: str = ""
    reference: bool = False
    backend: str = "transformers"

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def synthetic(self) -> bool:
        return self.spec.synthetic

    @property
    def footprint_mb(self) -> float:
        return self.footprint_bytes / 2**20

    @property
    def disk_mb(self) -> float:
        return self.disk_bytes / 2**20

    def as_reference(self) -> "LoadedModel":
        return replace(self, reference=True)

    def summary(self) -> dict[str, Any]:
        split = None
        hf_map = getattr(self.model, "hf_device_map", None)
        if hf_map and len(set(map(str, hf_map.values()))) > 1:
            with contextlib.suppress(Exception):
                split = {k: round(v / 2**20, 1) for k, v in per_device_bytes(self.model).items()}
        return {"label": self.label, "per_device_mb": split, "spec": self.spec.to_dict(), "device": self.device,
                "source": self.source, "backend": self.backend,
                "load_s": round(self.load_s, 3), "footprint_mb": round(self.footprint_mb, 2),
                "disk_mb": round(self.disk_mb, 2), "reference": self.reference,
                "quant_summary": self.quant_summary.to_dict() if self.quant_summary else None}


def torch_dtype(name: str):
    import torch

    return getattr(torch, normalize_dtype(name))


def default_compute_dtype(device: str) -> str:
    """fp16 on CUDA (bitsandbytes' fast path); float32 on the CPU, as transformers does."""
    return "float16" if device.startswith("cuda") else "float32"


def weight_dtype(spec: ModelSpec) -> str:
    """The dtype of unquantized weights (embeddings, norms, lm_head, or the whole model)."""
    if spec.quant in ("fp32", "fp16", "bf16"):
        return normalize_dtype(spec.quant)
    return spec.compute_dtype or default_compute_dtype(spec.device)


def bnb_config(spec: ModelSpec):
    from transformers import BitsAndBytesConfig

    if spec.quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if spec.quant in ("nf4", "fp4"):
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=spec.quant,
            bnb_4bit_use_double_quant=bool(spec.double_quant),
            bnb_4bit_compute_dtype=torch_dtype(spec.compute_dtype or default_compute_dtype(spec.device)))
    return None


def _dir_bytes(path: str) -> int:
    p = Path(path)
    if not p.exists():
        return 0
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.iterdir() if f.is_file() and f.suffix in (".safetensors", ".gguf"))


@contextlib.contextmanager
def _allocated_delta(device: str) -> Iterator[list[int]]:
    out = [0]
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out[0] = torch.cuda.memory_allocated(device) - before
    else:
        yield out


def _seeded_init(model, seed: int) -> None:
    """Fill weights with small seeded values fast (normal init of 7B on the host is slow)."""
    import torch

    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.uniform_(-0.02, 0.02, generator=g)


def _dispatch(model, kwargs: Mapping[str, Any]):
    """Spread a model built on the host over GPUs (and the CPU) as accelerate's device_map does."""
    from accelerate import dispatch_model, infer_auto_device_map

    device_map = kwargs.get("device_map")
    if device_map == "auto" or device_map in ("balanced", "sequential"):
        device_map = infer_auto_device_map(model, max_memory=kwargs.get("max_memory"),
                                           no_split_module_classes=getattr(model, "_no_split_modules", None) or [])
    return dispatch_model(model, device_map=device_map)


def per_device_bytes(model) -> dict[str, int]:
    """Weight bytes per device, for models spread with device_map.

    Modules that accelerate offloads to the CPU keep meta tensors in the model and the real
    weights in their hook's ``weights_map``: those bytes count for "cpu".
    """
    out: dict[str, int] = {}
    seen: set[int] = set()
    for m in model.modules():
        wm = getattr(getattr(m, "_hf_hook", None), "weights_map", None)
        for name, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if t.device.type == "meta":
                if wm is None:
                    continue
                with contextlib.suppress(Exception):
                    real = wm[name]
                    if id(real) not in seen:
                        seen.add(id(real))
                        out[str(real.device)] = out.get(str(real.device), 0) + real.numel() * real.element_size()
                continue
            if t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            key = str(t.device)
            out[key] = out.get(key, 0) + t.numel() * t.element_size()
    return out


def quantize_in_memory(model, spec: ModelSpec) -> None:
    """Swap every ``nn.Linear`` except ``lm_head`` for a bitsandbytes layer quantized on the device.

    This is what transformers does while loading a checkpoint with a BitsAndBytesConfig, without
    the round trip through disk that random weights would otherwise need.
    """
    import bitsandbytes as bnb
    import torch
    from torch import nn

    device = torch.device(spec.device)
    cdt = torch_dtype(spec.compute_dtype or default_compute_dtype(spec.device))
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.endswith("lm_head")]
    for name, lin in targets:
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        attr = name.rsplit(".", 1)[-1]
        w = lin.weight.data
        if spec.quant in ("nf4", "fp4"):
            new = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                    compute_dtype=cdt, compress_statistics=bool(spec.double_quant),
                                    quant_type=spec.quant, device="meta")
            new.weight = bnb.nn.Params4bit(w.to(cdt), requires_grad=False, compress_statistics=bool(spec.double_quant),
                                           quant_type=spec.quant, module=new)._quantize(device)
        else:
            new = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                      has_fp16_weights=False, threshold=6.0, device="meta")
            new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)._quantize(device)
        if lin.bias is not None:
            new.bias = nn.Parameter(lin.bias.data.to(cdt), requires_grad=False)
        setattr(parent, attr, new)
        del lin, w
    if device.type == "cuda":
        torch.cuda.empty_cache()


def inspect_quantization(model, spec: ModelSpec, footprint_bytes: int) -> QuantSummary:
    """Count what the model holds: bitsandbytes layers, their settings, the quantized share."""
    from torch import nn

    n4 = n8 = plain = 0
    qtypes, cdts, dqs = set(), set(), set()
    qparams = 0
    total = 0
    try:
        import bitsandbytes as bnb

        L4, L8 = bnb.nn.Linear4bit, bnb.nn.Linear8bitLt
    except Exception:  # bitsandbytes absent: nothing can be quantized
        L4 = L8 = ()
    for name, m in model.named_modules():
        if L4 and isinstance(m, L4):
            n4 += 1
            qparams += m.in_features * m.out_features
            qs = getattr(m.weight, "quant_state", None)
            qtypes.add(getattr(m.weight, "quant_type", "?"))
            cdts.add(str(m.compute_dtype).replace("torch.", "") if m.compute_dtype is not None else "float32")
            dqs.add(bool(getattr(qs, "nested", False)) if qs is not None else bool(m.weight.compress_statistics))
        elif L8 and isinstance(m, L8):
            n8 += 1
            qparams += m.in_features * m.out_features
        elif isinstance(m, nn.Linear):
            plain += 1
    # 4-bit params are packed two per byte: count them as logical parameters
    seen: set[int] = set()
    for name, m in model.named_modules():
        for pn, p in m.named_parameters(recurse=False):
            if id(p) in seen:  # tied embeddings count once
                continue
            seen.add(id(p))
            if L4 and isinstance(m, L4) and pn == "weight":
                total += m.in_features * m.out_features
            elif L8 and isinstance(m, L8) and pn == "weight":
                total += m.in_features * m.out_features
            else:
                total += p.numel()
    predicted = None
    with contextlib.suppress(Exception):
        from . import fit

        predicted = int(fit.predict(model.config, spec.quant, double_quant=bool(spec.double_quant),
                                    compute_dtype=spec.compute_dtype, device=spec.device).weight_bytes)
    return QuantSummary(quant=spec.quant, linear4bit=n4, linear8bit=n8, plain_linear=plain,
                        quant_types=tuple(sorted(qtypes)), compute_dtypes=tuple(sorted(cdts)),
                        double_quant=tuple(sorted(dqs)), params_total=total, params_quantized=qparams,
                        footprint_bytes=footprint_bytes, predicted_bytes=predicted)


def verify_quantization(summary: QuantSummary, spec: ModelSpec, *, footprint_tolerance: float = 0.05) -> None:
    """Refuse a model that is not what was asked: the silent unquantized load users fear."""
    asked = spec.label
    if spec.quant in ("nf4", "fp4"):
        if summary.linear4bit == 0:
            raise QuantMismatchError(
                f"asked for {asked} but found no bitsandbytes Linear4bit layer "
                f"({summary.plain_linear} plain nn.Linear, {summary.linear8bit} Linear8bitLt): "
                "the quantization config did not apply")
        if summary.quant_types != (spec.quant,):
            raise QuantMismatchError(f"asked for {asked} but the 4-bit layers use quant type(s) {summary.quant_types}")
        want_cdt = spec.compute_dtype or default_compute_dtype(spec.device)
        if summary.compute_dtypes != (want_cdt,):
            raise QuantMismatchError(f"asked for {asked} (compute dtype {want_cdt}) but found {summary.compute_dtypes}")
        if summary.double_quant != (bool(spec.double_quant),):
            raise QuantMismatchError(
                f"asked for {asked} with double_quant={bool(spec.double_quant)} but found {summary.double_quant}")
    elif spec.quant == "int8":
        if summary.linear8bit == 0:
            raise QuantMismatchError(
                f"asked for {asked} but found no bitsandbytes Linear8bitLt layer "
                f"({summary.plain_linear} plain nn.Linear, {summary.linear4bit} Linear4bit): "
                "the quantization config did not apply")
    else:
        if summary.linear4bit or summary.linear8bit:
            raise QuantMismatchError(f"asked for {asked} (unquantized) but found bitsandbytes layers")
    if summary.predicted_bytes and summary.footprint_bytes:
        err = abs(summary.footprint_bytes - summary.predicted_bytes) / summary.predicted_bytes
        if err > footprint_tolerance:
            raise QuantMismatchError(
                f"asked for {asked}: the weights occupy {summary.footprint_bytes / 2**20:.1f} MiB but the bit "
                f"widths predict {summary.predicted_bytes / 2**20:.1f} MiB ({err:.1%} apart, more than "
                f"{footprint_tolerance:.0%})")


@contextlib.contextmanager
def _quiet_hf() -> Iterator[None]:
    """No tqdm bars inside test output: the plugin prints one progress line per load instead."""
    try:
        from transformers.utils import logging as hf_logging
    except Exception:
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load(spec: ModelSpec, *, default_model: str | None = None, verify: bool = True,
         progress: Callable[[str], None] | None = None) -> LoadedModel:
    """Load (or build) the model a spec describes, measure its real footprint and check it."""
    with _quiet_hf():
        return _load(spec, default_model=default_model, verify=verify, progress=progress)


def _load(spec: ModelSpec, *, default_model: str | None, verify: bool,
          progress: Callable[[str], None] | None) -> LoadedModel:
    import torch

    if spec.quant in ("int8", "nf4", "fp4") and importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"{spec.quant} needs bitsandbytes: pip install bitsandbytes")
    t0 = time.perf_counter()
    source, extra = resolve_source(spec, default_model, progress)
    kwargs = {k: _thaw(v) for k, v in spec.load_kwargs}
    multi = "device_map" in kwargs
    try:
        with _allocated_delta(spec.device) as delta:
            if spec.synthetic:
                if progress:
                    progress(f"building {spec.label} on {spec.device} (random weights, real shapes)")
                from transformers import AutoModelForCausalLM

                cfg = synthetic_config(spec.model)
                dt = torch_dtype("float16" if spec.device.startswith("cuda") and spec.quant != "fp32" else weight_dtype(spec))
                if spec.quant in ("fp32", "fp16", "bf16"):
                    dt = torch_dtype(spec.quant)
                if multi and spec.quant in ("int8", "nf4", "fp4"):
                    raise ModelError(f"{spec.label}: device_map with synthetic models works for fp32/fp16/bf16; "
                                     "quantized synthetic models are built on one device")
                with torch.device("cpu" if multi else spec.device):
                    model = AutoModelForCausalLM.from_config(cfg, dtype=dt)
                _seeded_init(model, 0)
                if multi:
                    model = _dispatch(model, kwargs)
                if spec.quant in ("int8", "nf4", "fp4"):
                    quantize_in_memory(model, spec)
                    # unquantized parts follow the compute dtype, as a checkpoint load would
                    wdt = torch_dtype(weight_dtype(spec))
                    for mod in model.modules():
                        for pn, p in list(mod.named_parameters(recurse=False)):
                            if p.dtype.is_floating_point and p.dtype != wdt and not hasattr(p, "quant_state") \
                                    and p.dtype != torch.int8:
                                p.data = p.data.to(wdt)
                model.eval()
                tokenizer = ByteTokenizer(cfg.vocab_size)
                disk = 0
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                if progress:
                    progress(f"loading {spec.label} from {source} on {spec.device}")
                q = bnb_config(spec)
                dt = torch_dtype(weight_dtype(spec))
                load_kw: dict[str, Any] = dict(dtype=dt, use_safetensors=True,
                                               trust_remote_code=spec.trust_remote_code)
                if q is not None:
                    load_kw["quantization_config"] = q
                if not multi:
                    load_kw["device_map"] = {"": spec.device}
                load_kw.update(extra)
                load_kw.update(kwargs)
                try:
                    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
                    model = AutoModelForCausalLM.from_pretrained(source, **load_kw)
                except OSError as e:
                    raise ModelError(
                        f"could not load {source!r}: {e}. For a hub id, download it first (huggingface-cli "
                        "download) or point --quantperf-model at a local directory; HF_HUB_OFFLINE is honoured") from e
                model.eval()
                disk = _dir_bytes(source) if os.path.exists(source) else 0
                if spec.model.endswith(".gguf"):
                    disk = _dir_bytes(spec.model)
    except torch.cuda.OutOfMemoryError as e:
        raise ModelError(f"CUDA out of memory while loading {spec.label} on {spec.device}: {e}") from e
    load_s = time.perf_counter() - t0
    if spec.device.startswith("cuda") and not multi:
        footprint = delta[0] if delta[0] > 0 else measured_weight_bytes(model)
    elif multi:
        footprint = sum(per_device_bytes(model).values())  # offloaded weights live in hooks, not the model
    else:
        footprint = measured_weight_bytes(model)
    summary = inspect_quantization(model, spec, footprint)
    if verify:
        verify_quantization(summary, spec)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, device=spec.device, load_s=load_s,
                       footprint_bytes=footprint, disk_bytes=disk, quant_summary=summary, source=source)


# --------------------------------------------------------------------------- the session cache

@dataclass
class ModelCache:
    """Loaded models of one session, keyed by spec; least recently used go first when CUDA is full."""

    default_model: str | None = None
    progress: Callable[[str], None] | None = None
    _items: "OrderedDict[ModelSpec, LoadedModel]" = field(default_factory=OrderedDict)
    loads: int = 0

    def get(self, spec: ModelSpec) -> LoadedModel:
        if spec in self._items:
            self._items.move_to_end(spec)
            return self._items[spec]
        if spec.device.startswith("cuda"):
            self._make_room(spec)
        try:
            lm = load(spec, default_model=self.default_model, progress=self.progress)
        except ModelError as e:
            if spec.device.startswith("cuda") and "out of memory" in str(e) and self._items:
                self.clear()
                lm = load(spec, default_model=self.default_model, progress=self.progress)
            else:
                raise
        self._items[spec] = lm
        self.loads += 1
        return lm

    def _make_room(self, spec: ModelSpec) -> None:
        import torch

        need = None
        with contextlib.suppress(Exception):
            from . import fit

            need = fit.predict(spec.model if spec.synthetic else resolve_source(spec, self.default_model)[0],
                               spec.quant, double_quant=bool(spec.double_quant),
                               compute_dtype=spec.compute_dtype, device=spec.device).peak_bytes
        if need is None:
            return
        dev = torch.device(spec.device)
        while self._items:
            free, _total = torch.cuda.mem_get_info(dev)
            if free >= need * 1.1:
                return
            self.evict_oldest()

    def evict_oldest(self) -> None:
        import gc

        spec, lm = self._items.popitem(last=False)
        del lm
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def clear(self) -> None:
        while self._items:
            self.evict_oldest()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, spec: ModelSpec) -> bool:
        return spec in self._items
