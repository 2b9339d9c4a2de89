"""What a loaded model really holds: its bitsandbytes layers, their settings, the quantized
share, the bytes per device. ``verify_quantization`` turns that into the refusal of a model
that is not what was asked, the silent unquantized load users fear.
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
        from .. import fit

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
