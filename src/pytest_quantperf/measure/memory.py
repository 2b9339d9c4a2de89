"""Where a measurement's memory is: the host's peak RSS, the model's GPUs, and running out of them.

:class:`HostPeak` gives the peak resident memory of a block; ``_cuda_devices`` and
``_own_bytes_per_device`` say which GPUs hold a model and how many of their bytes are its own
weights (so other cached models are not counted); ``_oom_message`` and ``_free_after_oom`` turn
a CUDA out-of-memory error into the test's failure message and give the memory back.
torch and psutil are imported inside functions.
"""
from __future__ import annotations

import contextlib
import re
import threading
from typing import Any


# --------------------------------------------------------------------------- host memory

class HostPeak:
    """Peak resident memory of this process during a block.

    On Linux the kernel's high-water mark (VmHWM) is reset through ``/proc/self/clear_refs`` so
    the peak belongs to the block, not to the process' life; elsewhere a sampling thread stands in.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False

    @staticmethod
    def _read_hwm() -> int | None:
        with contextlib.suppress(OSError):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        return None

    def __enter__(self) -> "HostPeak":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._hwm = self._read_hwm() is not None
        except OSError:
            self._hwm = False
        if not self._hwm:
            import psutil

            proc = psutil.Process()

            def loop() -> None:
                while not self._stop.is_set():
                    self.peak_bytes = max(self.peak_bytes, proc.memory_info().rss)
                    self._stop.wait(self.interval)

            self.peak_bytes = proc.memory_info().rss
            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._hwm:
            self.peak_bytes = self._read_hwm() or 0
        else:
            self._stop.set()
            if self._thread:
                self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


# --------------------------------------------------------------------------- GPU memory, out of memory

def _cuda_devices(lm: Any) -> list[str]:
    """Every CUDA device the model's weights live on (several with device_map='auto')."""
    devs: set[str] = set()
    hf_map = getattr(lm.model, "hf_device_map", None)
    if isinstance(hf_map, dict) and hf_map:
        for d in hf_map.values():
            if isinstance(d, int):
                devs.add(f"cuda:{d}")
            elif isinstance(d, str) and d.startswith("cuda"):
                devs.add(d if ":" in d else "cuda:0")
    elif str(lm.device).startswith("cuda"):
        devs.add(str(lm.device) if ":" in str(lm.device) else "cuda:0")
    return sorted(devs)


def _own_bytes_per_device(lm: Any, cuda_devs: list[str]) -> dict[str, int]:
    """This model's weight bytes on each GPU (all of its footprint when it sits on one)."""
    if len(cuda_devs) == 1 and not getattr(lm.model, "hf_device_map", None):
        return {cuda_devs[0]: int(lm.footprint_bytes)}
    from ..models import per_device_bytes

    out: dict[str, int] = {}
    for dev, n in per_device_bytes(lm.model).items():
        key = dev if ":" in dev or not dev.startswith("cuda") else "cuda:0"
        out[key] = out.get(key, 0) + n
    return out


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _oom_message(lm: Any, e: BaseException) -> str | None:
    """The test's failure message for an out-of-memory error, or None when ``e`` is something else.

    It names the memory asked for and what was free at that moment (``torch.cuda.mem_get_info``),
    per GPU of the model, so the user sees by how much the batch or context was too large.
    """
    try:
        import torch
    except ImportError:
        return None
    text = str(e)
    oom = isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in text.lower() and "cuda" in text.lower())
    if not oom:
        return None
    m = re.search(r"Tried to allocate ([\d.]+ [GMK]iB)", text)
    parts = []
    for d in _cuda_devices(lm) or (["cuda:0"] if torch.cuda.is_available() else []):
        with contextlib.suppress(Exception):
            free, total = torch.cuda.mem_get_info(d)
            parts.append(f"{d}: {_gib(free)} free of {_gib(total)}, this process holds "
                         f"{_gib(torch.cuda.memory_reserved(d))}, peak allocated {_gib(torch.cuda.max_memory_allocated(d))}")
    return (f"CUDA out of memory while generating with {lm.label}"
            + (f": asked for {m.group(1)} more" if m else "")
            + (f" ({'; '.join(parts)})" if parts else "")
            + ". Lower max_new_tokens, the batch or the context, or budget a smaller quant")


def _free_after_oom(lm: Any) -> None:
    """Give back what the failed generate took, so the next test measures on a clean device.

    Called after the out-of-memory exception is gone: its traceback held the generate's frames,
    and with them the KV cache and activations.
    """
    import gc

    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        for d in _cuda_devices(lm) or (["cuda:0"] if torch.cuda.is_available() else []):
            torch.cuda.synchronize(d)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(d)
