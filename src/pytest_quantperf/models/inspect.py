"""What a loaded model really holds: its quantized layers (bitsandbytes, torchao, quanto, GPTQ,
HQQ, FP8, compressed-tensors), their settings, the quantized share, the bytes per device.
``verify_quantization`` turns that into the refusal of a model that is not what was asked, the
silent unquantized load users fear.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from ..errors import QuantMismatchError
from .spec import ModelSpec, default_compute_dtype


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
    method: str = "none"                       # the quantizer family the load was asked for
    quantized_layers: int = 0                  # layers of that family (bitsandbytes: 4-bit + 8-bit)
    layer_kinds: tuple[str, ...] = ()          # what holds their weights, e.g. "Int8Tensor", "QLinear/qint4"
    other_quantized: tuple[str, ...] = ()      # families found that were not asked for
    expanded_layers: int = 0                   # layers of a quantized checkpoint expanded to full size
    note: str | None = None                    # what the footprint means, where it is not the saving it seems

    @property
    def quantized_share(self) -> float:
        return self.params_quantized / self.params_total if self.params_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"quant": self.quant, "linear4bit": self.linear4bit, "linear8bit": self.linear8bit,
                "plain_linear": self.plain_linear, "quant_types": list(self.quant_types),
                "compute_dtypes": list(self.compute_dtypes), "double_quant": list(self.double_quant),
                "params_total": self.params_total, "params_quantized": self.params_quantized,
                "quantized_share": round(self.quantized_share, 4),
                "footprint_bytes": self.footprint_bytes, "predicted_bytes": self.predicted_bytes,
                "method": self.method, "quantized_layers": self.quantized_layers,
                "layer_kinds": list(self.layer_kinds), "other_quantized": list(self.other_quantized),
                "expanded_layers": self.expanded_layers, "note": self.note}


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


def inspect_quantization(model, spec: ModelSpec, footprint_bytes: int, *, method: str | None = None) -> QuantSummary:
    """Count what the model holds: quantized layers of every family, their settings, the quantized share.

    ``method`` is the family the load must show (for ``quant="checkpoint"`` the one the checkpoint
    was saved with); by default the spec's.
    """
    from torch import nn

    from .methods import Recognisers, classify, dense_float_weight, logical_params

    want = method or spec.method
    n4 = n8 = plain = 0
    qtypes, cdts, dqs = set(), set(), set()
    qparams = 0
    total = 0
    families: dict[str, int] = {}
    kinds: set[str] = set()
    expanded = 0
    try:
        import bitsandbytes as bnb

        L4, L8 = bnb.nn.Linear4bit, bnb.nn.Linear8bitLt
    except Exception:  # bitsandbytes absent: nothing can be quantized
        L4 = L8 = ()
    rec = Recognisers.load()
    packed: set[int] = set()  # modules whose stored tensors stand for in × out logical parameters
    for name, m in model.named_modules():
        if L4 and isinstance(m, L4):
            n4 += 1
            qparams += m.in_features * m.out_features
            qs = getattr(m.weight, "quant_state", None)
            qtypes.add(getattr(m.weight, "quant_type", "?"))
            cdts.add(str(m.compute_dtype).replace("torch.", "") if m.compute_dtype is not None else "float32")
            dqs.add(bool(getattr(qs, "nested", False)) if qs is not None else bool(m.weight.compress_statistics))
            families["bitsandbytes"] = families.get("bitsandbytes", 0) + 1
            continue
        if L8 and isinstance(m, L8):
            n8 += 1
            qparams += m.in_features * m.out_features
            families["bitsandbytes"] = families.get("bitsandbytes", 0) + 1
            continue
        found = classify(m, rec)
        if found is not None:
            fam, kind = found
            if fam == "compressed-tensors" and dense_float_weight(m) and not hasattr(m, "weight_packed"):
                expanded += 1  # the scheme is attached but the weight was expanded to full size
            families[fam] = families.get(fam, 0) + 1
            if fam == want:
                kinds.add(kind)
            qparams += logical_params(m)
            if fam in ("gptq", "hqq", "compressed-tensors"):
                packed.add(id(m))
                total += logical_params(m)
        elif isinstance(m, nn.Linear):
            plain += 1
    # packed layers count their logical parameters (above); tied embeddings count once
    seen: set[int] = set()
    for name, m in model.named_modules():
        for pn, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if id(m) in packed and pn != "bias":
                continue
            if L4 and isinstance(m, L4) and pn == "weight":
                total += m.in_features * m.out_features
            elif L8 and isinstance(m, L8) and pn == "weight":
                total += m.in_features * m.out_features
            else:
                total += p.numel()
    if want == "bitsandbytes" or want == "none":
        nq = n4 + n8
    else:
        nq = families.get(want, 0)
    if nq == 0 and want not in ("none", "bitsandbytes"):
        # transformers dequantizes some checkpoints where it has no kernel (FP8, MXFP4 on a CPU):
        # the layers are plain float, the checkpoint's saving is not there on this device
        qc = getattr(getattr(model, "hf_quantizer", None), "quantization_config", None)
        if qc is not None and getattr(qc, "dequantize", False):
            expanded = plain
    note = None
    if expanded:
        note = (f"{expanded} {want} layer(s) hold their weights expanded to full size on {spec.device} (no "
                "kernel for the quantized format there): the footprint is the dense size, not the "
                "checkpoint's quantized size")
    predicted = None
    with contextlib.suppress(Exception):
        from . import fit

        if fit.predictable(spec.quant):
            predicted = int(fit.predict(model.config, spec.quant, double_quant=bool(spec.double_quant),
                                        compute_dtype=spec.compute_dtype, device=spec.device).weight_bytes)
    return QuantSummary(quant=spec.quant, linear4bit=n4, linear8bit=n8, plain_linear=plain,
                        quant_types=tuple(sorted(qtypes)), compute_dtypes=tuple(sorted(cdts)),
                        double_quant=tuple(sorted(dqs)), params_total=total, params_quantized=qparams,
                        footprint_bytes=footprint_bytes, predicted_bytes=predicted, method=want,
                        quantized_layers=nq, layer_kinds=tuple(sorted(kinds)),
                        other_quantized=tuple(sorted(f for f in families if f != want)),
                        expanded_layers=expanded, note=note)


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
    elif summary.method not in ("none", "bitsandbytes"):
        _verify_method(summary, spec)
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


def _dynamic(kind: str) -> bool:
    """torchao's two int8 configs share ``Int8Tensor``; the dynamic one also quantizes activations."""
    return kind.endswith("+act") or kind.startswith("LinearActivationQuantizedTensor")


# what each named method's layers must hold
_KINDS = {"torchao-int8": (lambda k: not _dynamic(k), "int8 weights with float activations"),
          "torchao-int8-dyn": (_dynamic, "int8 weights with dynamically quantized int8 activations"),
          "torchao-int4": (lambda k: "Int4" in k or "AffineQuantized" in k, "int4 weights"),
          "quanto-int8": (lambda k: k.endswith("/qint8"), "quanto qint8 weights"),
          "quanto-int4": (lambda k: k.endswith("/qint4"), "quanto qint4 weights")}


def _verify_method(summary: QuantSummary, spec: ModelSpec) -> None:
    """A method other than bitsandbytes: its own layers must be there, of the kind asked for."""
    asked = spec.label
    if summary.quantized_layers == 0 and not summary.expanded_layers:
        found = f"{summary.plain_linear} plain nn.Linear"
        if summary.other_quantized:
            found += ", quantized layers of " + ", ".join(summary.other_quantized)
        raise QuantMismatchError(
            f"asked for {asked} ({summary.method}) but found no {summary.method} quantized layer ({found}): "
            "the quantization config did not apply")
    rule = _KINDS.get(spec.quant)
    if rule and not all(rule[0](k) for k in summary.layer_kinds):
        raise QuantMismatchError(f"asked for {asked} but its {summary.method} layers hold "
                                 f"{', '.join(summary.layer_kinds)}, not {rule[1]}")
