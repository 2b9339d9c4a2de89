"""Quantization beyond bitsandbytes: the transformers config each ``quant=`` name stands for, what
it needs (a package, CUDA), and how its quantized layers are recognised after the load.

Each method is applied by transformers' own quantizer, so a load here is the load a team's
serving code does. Recognition uses the quantizers' own classes (torchao's tensor subclasses,
quanto's ``QModuleMixin``, gptqmodel's ``BaseQuantLinear``, hqq's ``HQQLinear``, transformers'
``FP8Linear``, compressed-tensors' ``quantization_scheme``): a name match could not tell a
quantized layer from one that merely looks like it. The packages are imported only when asked.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .spec import CONFIG_QUANT, ModelSpec

# transformers' on-the-fly HQQ path, broken since its loading refactor; the fix is this PR
HQQ_UPSTREAM = "huggingface/transformers PR #45147"
TORCHAO_INT4_GROUP = 128   # Int4WeightOnlyConfig's default group size
HQQ_GROUP = 64
GPTQ_GROUP = 128


@dataclass(frozen=True)
class MethodNeeds:
    """What a ``quant=`` name needs before transformers is asked: modules to import, the pip line, CUDA."""

    modules: tuple[str, ...]
    pip: str
    cuda: str | None = None  # why CUDA is needed, or None


NEEDS: dict[str, MethodNeeds] = {
    "torchao-int8": MethodNeeds(("torchao",), "pip install torchao"),
    "torchao-int8-dyn": MethodNeeds(("torchao",), "pip install torchao"),
    "torchao-int4": MethodNeeds(("torchao",), "pip install torchao",
                                "torchao's int4 weight-only kernels (tinygemm / mslk) run on CUDA sm80+ only"),
    "quanto-int8": MethodNeeds(("optimum.quanto",), "pip install optimum-quanto"),
    "quanto-int4": MethodNeeds(("optimum.quanto",), "pip install optimum-quanto"),
    "gptq-int4": MethodNeeds(("gptqmodel", "optimum"), "pip install gptqmodel optimum"),
    "hqq-4bit": MethodNeeds(("hqq",), "pip install hqq"),
    "fp8": MethodNeeds((), "", "transformers quantizes to FP8 on the fly on CUDA sm89+ (or XPU) only"),
}


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_available(spec: ModelSpec) -> None:
    """Refuse, in one line, a method whose package is missing or that needs a device not used here."""
    needs = NEEDS.get(spec.quant)
    if needs is None:
        return
    # first: installing hqq would not help
    if spec.quant == "hqq-4bit" and not hqq_on_the_fly():
        raise ModelError(f"quant='hqq-4bit': transformers {_version('transformers')} cannot quantize with HQQ while "
                         f"loading (its HQQ quantizer has no quantize ops since the loading refactor; the fix is "
                         f"{HQQ_UPSTREAM}, open): load a saved HQQ checkpoint with quant='checkpoint', or use "
                         "quanto-int4 / nf4 for 4-bit")
    missing = [m for m in needs.modules if not _has(m)]
    if missing:
        raise ModelError(f"quant={spec.quant!r} needs {', '.join(missing)}, which is not installed: {needs.pip}")
    if needs.cuda and not spec.device.startswith("cuda"):
        raise ModelError(f"quant={spec.quant!r} needs a CUDA GPU, not {spec.device}: {needs.cuda}; "
                         "run it with --quantperf-device=cuda on a GPU machine")


def unavailable_reason(quant: str, device: str = "cpu") -> str | None:
    """Why ``quant`` cannot load on ``device`` with what is installed (the one-line refusal), or None.

    For suites that compare every method the machine can run and skip the others by name.
    """
    from .spec import make_spec

    try:
        check_available(make_spec("default", quant, device=device))
    except ModelError as e:
        return str(e)
    return None


def _version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:
        return "?"


def hqq_on_the_fly() -> bool:
    """Whether transformers' HQQ quantizer can quantize at load: it must define its own quantize ops.

    In transformers 5.2x it does not, and the load ends in the base class' NotImplementedError
    ("hqq is not available yet"); asking the class answers without a load.
    """
    try:
        from transformers.quantizers.base import HfQuantizer
        from transformers.quantizers.quantizer_hqq import HqqHfQuantizer
    except Exception:
        return True  # an older layout: let transformers answer
    own = getattr(HqqHfQuantizer, "get_quantize_ops", None)
    base = getattr(HfQuantizer, "get_quantize_ops", None)
    return own is not None and own is not base


def checkpoint_config(source: str) -> dict[str, Any] | None:
    """The ``quantization_config`` a local checkpoint was saved with, or None."""
    p = Path(source) / "config.json"
    if not p.is_file():
        return None
    with open(p, encoding="utf-8") as f:
        cfg = json.load(f)
    q = cfg.get("quantization_config")
    return q if isinstance(q, dict) else None


def expected_method(spec: ModelSpec, source: str) -> str:
    """The quantizer family a load must show: the spec's, or for ``checkpoint`` the one saved with it."""
    if spec.quant == "checkpoint":
        q = checkpoint_config(source)
        if q is None:
            raise ModelError(f"quant='checkpoint' but {source} has no quantization_config in its config.json: "
                             "it is not a pre-quantized checkpoint (load it with fp32/fp16/bf16 or a quant= method)")
        return normalize_method(str(q.get("quant_method", "unknown")))
    return normalize_method(spec.method)


def normalize_method(m: str) -> str:
    m = m.replace("_", "-").lower()
    return {"bitsandbytes-4bit": "bitsandbytes", "bitsandbytes-8bit": "bitsandbytes",
            "fbgemm-fp8": "fp8", "auto-round": "gptq"}.get(m, m)


def quantization_config(spec: ModelSpec, tokenizer: Any = None, calibration_texts: Any = None) -> Any:
    """The transformers config for a ``quant=`` method name (None for ``checkpoint``: the checkpoint's own)."""
    q = spec.quant
    if q == CONFIG_QUANT:
        return spec.qconfig
    if q == "checkpoint":
        return None
    from transformers import TorchAoConfig

    if q.startswith("torchao-"):
        from torchao.quantization import (Int4WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig,
                                          Int8WeightOnlyConfig)

        # the config objects: the string form ("int8_weight_only") raises in transformers 5.2x
        obj = {"torchao-int8": lambda: Int8WeightOnlyConfig(),
               "torchao-int8-dyn": lambda: Int8DynamicActivationInt8WeightConfig(),
               "torchao-int4": lambda: Int4WeightOnlyConfig(group_size=TORCHAO_INT4_GROUP)}[q]()
        return TorchAoConfig(obj)
    if q.startswith("quanto-"):
        from transformers import QuantoConfig

        return QuantoConfig(weights=q.split("-", 1)[1])
    if q == "gptq-int4":
        from transformers import GPTQConfig

        return GPTQConfig(bits=4, group_size=GPTQ_GROUP, dataset=list(calibration_texts), tokenizer=tokenizer)
    if q == "hqq-4bit":
        from transformers import HqqConfig

        return HqqConfig(nbits=4, group_size=HQQ_GROUP)
    if q == "fp8":
        from transformers import FineGrainedFP8Config

        return FineGrainedFP8Config()
    return None


def calibration_texts(spec: ModelSpec, n: int = 32, chars: int = 1000) -> list[str]:
    """GPTQ's calibration: the user's texts, or slices of the built-in reference text."""
    if spec.calibration is not None:
        return list(spec.calibration)
    from ..accuracy import default_text

    text = default_text()
    step = max(1, (len(text) - chars) // n)
    return [text[i:i + chars] for i in range(0, max(1, len(text) - chars), step)][:n]


def explain_load_error(spec: ModelSpec, e: BaseException) -> ModelError | None:
    """One clear line for what a quantizer raised at load, or None to let it through."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    method = spec.method
    if method == "hqq" and (isinstance(e, NotImplementedError) or "not available yet" in msg):
        return ModelError(f"quant={spec.quant!r}: transformers cannot apply HQQ on the fly in this version "
                          f"({msg}); the fix is {HQQ_UPSTREAM}, open: load an HQQ checkpoint with "
                          "quant='checkpoint' or use another 4-bit method")
    if isinstance(e, ImportError) or "pip install" in msg or ("requires" in msg.lower() and "install" in msg.lower()):
        return ModelError(f"{spec.label}: a package the quantization needs is missing or too old: {msg}")
    if isinstance(e, (ValueError, RuntimeError, NotImplementedError, TypeError, AttributeError)) \
            and spec.quant not in ("fp32", "fp16", "bf16", "int8", "nf4", "fp4"):
        return ModelError(f"{spec.label}: transformers could not apply the quantization: "
                          f"{type(e).__name__}: {msg}")
    return None


def expand_now(model: Any) -> None:
    """Run the one forward after which a compressed-tensors model holds its weights expanded.

    Without a kernel for the device, transformers decompresses every layer to full size on the
    first forward pass and keeps it so: a footprint taken before would show a saving that is
    not there while anything is measured, and the first timed call would pay the decompression.
    """
    import torch

    with torch.no_grad():
        model(input_ids=torch.ones((1, 1), dtype=torch.long, device=model.device))


# --------------------------------------------------------------------------- recognition

def _cls(module: str, name: str) -> Any:
    """A quantizer's class, or None when its package is absent (nothing can be of that class then)."""
    with contextlib.suppress(Exception):
        if _has(module.split(".")[0]):
            return getattr(importlib.import_module(module), name)
    return None


@dataclass(frozen=True)
class Recognisers:
    """The quantizers' own classes, looked up once per inspection."""

    torchao_tensor: Any
    quanto_module: Any
    gptq_linear: Any
    hqq_linear: Any
    fp8_linear: Any

    @classmethod
    def load(cls) -> "Recognisers":
        return cls(torchao_tensor=_cls("torchao.utils", "TorchAOBaseTensor"),
                   quanto_module=_cls("optimum.quanto.nn", "QModuleMixin"),
                   gptq_linear=_cls("gptqmodel.nn_modules.qlinear", "BaseQuantLinear"),
                   hqq_linear=_cls("hqq.core.quantize", "HQQLinear"),
                   fp8_linear=_cls("transformers.integrations.finegrained_fp8", "FP8Linear"))


def classify(module: Any, rec: Recognisers) -> tuple[str, str] | None:
    """(method family, kind) of a quantized module, or None for anything else.

    The kind names what holds the weight: ``Int8Tensor`` for a torchao subclass, ``QLinear/qint4``
    for quanto, the module class for the others.
    """
    w = getattr(module, "weight", None)
    if rec.torchao_tensor is not None and w is not None and isinstance(w, rec.torchao_tensor):
        inner = getattr(w, "original_weight_tensor", None)  # LinearActivationQuantizedTensor wraps the weight
        kind = type(w).__name__ + (f"({type(inner).__name__})" if inner is not None else "")
        if getattr(w, "act_quant_kwargs", None) is not None:
            kind += "+act"
        return "torchao", kind
    if rec.quanto_module is not None and isinstance(module, rec.quanto_module):
        qtype = getattr(getattr(module, "weight_qtype", None), "name", None) or "?"
        return "quanto", f"{type(module).__name__}/{qtype}"
    if rec.gptq_linear is not None and isinstance(module, rec.gptq_linear):
        return "gptq", type(module).__name__
    if rec.hqq_linear is not None and isinstance(module, rec.hqq_linear):
        return "hqq", type(module).__name__
    if rec.fp8_linear is not None and isinstance(module, rec.fp8_linear):
        return "fp8", type(module).__name__
    scheme = getattr(module, "quantization_scheme", None)
    if scheme is not None and (hasattr(module, "weight") or hasattr(module, "weight_packed")):
        return "compressed-tensors", f"{type(module).__name__}/{_ct_scheme(scheme)}"
    return None


def _ct_scheme(scheme: Any) -> str:
    wts = getattr(scheme, "weights", None)
    if wts is None:
        return "?"
    return f"w{getattr(wts, 'num_bits', '?')}{str(getattr(wts, 'type', '')).replace('QuantizationType.', '')[:1]}"


def logical_params(module: Any) -> int:
    """Parameters a quantized layer stands for (in × out), whatever its storage packs them into."""
    i, o = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if isinstance(i, int) and isinstance(o, int):
        return i * o
    w = getattr(module, "weight", None)
    return int(w.numel()) if w is not None else 0


def dense_float_weight(module: Any) -> bool:
    """Whether a layer's weight is a plain floating-point tensor of its full shape (expanded)."""
    import torch

    w = getattr(module, "weight", None)
    if w is None or type(w) not in (torch.Tensor, torch.nn.Parameter) or not w.dtype.is_floating_point:
        return False
    return w.dim() == 2 and w.element_size() >= 2
