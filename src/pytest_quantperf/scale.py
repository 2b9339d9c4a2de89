"""Scale-out with pytest-xdist: which GPU a worker uses, and which tests share a worker.

Pinning.  ``pytest -n N`` starts N workers ``gw0 .. gwN-1``.  Worker ``gwI`` uses GPU
``I mod count`` of the GPUs this machine shows (or entry ``I mod len`` of ``--quantperf-gpus``,
indices into the visible GPUs, repeats allowed: ``0,0`` puts two workers on GPU 0).  The worker
pins itself by setting ``CUDA_VISIBLE_DEVICES`` to that one GPU in its ``pytest_configure``, and
then uses ``cuda:0``: it cannot touch another worker's GPU.

Why that is early enough: CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when the driver starts
(``cuInit``, the first ``torch.cuda.is_available()``, ``device_count()`` or allocation), not when
torch is imported.  A worker runs, in order: its plugins' and conftest files' imports, every
``pytest_configure``, collection (test modules are imported here), then the tests.  Nothing of
this plugin touches CUDA before the pin.  Only a conftest or plugin that *calls* ``torch.cuda``
while loading (importing torch is fine) comes earlier; :func:`cuda_started` notices the cases
torch records, and the worker then falls back to ``cuda:I`` without changing the environment.

Groups.  Under ``--dist loadgroup`` tests parametrized with the same ``model``/``quant`` values
get one ``xdist_group``, so each model loads once per run instead of once per worker.
xdist appends ``@<group>`` to a grouped test's node id; :func:`plain_nodeid` removes it again,
so results and baselines use the same ids as a serial run.

Everything here but :func:`assign_groups` is pytest-free and tested directly.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Iterable, Sequence

__all__ = ["visible_gpu_count", "worker_index", "choose_gpu", "cuda_started", "pin_worker_gpu",
           "group_for", "plain_nodeid", "assign_groups"]

GROUP_KEYS = ("model", "quant", "spec", "config")


def visible_gpu_count() -> int:
    """GPUs this process may use, without initialising CUDA (CUDA_VISIBLE_DEVICES, then NVML)."""
    ids = _visible_ids()
    if ids is not None:
        return len(ids)
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def worker_index(worker_id: str | None) -> int:
    """``gw3`` → 3; anything else (no xdist, a custom id) → 0."""
    m = re.fullmatch(r"gw(\d+)", worker_id or "")
    return int(m.group(1)) if m else 0


def choose_gpu(worker_id: str | None, visible: int, gpus: Sequence[int] = ()) -> int | None:
    """The visible-GPU index worker ``worker_id`` uses; None when there is no GPU (a no-op pin).

    Worker ``gwI`` gets ``I mod visible``, or ``gpus[I mod len(gpus)]`` when ``--quantperf-gpus``
    is given.  An entry that is not a visible GPU is an error that names it and the valid range.
    Pure (no CUDA, no environment), so it is tested directly.
    """
    if visible <= 0:
        return None
    i = worker_index(worker_id)
    if gpus:
        bad = sorted({g for g in gpus if not 0 <= g < visible})
        if bad:
            raise ValueError(
                f"--quantperf-gpus={','.join(map(str, gpus))}: GPU {bad[0]} is not visible; this machine "
                f"shows {visible} GPU(s), indices 0..{visible - 1} (after CUDA_VISIBLE_DEVICES)")
        return gpus[i % len(gpus)]
    return i % visible


def cuda_started() -> bool:
    """True when torch already asked CUDA for its devices in this process (too late to pin by env)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    cuda = getattr(torch, "cuda", None)
    try:
        return bool(cuda.is_initialized()) or getattr(cuda, "_cached_device_count", None) is not None
    except Exception:
        return False


def pin_worker_gpu(worker_id: str | None, gpus: Sequence[int], device: str) -> str | None:
    """Pin this xdist worker to its GPU; return the device its models use, or None to leave it alone.

    ``--quantperf-device=cpu`` or ``cuda:N`` (explicit) and machines without a GPU: a no-op,
    ``CUDA_VISIBLE_DEVICES`` untouched.  Otherwise ``CUDA_VISIBLE_DEVICES`` becomes the one
    chosen GPU (translated through an existing ``CUDA_VISIBLE_DEVICES``) and the device
    ``cuda:0``; if CUDA already started in this process, the environment is left as it is and
    the device is ``cuda:<index>``.  Raises ValueError for a ``--quantperf-gpus`` entry that is
    not visible.
    """
    if device == "cpu" or device.startswith("cuda:"):
        return None
    ids = _visible_ids()
    count = len(ids) if ids is not None else visible_gpu_count()
    gpu = choose_gpu(worker_id, count, gpus)
    if gpu is None:
        return None
    if cuda_started():
        return f"cuda:{gpu}"
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[gpu] if ids is not None else str(gpu)
    return "cuda:0"


def _visible_ids() -> list[str] | None:
    from ._util.cuda_visible import visible_entries

    return visible_entries()


def _label(v: Any) -> str | None:
    """A stable text for a parameter value, the same on every worker; None if there is none."""
    if isinstance(v, str):
        return v
    if v is None or isinstance(v, (bool, int, float)):
        return repr(v)
    r = repr(v)
    if re.search(r" at 0x[0-9a-fA-F]+", r):
        return None  # an address differs per worker: xdist would abort on differing collections
    return r


def group_for(params: dict[str, Any]) -> str | None:
    """``model=default,quant=nf4`` for tests parametrized over model/quant; None when not.

    Tests with the same group run on the same worker under ``--dist loadgroup``, so a model
    they share is loaded once.  Values must render the same in every worker (strings, numbers,
    frozen dataclasses); others are left out of the group.
    """
    parts = []
    for k in GROUP_KEYS:
        if k in params:
            lab = _label(params[k])
            if lab is not None:
                parts.append(f"{k}={lab}")
    return ",".join(parts) or None


def group_suffix(groups: Iterable[str]) -> str:
    """The ``@<groups>`` suffix xdist's loadgroup adds to a node id (its exact format; "" for none)."""
    names = sorted({str(g) for g in groups})
    return "@" + "_".join(names) if names else ""


def plain_nodeid(nodeid: str, groups: Iterable[str]) -> str:
    """Remove the ``@<groups>`` suffix xdist's loadgroup adds to a node id."""
    suffix = group_suffix(groups)
    return nodeid[: -len(suffix)] if suffix and nodeid.endswith(suffix) else nodeid


def item_groups(item: Any) -> list[str]:
    """The xdist_group names of an item, read the way xdist reads them."""
    out = []
    for mark in item.iter_markers("xdist_group"):
        out.append(str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")))
    return out


def keep_group_suffixes(config: Any, items: Sequence[Any]) -> None:
    """On a worker under ``--dist loadgroup``, make sure each grouped item's node id ends in xdist's
    ``@<groups>`` suffix, after xdist's own hook has run.

    The controller groups tests by that suffix. pytest 9.2 keeps node ids structured (``Node._id``)
    while pytest-xdist 3.8 still writes the suffix into the legacy ``_nodeid``, so it is lost and
    every group is silently spread over the workers, each loading the model again
    (pytest-xdist #1386). Where the suffix is missing it is written where pytest reads it; where
    xdist wrote it (older pytest, or a fixed xdist) nothing changes.
    """
    if not _loadgroup(config) or not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest before 9.2: xdist's own suffix works
        return
    for item in items:
        suffix = group_suffix(item_groups(item))
        if suffix and not item.nodeid.endswith(suffix) and isinstance(getattr(item, "_id", None), NodeId):
            item._id = NodeId.parse(item.nodeid + suffix)


def _loadgroup(config: Any) -> bool:
    """``--dist loadgroup``?  Workers only see ``option.loadgroup``: xdist resets their ``dist`` to "no"."""
    if not config.pluginmanager.hasplugin("xdist"):
        return False
    return bool(getattr(config.option, "loadgroup", False)) or config.getoption("dist", "no") == "loadgroup"


def assign_groups(config: Any, items: list[Any]) -> None:
    """Under ``--dist loadgroup``, give each test a group from its model/quant parameters.

    Must run before xdist's own ``pytest_collection_modifyitems`` (which turns the markers into
    node-id suffixes); the plugin's hook is ``tryfirst`` and xdist's is plain, so it does.
    A test that already carries an ``xdist_group`` marker keeps it.
    """
    if not _loadgroup(config):
        return
    import pytest  # only reached from the plugin, under xdist

    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        callspec = getattr(item, "callspec", None)
        g = group_for(dict(callspec.params)) if callspec is not None else None
        if g:
            item.add_marker(pytest.mark.xdist_group(g))
