"""Synthetic models: a preset's real architecture with seeded random weights, built and
quantized in memory on the device. Honest speed and memory figures with nothing to download;
their tokenizer is bytes, since they have no vocabulary of their own.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ..errors import ModelError
from .sources import synthetic_config
from .spec import ModelSpec, default_compute_dtype, torch_dtype, weight_dtype


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


def quantize_in_memory(model, spec: ModelSpec) -> None:
    """Swap every ``nn.Linear`` except ``lm_head`` for a bitsandbytes layer quantized on the device.

    This is what transformers does while loading a checkpoint with a BitsAndBytesConfig, without
    the round trip through disk that random weights would otherwise need. Only public
    bitsandbytes API: the parameter classes and ``functional.int8_vectorwise_quant``.
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
            # the first move of an unquantized Params4bit to a device quantizes it
            new.weight = bnb.nn.Params4bit(w.to(cdt), requires_grad=False, compress_statistics=bool(spec.double_quant),
                                           quant_type=spec.quant, quant_storage=new.quant_storage,
                                           module=new).to(device)
        else:
            new = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                      has_fp16_weights=False, threshold=6.0, device="meta")
            # Int8Params.to() quantizes only weights coming from the host; the weights here may
            # already be on the GPU, so quantize them where they are, as Int8Params itself does
            cb, scb, _ = bnb.functional.int8_vectorwise_quant(w.to(device=device, dtype=torch.float16).contiguous())
            new.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
        if lin.bias is not None:
            new.bias = nn.Parameter(lin.bias.data.to(cdt), requires_grad=False)
        setattr(parent, attr, new)
        del lin, w
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build(spec: ModelSpec, kwargs: Mapping[str, Any], *,
          progress: Callable[[str], None] | None = None) -> tuple[Any, ByteTokenizer]:
    """A synthetic model: the preset's real architecture and shapes, seeded random weights, built
    (and quantized) directly on the device; ``kwargs`` may spread it with ``device_map``."""
    import torch
    from transformers import AutoModelForCausalLM

    multi = "device_map" in kwargs
    if progress:
        progress(f"building {spec.label} on {spec.device} (random weights, real shapes)")
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
    return model, ByteTokenizer(cfg.vocab_size)
