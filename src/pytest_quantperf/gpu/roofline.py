"""The memory roofline: device bandwidth, bytes a decode step reads, and the share of it used.

torch is imported inside :func:`measure_bandwidth_gbs` only: importing this module costs nothing
(``fit`` reads configs through :func:`text_config` and :func:`kv_cache_bytes_per_token`).
"""
from __future__ import annotations

import math
import time
from typing import Any


def measure_bandwidth_gbs(device: Any = "cuda", nbytes: int = 1 << 30, *, warmup: int = 3,
                          repeats: int = 10) -> float:
    """Device memory bandwidth in GB/s (1e9 B/s) from a large device-to-device copy, best of ``repeats``.

    A copy reads and writes ``nbytes`` each, so 2 × nbytes are moved; an H100 SXM gives about
    3000 GB/s. Call it once per session per device and keep the number: it takes about a second
    and two buffers of ``nbytes``. When the buffers do not fit, the size halves down to 64 MiB.
    On the CPU it times the same copy with ``perf_counter`` (a host-memory figure).
    """
    import torch

    dev = torch.device(device)
    if nbytes < 1 << 20:
        raise ValueError(f"nbytes={nbytes} is too small to time a copy; use at least 1 MiB")
    src = dst = None
    size = int(nbytes)
    while True:
        try:
            src = torch.empty(size, dtype=torch.uint8, device=dev)
            dst = torch.empty_like(src)
            src.fill_(1)
            break
        except torch.cuda.OutOfMemoryError:
            src = dst = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            size //= 2
            if size < 64 << 20:
                raise
    best = math.inf
    try:
        if dev.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            for _ in range(warmup):
                dst.copy_(src)
            torch.cuda.synchronize(dev)
            for _ in range(repeats):
                start.record()
                dst.copy_(src)
                end.record()
                end.synchronize()
                best = min(best, start.elapsed_time(end) / 1000.0)
        else:
            for _ in range(warmup):
                dst.copy_(src)
            for _ in range(repeats):
                t0 = time.perf_counter()
                dst.copy_(src)
                best = min(best, time.perf_counter() - t0)
    finally:
        del src, dst
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return 2.0 * size / best / 1e9


def bytes_per_token(weight_bytes: float, kv_cache_bytes_per_token: float, context_len: float) -> float:
    """Bytes one decode step reads: every weight once plus the KV cache of ``context_len`` tokens.

    ``context_len`` is the cache length the step attends to; for a whole generate call use the
    mean over its steps (prompt + half the new tokens). Activations are ignored: at batch 1 they
    are a rounding error next to the weights.
    """
    for name, v in (("weight_bytes", weight_bytes), ("kv_cache_bytes_per_token", kv_cache_bytes_per_token),
                    ("context_len", context_len)):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {v}")
    return float(weight_bytes) + float(kv_cache_bytes_per_token) * float(context_len)


def bw_util(bytes_per_token: float, seconds_per_token: float, bandwidth_gbs: float) -> float:
    """Share of the memory roofline used: (bytes read per token ÷ time per token) ÷ bandwidth.

    1.0 means decoding runs at the speed of memory; from GPU kernel time it says how good the
    kernels are, from wall time how much the host adds on top.
    """
    if not (math.isfinite(seconds_per_token) and seconds_per_token > 0):
        raise ValueError(f"seconds_per_token must be positive, got {seconds_per_token}")
    if not (math.isfinite(bandwidth_gbs) and bandwidth_gbs > 0):
        raise ValueError(f"bandwidth_gbs must be positive, got {bandwidth_gbs}")
    if not (math.isfinite(bytes_per_token) and bytes_per_token >= 0):
        raise ValueError(f"bytes_per_token must be non-negative, got {bytes_per_token}")
    return bytes_per_token / seconds_per_token / (bandwidth_gbs * 1e9)


def _cfg(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        v = config.get(name, default)
    else:
        v = getattr(config, name, default)
    return default if v is None else v


def text_config(config: Any) -> Any:
    """The language-model part of a config (multimodal configs nest it)."""
    if isinstance(config, dict):
        return config.get("text_config") or config
    get = getattr(config, "get_text_config", None)
    if get is not None:
        try:
            return get()
        except Exception:
            pass
    return config


def kv_cache_bytes_per_token(config: Any, dtype_bytes: int = 2) -> int:
    """KV-cache bytes one token adds: 2 (K and V) × layers × KV heads × head dim × bytes.

    Grouped-query attention is honoured through ``num_key_value_heads``; ``head_dim`` falls back
    to hidden_size ÷ num_attention_heads. Works on a transformers config or a plain dict.
    """
    c = text_config(config)
    layers = _cfg(c, "num_hidden_layers") or _cfg(c, "n_layer") or _cfg(c, "num_layers")
    heads = _cfg(c, "num_attention_heads") or _cfg(c, "n_head")
    hidden = _cfg(c, "hidden_size") or _cfg(c, "n_embd") or _cfg(c, "d_model")
    if not layers or not heads:
        raise ValueError("the config names no num_hidden_layers / num_attention_heads: cannot size its KV cache")
    kv_heads = _cfg(c, "num_key_value_heads") or heads
    head_dim = _cfg(c, "head_dim") or (hidden // heads if hidden else None)
    if not head_dim:
        raise ValueError("the config names neither head_dim nor hidden_size: cannot size its KV cache")
    return int(2 * int(layers) * int(kv_heads) * int(head_dim) * int(dtype_bytes))
