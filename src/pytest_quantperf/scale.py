"""Scale-out with pytest-xdist: which GPU a worker uses, and which tests share a worker."""
from __future__ import annotations

import os
import re
from typing import Any, Sequence


def visible_gpu_count() -> int:
    """GPUs this process may use, without initialising CUDA (NVML, then CUDA_VISIBLE_DEVICES)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return len([x for x in cvd.split(",") if x.strip() and x.strip() != "-1"])
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def choose_gpu(worker_id: str, visible: int, gpus: Sequence[int] = ()) -> int | None:
    """Worker ``gwI`` gets GPU ``I mod count`` (or entry ``I mod len`` of ``--quantperf-gpus``).

    Pure, so it is tested directly; None means "no GPU to pin" (CPU runs, no CUDA).
    """
    m = re.fullmatch(r"gw(\d+)", worker_id or "")
    i = int(m.group(1)) if m else 0
    if gpus:
        return gpus[i % len(gpus)]
    if visible <= 0:
        return None
    return i % visible


def pin_worker_gpu(worker_id: str, gpus: Sequence[int], device: str) -> str | None:
    """Pin this xdist worker to its GPU before CUDA starts: CUDA_VISIBLE_DEVICES, then ``cuda:0``.

    A no-op on the CPU (``--quantperf-device=cpu`` or no GPU visible).
    """
    if device == "cpu":
        return None
    if device.startswith("cuda:"):
        return None  # an explicit device wins
    physical = _physical_ids()
    gpu = choose_gpu(worker_id, len(physical) if physical is not None else visible_gpu_count(), gpus)
    if gpu is None:
        return None
    phys = physical[gpu] if physical is not None and gpu < len(physical) else str(gpu)
    os.environ["CUDA_VISIBLE_DEVICES"] = phys
    return "cuda:0"


def _physical_ids() -> list[str] | None:
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is None:
        return None
    return [x.strip() for x in cvd.split(",") if x.strip() and x.strip() != "-1"]


def group_for(params: dict[str, Any]) -> str | None:
    """Tests parametrized over the same model and quant share a group (and so a worker)."""
    keys = [k for k in ("model", "quant", "spec", "config") if k in params]
    if not keys:
        return None
    return "quantperf:" + ",".join(f"{k}={params[k]!r}" for k in keys)


def assign_groups(config: Any, items: list[Any]) -> None:
    """Under ``--dist loadgroup``, give each test a group from its model/quant parameters."""
    if not config.pluginmanager.hasplugin("xdist") or config.getoption("dist", "no") != "loadgroup":
        return
    import pytest

    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        callspec = getattr(item, "callspec", None)
        g = group_for(dict(callspec.params)) if callspec is not None else None
        if g:
            item.add_marker(pytest.mark.xdist_group(g))
