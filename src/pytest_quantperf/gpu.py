"""What the GPU itself says: NVML state and energy, CUPTI kernel time, and the roofline bandwidth.

Wall-clock timings on a shared host drift by 10–20 % from run to run while the GPU's own kernel
time stays within a fraction of a percent, so the measuring code takes both. Everything here is
read only: clocks and power limits are never changed, because a test suite that pins clocks
measures a machine nobody runs in production and needs privileges CI runners do not have.

torch and pynvml are imported inside functions: importing this module costs nothing and works
on machines without either.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

MIB = 1 << 20

# --------------------------------------------------------------------------- clock-event reasons

# NVML's nvmlClocksEventReason* (formerly nvmlClocksThrottleReason*) bits, with stable names.
# The values are NVML's ABI (nvml.h); they are spelled out so decoding works without pynvml.
CLOCK_REASON_BITS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}

THERMAL_REASONS = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown"})
POWER_REASONS = frozenset({"sw_power_cap", "hw_power_brake_slowdown"})
HW_SLOWDOWN_REASONS = frozenset({"hw_slowdown"})
# gpu_idle, applications_clocks_setting, sync_boost and display_clock_setting describe why clocks
# sit where they are without the GPU being held back while it works: not throttling.
THROTTLE_REASONS = THERMAL_REASONS | POWER_REASONS | HW_SLOWDOWN_REASONS

# flag name -> reasons that raise it, in the order flags are reported
THROTTLE_FLAGS: tuple[tuple[str, frozenset[str]], ...] = (
    ("thermal_throttle", THERMAL_REASONS),
    ("power_throttle", POWER_REASONS),
    ("hw_slowdown", HW_SLOWDOWN_REASONS),
)


def decode_clock_reasons(mask: int) -> list[str]:
    """Names of the bits set in an NVML clock-event reason mask, lowest bit first.

    Bits this table does not know (newer drivers add some) come back as ``unknown_0x...`` so
    they are visible in reports rather than dropped.
    """
    mask = int(mask)
    if mask < 0:
        raise ValueError(f"a clock-event reason mask is a non-negative bit mask, got {mask}")
    names = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            names.append(CLOCK_REASON_BITS.get(bit, f"unknown_{bit:#x}"))
        bit <<= 1
    return names


def is_throttled(reasons: Iterable[str]) -> bool:
    """True when thermal, power-cap or hardware-slowdown reasons are among ``reasons``."""
    return any(r in THROTTLE_REASONS for r in reasons)


@dataclass(frozen=True)
class GpuState:
    """One NVML reading of the GPU around a measurement; a field is None where NVML cannot tell."""

    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    clock_event_reasons: tuple[str, ...] = ()
    throttled: bool = False
    time_s: float = field(default_factory=time.time)

    @classmethod
    def from_mask(cls, mask: int | None, **kw: Any) -> "GpuState":
        """A state whose reasons and throttle flag come from a raw NVML reason mask."""
        reasons = tuple(decode_clock_reasons(mask)) if mask is not None else ()
        return cls(clock_event_reasons=reasons, throttled=is_throttled(reasons), **kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clock_event_reasons"] = list(self.clock_event_reasons)
        return d


def throttle_flags(states: Sequence[GpuState]) -> tuple[str, ...]:
    """Flags for a measurement from the GPU states read around it, e.g. ``("thermal_throttle",)``.

    A flag is raised when any state carries one of its reasons; order is fixed (thermal, power,
    hardware slowdown) so that equal situations give equal flags.
    """
    seen: set[str] = set()
    for s in states:
        seen.update(s.clock_event_reasons)
    return tuple(flag for flag, reasons in THROTTLE_FLAGS if seen & reasons)


# --------------------------------------------------------------------------- torch index -> NVML index

def _parse_pci(bus_id: str) -> tuple[int, int, int] | None:
    """(domain, bus, device) from a PCI bus id such as ``00000000:18:00.0`` or ``0000:18:00.0``."""
    m = re.fullmatch(r"\s*(?:([0-9a-fA-F]+):)?([0-9a-fA-F]+):([0-9a-fA-F]+)(?:\.[0-9a-fA-F]+)?\s*", bus_id or "")
    if not m:
        return None
    return int(m.group(1) or "0", 16), int(m.group(2), 16), int(m.group(3), 16)


def _norm_uuid(u: str) -> str:
    u = str(u).strip().lower()
    return u[4:] if u.startswith("gpu-") else u


def map_to_nvml_index(torch_index: int, *, visible: str | None, nvml_uuids: Sequence[str] = (),
                      nvml_pci: Sequence[str] = (), uuid: str | None = None,
                      pci: tuple[int, int, int] | None = None) -> int | None:
    """NVML's index of the device torch calls ``cuda:<torch_index>``.

    torch numbers only the devices ``CUDA_VISIBLE_DEVICES`` leaves visible (and, by default, fastest
    first); NVML numbers every device in PCI order. The device's own UUID or PCI bus id, when torch
    reports them, identifies it exactly; otherwise the ``torch_index``-th entry of
    ``CUDA_VISIBLE_DEVICES`` (an index or a ``GPU-`` UUID prefix) does. MIG instances give None:
    NVML's whole-device readings would describe other tenants too.
    """
    uuids = [_norm_uuid(u) for u in nvml_uuids]
    if uuid:
        u = _norm_uuid(uuid)
        if u in uuids:
            return uuids.index(u)
    if pci is not None:
        parsed = [_parse_pci(p) for p in nvml_pci]
        if pci in parsed:
            return parsed.index(pci)
    if visible is None:
        return torch_index
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if torch_index >= len(entries):
        return None
    entry = entries[torch_index]
    if entry.isdigit():
        return int(entry)
    if entry.lower().startswith("mig-"):
        return None
    prefix = _norm_uuid(entry)
    hits = [i for i, u in enumerate(uuids) if u.startswith(prefix)]
    return hits[0] if len(hits) == 1 else None


def _torch_index(device: Any) -> int:
    """``0``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` → the CUDA ordinal torch uses."""
    if isinstance(device, int):
        return device
    index = getattr(device, "index", None)
    if getattr(device, "type", None) is not None:
        if device.type != "cuda":
            raise ValueError(f"NVML describes CUDA devices only, not {device}")
        return int(index or 0)
    s = str(device)
    m = re.fullmatch(r"cuda(?::(\d+))?", s.strip())
    if not m:
        raise ValueError(f"not a CUDA device: {device!r} (use an index, 'cuda' or 'cuda:N')")
    return int(m.group(1) or 0)


# --------------------------------------------------------------------------- NVML

@dataclass(frozen=True)
class GpuInfo:
    """What a GPU is: for the environment fingerprint and for reports."""

    index: int
    name: str
    memory_total_mb: float
    driver: str | None
    uuid: str | None = None
    power_limit_w: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Nvml:
    """Read-only NVML access to one GPU; every reading returns None where the driver refuses it.

    Open with :meth:`open`, which gives None when NVML is missing or unusable (no driver, no
    ``nvidia-ml-py``, a container without the management library) so callers need no try/except.
    """

    def __init__(self, pynvml: Any, handle: Any, index: int):
        self._nv = pynvml
        self._h = handle
        self.index = index
        self._closed = False

    @classmethod
    def open(cls, device: Any = 0) -> "Nvml | None":
        """NVML for torch's ``cuda:N`` (an int, ``"cuda:N"`` or a torch.device); None when unavailable."""
        try:
            import pynvml  # nvidia-ml-py
        except Exception:
            return None
        try:
            tidx = _torch_index(device)
        except ValueError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:
            return None
        try:
            n = pynvml.nvmlDeviceGetCount()
            uuids, pcis = [], []
            for i in range(n):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                uuids.append(_try(lambda: _str(pynvml.nvmlDeviceGetUUID(h))) or "")
                pcis.append(_try(lambda: _str(pynvml.nvmlDeviceGetPciInfo(h).busId)) or "")
            uuid, pci = _torch_identity(tidx)
            idx = map_to_nvml_index(tidx, visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
                                    nvml_uuids=uuids, nvml_pci=pcis, uuid=uuid, pci=pci)
            if idx is None or not 0 <= idx < n:
                pynvml.nvmlShutdown()
                return None
            return cls(pynvml, pynvml.nvmlDeviceGetHandleByIndex(idx), idx)
        except Exception:
            _try(pynvml.nvmlShutdown)
            return None

    def close(self) -> None:
        """Release NVML (it is reference counted: other users keep theirs)."""
        if not self._closed:
            self._closed = True
            _try(self._nv.nvmlShutdown)

    def __enter__(self) -> "Nvml":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def clock_reason_mask(self) -> int | None:
        nv = self._nv
        for fn in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            f = getattr(nv, fn, None)
            if f is not None:
                v = _try(lambda: int(f(self._h)))
                if v is not None:
                    return v
        return None

    def state(self) -> GpuState:
        """Clocks, temperature, power draw and clock-event reasons now."""
        nv = self._nv
        h = self._h
        sm = _try(lambda: int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)))
        mem = _try(lambda: int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)))
        temp = _try(lambda: int(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)))
        power = _try(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)  # mW -> W
        return GpuState.from_mask(self.clock_reason_mask(), sm_clock_mhz=sm, mem_clock_mhz=mem,
                                  temperature_c=temp, power_w=power)

    def energy_mj(self) -> int | None:
        """Energy used since the driver loaded, in millijoules (Volta and newer); None if unsupported."""
        return _try(lambda: int(self._nv.nvmlDeviceGetTotalEnergyConsumption(self._h)))

    def process_memory_mb(self, pid: int | None = None) -> float | None:
        """GPU memory NVML attributes to ``pid`` (default: this process), MiB.

        None when the process is not listed, which is the rule inside containers whose PID
        namespace hides host PIDs from NVML, or when the driver withholds per-process figures.
        """
        pid = os.getpid() if pid is None else pid
        nv = self._nv
        procs = None
        for fn in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses"):
            f = getattr(nv, fn, None)
            if f is not None:
                procs = _try(lambda: f(self._h))
                if procs is not None:
                    break
        if not procs:
            return None
        used = [p.usedGpuMemory for p in procs if int(p.pid) == int(pid)]
        used = [u for u in used if u is not None and u != (1 << 64) - 1]
        return sum(used) / MIB if used else None

    def device_memory_used_mb(self) -> float | None:
        """Memory in use on the whole device (every process, the CUDA contexts included), MiB."""
        return _try(lambda: self._nv.nvmlDeviceGetMemoryInfo(self._h).used / MIB)

    def info(self) -> GpuInfo:
        nv, h = self._nv, self._h
        return GpuInfo(
            index=self.index,
            name=_try(lambda: _str(nv.nvmlDeviceGetName(h))) or "unknown GPU",
            memory_total_mb=_try(lambda: nv.nvmlDeviceGetMemoryInfo(h).total / MIB) or 0.0,
            driver=_try(lambda: _str(nv.nvmlSystemGetDriverVersion())),
            uuid=_try(lambda: _str(nv.nvmlDeviceGetUUID(h))),
            power_limit_w=_try(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
        )


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _torch_identity(torch_index: int) -> tuple[str | None, tuple[int, int, int] | None]:
    """(UUID, PCI (domain, bus, device)) of torch's ``cuda:<torch_index>`` where torch reports them."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None, None
        props = torch.cuda.get_device_properties(torch_index)
    except Exception:
        return None, None
    uuid = _try(lambda: str(props.uuid)) or None
    pci = None
    bus = getattr(props, "pci_bus_id", None)
    if isinstance(bus, int):
        pci = (int(getattr(props, "pci_domain_id", 0) or 0), bus, int(getattr(props, "pci_device_id", 0) or 0))
    elif isinstance(bus, str):
        pci = _parse_pci(bus)
    return uuid, pci


class EnergyMeter:
    """GPU energy between ``__enter__`` and ``__exit__`` from NVML's cumulative counter.

    ``joules`` stays None where the counter is unsupported (pre-Volta, some virtual GPUs). The
    counter covers the whole device, so other processes on a shared GPU are counted too; the
    caller synchronises CUDA before leaving the block so that queued kernels are inside it.
    """

    def __init__(self, nvml: Nvml | None):
        self.nvml = nvml
        self.joules: float | None = None
        self._start: int | None = None

    def __enter__(self) -> "EnergyMeter":
        self.joules = None
        self._start = self.nvml.energy_mj() if self.nvml is not None else None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._start is None or self.nvml is None:
            return
        end = self.nvml.energy_mj()
        if end is not None and end >= self._start:
            self.joules = (end - self._start) / 1000.0


# --------------------------------------------------------------------------- kernel time (CUPTI)

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


def _profile_raw(fn: Callable[[], Any], api: tuple[Any, ...], *, activity: str = "cuda",
                 sync: Callable[[], None] = lambda: None) -> KernelProfile:
    """One run of ``fn()`` under kineto with one activity, summed from the raw events.

    ``activity="cpu"`` (CPU ops on the CPU timeline) exists so the reading and summing code is
    tested for real on machines without a GPU; measurements use ``"cuda"``.
    """
    config, ProfilerActivity, DeviceType, prepare, enable, disable = api
    if activity == "cuda":
        acts, dev, kinds = {ProfilerActivity.CUDA}, DeviceType.CUDA, DEVICE_WORK_KINDS
    elif activity == "cpu":
        acts, dev, kinds = {ProfilerActivity.CPU}, DeviceType.CPU, frozenset({"cpu_op"})
    else:
        raise ValueError(f"activity must be 'cuda' or 'cpu', got {activity!r}")
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
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("GPU kernel time needs CUDA: torch.cuda.is_available() is False on this machine")
    if path not in (None, PATH_RAW, PATH_PROFILER):
        raise ValueError(f"path must be {PATH_RAW!r} or {PATH_PROFILER!r}, got {path!r}")

    def sync() -> None:
        torch.cuda.synchronize(device)

    sync()
    api = _raw_api() if path != PATH_PROFILER else None
    if api is None and path == PATH_RAW:
        raise RuntimeError(f"this torch ({torch.__version__}) lacks the low-level kineto API")
    prof = _profile_raw(fn, api, sync=sync) if api is not None else _profile_torch_profiler(fn, sync)
    if prof.n_events == 0:
        raise RuntimeError(
            "the profiler recorded no GPU kernels: CUPTI may be unavailable (another profiler "
            "attached, or the driver withholds profiling from this user) or fn() did no GPU work")
    return prof


def gpu_kernel_time_ms(fn: Callable[[], Any], device: Any = None) -> float:
    """Summed device time (ms) of the kernels, copies and memsets ``fn()`` ran, from CUPTI."""
    return profile_kernels(fn, device).gpu_ms


# --------------------------------------------------------------------------- roofline

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
