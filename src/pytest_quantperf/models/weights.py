"""What the weights of a loaded model really occupy, counted from the tensors themselves.

Shared by :mod:`.loading` (the footprint of every load) and :mod:`.fit`'s tests and benchmarks
(prediction checked against measurement); its own module so that neither imports the other for it. torch is imported inside the function.
"""
from __future__ import annotations

from typing import Any, Iterable

__all__ = ["measured_weight_bytes", "inner_tensors", "no_grad_mode"]


def no_grad_mode(model: Any) -> Any:
    """``torch.inference_mode()``, or ``torch.no_grad()`` for a model whose weights are tensor subclasses.

    quanto's int4 weights transpose themselves inside a matmul, which sets a version counter, and
    inference mode forbids that ("Cannot set version_counter for inference tensor"); plain
    autograd-free mode costs those models nothing measurable.
    """
    import torch

    for p in model.parameters():
        if type(p) is not torch.nn.Parameter:
            return torch.no_grad()
    return torch.inference_mode()


def inner_tensors(t: Any) -> list[Any] | None:
    """The tensors a tensor subclass really stores, or None for a plain tensor.

    torchao's quantized weights (``Int8Tensor``, ``AffineQuantizedTensor``...) and quanto's
    ``QTensor`` are wrapper subclasses: the wrapper has the logical shape and dtype (what
    ``get_memory_footprint()`` counts, hence its bf16-sized answer) but no storage of its own;
    the int8 / packed int4 data, scales and zero points are the inner tensors that
    ``__tensor_flatten__`` names, themselves possibly subclasses (quanto's ``PackedTensor``).
    """
    import torch

    if type(t) in (torch.Tensor, torch.nn.Parameter) or not hasattr(type(t), "__tensor_flatten__"):
        return None
    try:
        names, _ctx = t.__tensor_flatten__()
    except Exception:
        return None
    return [x for x in (getattr(t, n, None) for n in names) if isinstance(x, torch.Tensor)]


def _extra_tensors(param: Any, module: Any) -> Iterable[Any]:
    """Tensors bitsandbytes hangs off a parameter or module, outside ``parameters()``/``buffers()``."""
    qs = getattr(param, "quant_state", None)
    if qs is not None:
        for attr in ("absmax", "code", "offset"):
            yield getattr(qs, attr, None)
        s2 = getattr(qs, "state2", None)
        if s2 is not None:
            yield getattr(s2, "absmax", None)
            yield getattr(s2, "code", None)
    for attr in ("SCB", "CB"):
        yield getattr(param, attr, None)
    st = getattr(module, "state", None)
    if st is not None:
        for attr in ("SCB", "CB"):
            yield getattr(st, attr, None)
    meta = getattr(module, "meta", None)  # hqq's HQQLinear keeps scales and zero points in a dict
    if isinstance(meta, dict):
        for v in meta.values():
            yield v


def measured_weight_bytes(model: Any) -> int:
    """Bytes the weights of a loaded model really occupy, bitsandbytes' quantization state included.

    Parameters, buffers, QuantState absmax/code/nested tensors and LLM.int8 scales are summed
    as memory ranges, merged per device, so tied weights, views and tensors shared between
    layers count once. Tensor subclasses (torchao, quanto) count the inner tensors they hold.
    ``model.get_memory_footprint()`` counts parameters and buffers only and
    so misses the quantization constants (and with them the double-quant saving). Meta tensors
    count nothing.
    """
    import torch

    ranges: dict[str, list[tuple[int, int]]] = {}

    def add(t: Any, depth: int = 0) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta" or t.numel() == 0:
            return
        if depth < 8:
            inner = inner_tensors(t)
            if inner is not None:
                for x in inner:
                    add(x, depth + 1)
                return
        span = 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))
        start = t.data_ptr()
        if start == 0:
            return
        ranges.setdefault(str(t.device), []).append((start, start + span * t.element_size()))

    for mod in model.modules():
        for p in mod.parameters(recurse=False):
            add(p)
            for extra in _extra_tensors(p, mod):
                add(extra)
        for b in mod.buffers(recurse=False):
            add(b)
    total = 0
    for spans in ranges.values():
        spans.sort()
        cur_s, cur_e = spans[0]
        for s, e in spans[1:]:
            if s <= cur_e:
                cur_e = max(cur_e, e)
            else:
                total += cur_e - cur_s
                cur_s, cur_e = s, e
        total += cur_e - cur_s
    return int(total)
