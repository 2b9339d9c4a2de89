"""What a load is asked for, validated at the edge: ``ModelSpec`` (the session cache's key),
quant and dtype names, the device rule. Pure data and string rules, so the CLI, ``fit`` and
the fixtures agree on names without importing torch (only ``resolve_device`` and
``torch_dtype`` touch it, when called).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ModelError
from .sources import SYNTHETIC_PRESETS


BNB_QUANTS = ("int8", "nf4", "fp4")
# quantizations beyond bitsandbytes, applied by transformers' own quantizers (see ``methods``)
METHOD_QUANTS = ("torchao-int8", "torchao-int8-dyn", "torchao-int4", "quanto-int8", "quanto-int4",
                 "gptq-int4", "hqq-4bit", "fp8", "checkpoint")
QUANTS = ("fp32", "fp16", "bf16") + BNB_QUANTS + METHOD_QUANTS
# ``quant`` of a spec made from ``quantization_config=``: the config decides the method
CONFIG_QUANT = "config"
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
    # ``quantization_config=``: its JSON (the cache key) and the object itself (what transformers gets)
    qconfig_json: str | None = None
    qconfig: Any = field(default=None, compare=False, hash=False, repr=False)
    calibration: tuple[str, ...] | None = None  # gptq-int4's calibration texts; None: the built-in text

    @property
    def method(self) -> str:
        """The quantizer family: ``none``, ``bitsandbytes``, ``torchao``, ``quanto``, ``gptq``, ``hqq``,
        ``fp8``, ``checkpoint`` or, for ``quantization_config=``, the config's ``quant_method``."""
        if self.quant in ("fp32", "fp16", "bf16"):
            return "none"
        if self.quant in BNB_QUANTS:
            return "bitsandbytes"
        if self.quant == CONFIG_QUANT:
            return config_method(self.qconfig_json)
        return self.quant.split("-", 1)[0]

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
        if self.quant == CONFIG_QUANT:
            lab = f"{name}/config:{self.method}"
        if self.calibration is not None:
            lab += f"+calib{len(self.calibration)}"
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
                "load_kwargs": {k: _jsonable(v) for k, v in self.load_kwargs},
                "method": self.method,
                "quantization_config": json.loads(self.qconfig_json) if self.qconfig_json else None,
                "calibration_texts": len(self.calibration) if self.calibration is not None else None}


def config_method(qconfig_json: str | None) -> str:
    if not qconfig_json:
        return "none"
    with contextlib.suppress(Exception):
        return str(json.loads(qconfig_json).get("quant_method") or "unknown").replace("_", "-")
    return "unknown"


def _config_json(cfg: Any) -> str:
    """A transformers quantization config as canonical JSON: the session cache's key for it."""
    if isinstance(cfg, Mapping):
        d = dict(cfg)
    elif hasattr(cfg, "to_dict"):
        d = cfg.to_dict()
    else:
        raise ModelError(f"quantization_config must be a transformers quantization config (e.g. "
                         f"TorchAoConfig(...), QuantoConfig(...)), got {type(cfg).__name__}")
    method = d.get("quant_method")
    d["quant_method"] = getattr(method, "value", method)
    return json.dumps(d, sort_keys=True, default=repr)


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
              quantization_config: Any = None, calibration: Any = None, **load_kwargs: Any) -> ModelSpec:
    """Validate user arguments into a spec; errors name the bad argument and the valid choices."""
    if not isinstance(model, str) or not model:
        raise ModelError(f"model must be a non-empty string, got {model!r}")
    q = str(quant).lower()
    qjson = None
    if quantization_config is not None:
        if q not in ("fp16", CONFIG_QUANT):
            raise ModelError(f"pass either quant={quant!r} or quantization_config=, not both: the config "
                             "decides the quantization")
        q = CONFIG_QUANT
        qjson = _config_json(quantization_config)
        if model.startswith("synthetic:"):
            raise ModelError("quantization_config= needs real weights: synthetic models are quantized in "
                             "memory with bitsandbytes only")
    elif q == CONFIG_QUANT:
        raise ModelError("quant='config' needs quantization_config=<a transformers quantization config>")
    if q not in QUANTS + (CONFIG_QUANT,):
        raise ModelError(f"unknown quant {quant!r}: use one of {', '.join(QUANTS)}, "
                         "or quantization_config=<a transformers quantization config>")
    if q in METHOD_QUANTS and model.startswith("synthetic:"):
        raise ModelError(f"quant={q!r} needs real weights (a directory, hub id, .gguf or 'default'): "
                         "synthetic models are quantized in memory with bitsandbytes only")
    calib = None
    if calibration is not None:
        if q != "gptq-int4":
            raise ModelError(f"calibration= applies to gptq-int4 only, not {q}")
        if isinstance(calibration, str) or not all(isinstance(t, str) and t for t in calibration) \
                or not calibration:
            raise ModelError("calibration= must be a non-empty list of non-empty strings (the texts GPTQ "
                             "calibrates on)")
        calib = tuple(calibration)
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
    for bad in ("trust_remote_code", "use_safetensors"):
        if bad in load_kwargs:
            raise ModelError(f"pass {bad} through the fixture's own arguments, not load_kwargs")
    return ModelSpec(model=model, quant=q, compute_dtype=compute_dtype, double_quant=double_quant,
                     device=device, trust_remote_code=bool(trust_remote_code),
                     load_kwargs=tuple(sorted((k, _freeze(v)) for k, v in load_kwargs.items())),
                     qconfig_json=qjson, qconfig=quantization_config, calibration=calib)


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
    return spec.compute_dtype or method_compute_dtype(spec.quant, spec.device)


def method_compute_dtype(quant: str, device: str) -> str:
    """The default compute dtype of a quantization on a device.

    quanto's int4 has a CPU kernel (TinyGemm) for bf16 only: in float32 it dequantizes every
    weight on every call, 10x slower on the CPU runner, so it computes in bf16 there.
    """
    if quant == "quanto-int4" and not device.startswith("cuda"):
        return "bfloat16"
    return default_compute_dtype(device)
