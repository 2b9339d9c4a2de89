"""GPU kernel time from CUPTI: kineto's raw events, or ``torch.profiler`` as the fallback.

Wall-clock timings on a shared host drift by 10–20 % from run to run while the GPU's own kernel
time stays within a fraction of a percent, so the measuring code takes both. torch is imported
inside functions: importing this module costs nothing.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

# Events on the device timeline that are GPU work; annotations only span them.
_ANNOTATION_TYPES = frozenset({"gpu_user_annotation", "user_annotation"})
# kineto's names (libkineto ActivityType) of the device activities that are GPU work.
DEVICE_WORK_KINDS = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})

# Which profile path produced a figure, as reports and benchmarks name it.
PATH_RAW = "kineto-raw"
PATH_PROFILER = "torch.profiler"


def _is_device_event(evt: Any, device: str = "CUDA") -> bool:
    dt = getattr(evt, "device_type", None)
    return getattr(dt, "name", str(dt)).upper().endswith(device)


def _event_device_us(evt: Any) -> float:
    """Device time of one device-side event in µs, across torch's renames.

    For a kernel, memcpy or memset event this equals its self device time
    (``self_device_time_total`` since torch 2.4, ``self_cuda_time_total`` before).
    """
    tr = getattr(evt, "time_range", None)
    if tr is not None:
        return float(tr.end - tr.start)
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        v = getattr(evt, attr, None)
        if v is not None:
            return float(v)
    return 0.0


def kernel_time_us(events: Iterable[Any], device: str = "CUDA") -> tuple[float, int]:
    """(total device time in µs, number of device events) of a list of torch ``FunctionEvent``s.

    Only events on the device timeline are summed (kernels, memcpy, memset); the CPU ops that
    launched them carry the same kernels as children and GPU annotations span them, so counting
    either as well would count the work twice. This is the slow path's rule (``prof.events()``);
    :func:`sum_device_work` applies the same rule to kineto's raw events. ``device`` picks the
    timeline (``"CPU"`` only in tests that cross-check the two paths without a GPU).
    """
    total = 0.0
    n = 0
    for evt in events:
        if not _is_device_event(evt, device):
            continue
        if getattr(evt, "is_user_annotation", False):
            continue
        at = getattr(evt, "activity_type", None)
        if at is not None and str(at).lower() in _ANNOTATION_TYPES:
            continue
        total += _event_device_us(evt)
        n += 1
    return total, n


def sum_device_work(events: Iterable[Any], *, device_type: Any = None,
                    kinds: Iterable[str] | None = DEVICE_WORK_KINDS) -> tuple[int, int]:
    """(total ns, count) of the work events among kineto's raw ``_KinetoEvent``s.

    The rule is :func:`kernel_time_us`'s: events on the ``device_type`` timeline (CUDA unless a
    test asks for the CPU), no user annotations (they span the work), and, where kineto names
    the activity, only ``kinds`` (kernels, memcpy, memset). Reading the raw events costs a few
    method calls each; torch's ``prof.events()`` builds a Python ``FunctionEvent`` per event and
    a tree of them, which for the ~100k events of a 128-token 7B generate took longer than the
    generate itself.
    """
    if device_type is None:
        from torch.autograd import DeviceType

        device_type = DeviceType.CUDA
    wanted = frozenset(kinds) if kinds is not None else None
    total = 0
    n = 0
    for evt in events:
        if evt.device_type() != device_type:  # cheapest test first: most events are host-side
            continue
        if evt.is_user_annotation():
            continue
        hidden = getattr(evt, "is_hidden_event", None)
        if hidden is not None and hidden():
            continue
        at = getattr(evt, "activity_type", None)
        kind = str(at()).lower() if at is not None else None
        if kind is not None:
            if kind in _ANNOTATION_TYPES or (wanted is not None and kind not in wanted):
                continue
        total += int(evt.end_ns()) - int(evt.start_ns())
        n += 1
    return total, n


@dataclass(frozen=True)
class KernelProfile:
    """GPU work of one profiled call: summed kernel/memcpy/memset time and how many there were.

    ``path`` says which code read the profile (:data:`PATH_RAW`: kineto's raw events;
    :data:`PATH_PROFILER`: ``torch.profiler`` and its ``FunctionEvent``s, the fallback), and
    ``collect_ms`` what the profiler cost after ``fn()`` returned (stopping, reading, summing),
    so the price of a kernel-time figure is visible beside it.
    """

    gpu_ms: float
    n_events: int
    wall_ms: float
    result: Any = field(default=None, compare=False, repr=False)
    path: str = PATH_RAW
    collect_ms: float = 0.0

    @property
    def busy_share(self) -> float:
        """Kernel time ÷ wall time of the profiled call (above 1 when streams overlap)."""
        return self.gpu_ms / self.wall_ms if self.wall_ms > 0 else float("nan")

    @property
    def total_ms(self) -> float:
        """What the profiled measurement cost in all: the call plus the profiler's collection."""
        return self.wall_ms + self.collect_ms


def _raw_api() -> tuple[Any, ...] | None:
    """torch's low-level kineto switches, or None where this torch lacks them (then the fallback runs).

    Only names present in torch 2.4 to 2.13 are used: ``_prepare_profiler(config, activities)``,
    ``_enable_profiler``, ``_disable_profiler`` and a ``ProfilerConfig`` of seven arguments.
    """
    try:
        from torch._C._profiler import _ExperimentalConfig
        from torch.autograd import (DeviceType, ProfilerActivity, ProfilerConfig, ProfilerState,
                                    _disable_profiler, _enable_profiler, _prepare_profiler)

        config = ProfilerConfig(ProfilerState.KINETO, False, False, False, False, False, _ExperimentalConfig())
    except (ImportError, AttributeError, TypeError):
        return None
    return config, ProfilerActivity, DeviceType, _prepare_profiler, _enable_profiler, _disable_profiler


def _activity(api: tuple[Any, ...], activity: str) -> tuple[set[Any], Any, frozenset[str]]:
    """(kineto activities to record, timeline to sum, event kinds that are work) for ``activity``."""
    ProfilerActivity, DeviceType = api[1], api[2]
    if activity == "cuda":
        return {ProfilerActivity.CUDA}, DeviceType.CUDA, DEVICE_WORK_KINDS
    if activity == "cpu":
        return {ProfilerActivity.CPU}, DeviceType.CPU, frozenset({"cpu_op"})
    raise ValueError(f"activity must be 'cuda' or 'cpu', got {activity!r}")


def _require_cuda() -> Any:
    """torch, where CUDA is usable; else the error every kernel-time path gives.

    It also asks kineto to detach CUPTI after each profile (``TEARDOWN_CUPTI=1``, unless the user
    set it): a CUPTI left attached slows every later kernel launch of the process (torch's users
    report 10-20% in training; a launch-bound decode such as fp16 at batch 1 feels it most), so
    the timed runs after the profiled one, and every later test, would be slowed by the
    measurement itself (H200, fp16 7B: plain generates after a profile 1.71x slower kept, 1.08x
    detached). kineto's own default differs between builds.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("GPU kernel time needs CUDA: torch.cuda.is_available() is False on this machine")
    os.environ.setdefault("TEARDOWN_CUPTI", "1")
    return torch


def _require_events(n_events: int, what: str) -> None:
    if n_events == 0:
        raise RuntimeError(
            "the profiler recorded no GPU kernels: CUPTI may be unavailable (another profiler "
            f"attached, or the driver withholds profiling from this user) or {what} did no GPU work")


def _profile_raw(fn: Callable[[], Any], api: tuple[Any, ...], *, activity: str = "cuda",
                 sync: Callable[[], None] = lambda: None) -> KernelProfile:
    """One run of ``fn()`` under kineto with one activity, summed from the raw events.

    ``activity="cpu"`` (CPU ops on the CPU timeline) exists so the reading and summing code is
    tested for real on machines without a GPU; measurements use ``"cuda"``.
    """
    config, _, _, prepare, enable, disable = api
    acts, dev, kinds = _activity(api, activity)
    prepare(config, acts)
    enable(config, acts)
    t0 = time.perf_counter()
    try:
        result = fn()
        sync()
        t1 = time.perf_counter()
    finally:
        raw = disable()  # also when fn() raised: a profiler left on would slow every later run
    ns, n = sum_device_work(raw.events(), device_type=dev, kinds=kinds)
    t2 = time.perf_counter()
    return KernelProfile(gpu_ms=ns / 1e6, n_events=n, wall_ms=(t1 - t0) * 1e3, result=result,
                         path=PATH_RAW, collect_ms=(t2 - t1) * 1e3)


def _profile_torch_profiler(fn: Callable[[], Any], sync: Callable[[], None]) -> KernelProfile:
    """The fallback: ``torch.profiler`` with CUDA activity and its ``FunctionEvent`` list (slow)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        result = fn()
        sync()
        t1 = time.perf_counter()
    us, n = kernel_time_us(prof.events())
    t2 = time.perf_counter()
    return KernelProfile(gpu_ms=us / 1000.0, n_events=n, wall_ms=(t1 - t0) * 1e3, result=result,
                         path=PATH_PROFILER, collect_ms=(t2 - t1) * 1e3)


def profile_kernels(fn: Callable[[], Any], device: Any = None, *, path: str | None = None) -> KernelProfile:
    """Run ``fn()`` once with CUPTI recording CUDA activity only, and sum its GPU work.

    This run is separate from the wall-clock runs: the profiler adds host overhead, never GPU
    time, so its kernel sum is steady while its wall time is not to be used as a timing. The
    raw kineto path is used where torch has it; ``path=PATH_PROFILER`` forces the old
    ``torch.profiler`` path (benchmarks compare the two).
    """
    torch = _require_cuda()
    if path not in (None, PATH_RAW, PATH_PROFILER):
        raise ValueError(f"path must be {PATH_RAW!r} or {PATH_PROFILER!r}, got {path!r}")

    def sync() -> None:
        torch.cuda.synchronize(device)

    sync()
    api = _raw_api() if path != PATH_PROFILER else None
    if api is None and path == PATH_RAW:
        raise RuntimeError(f"this torch ({torch.__version__}) lacks the low-level kineto API")
    prof = _profile_raw(fn, api, sync=sync) if api is not None else _profile_torch_profiler(fn, sync)
    _require_events(prof.n_events, "fn()")
    return prof


def gpu_kernel_time_ms(fn: Callable[[], Any], device: Any = None) -> float:
    """Summed device time (ms) of the kernels, copies and memsets ``fn()`` ran, from CUPTI."""
    return profile_kernels(fn, device).gpu_ms
