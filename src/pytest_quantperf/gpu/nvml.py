"""NVML, read only: the GPU's state and clock-event reasons, its identity and its energy counter.

Clocks and power limits are never changed, because a test suite that pins clocks measures a
machine nobody runs in production and needs privileges CI runners do not have. pynvml and torch
are imported inside functions: importing this module costs nothing and works on machines
without either.
"""
from __future__ import annotations

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
