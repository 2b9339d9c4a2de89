"""Timing, memory and energy of generation: the figures the budgets and baselines rest on.

Rules kept here, because every backend shares them: the first (cold) run is never timed;
warm-up goes on until two consecutive timings agree (bounded); measured repeats go on until the
median is known to the target precision (bounded in count and time); the device is synchronised
around every timed region; the GPU kernel time comes from a profiled run of its own so the
profiler never touches the wall-clock samples.
"""
from __future__ import annotations

import contextlib
import os
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from .backends import RunTiming, backend_for
from .errors import MeasurementError  # noqa: F401 (re-exported: its old home)


@dataclass(frozen=True)
class SamplingPlan:
    """How many runs: fixed counts or ``auto`` (adaptive), with bounds that keep suites short."""

    repeat: int | None = None  # None = auto
    warmup: int | None = None  # None = auto (1..max_warmup until settled)
    target_rel_ci: float = 0.02
    min_repeat: int = 5
    max_repeat: int = 20
    max_time_s: float = 10.0
    max_warmup: int = 3
    warmup_settle: float = 0.25  # a cold run is 2-3x slower; wall time drifts 10-17% between warm runs
    gpu_time_runs: int = 2

    @classmethod
    def parse(cls, repeat: str | int | None, warmup: str | int | None, **kw: Any) -> "SamplingPlan":
        def one(v: Any, what: str) -> int | None:
            if v is None or str(v).strip().lower() == "auto":
                return None
            try:
                n = int(v)
            except (TypeError, ValueError):
                raise ValueError(f"{what} must be a whole number or 'auto', got {v!r}") from None
            if n < (1 if what == "repeat" else 0):
                raise ValueError(f"{what} must be {'at least 1' if what == 'repeat' else '0 or more'}, got {n}")
            return n
        return cls(repeat=one(repeat, "repeat"), warmup=one(warmup, "warmup"), **kw)


@dataclass
class GenerateResult:
    """Samples and figures of one ``quantperf.generate`` call."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    text: str = ""
    prompt_tokens: int = 0
    new_tokens: int = 0
    batch: int = 1
    warmup_runs: int = 0
    stop_reason: str = ""
    gpu_state: list[dict[str, Any]] = field(default_factory=list)
    per_device_peak_mb: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> dict[str, float]:
        out = {k: statistics.median(v) for k, v in self.samples.items() if v}
        out.update(self.values)
        return out


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


# --------------------------------------------------------------------------- CUDA helpers

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
    from .models import per_device_bytes

    out: dict[str, int] = {}
    for dev, n in per_device_bytes(lm.model).items():
        key = dev if ":" in dev or not dev.startswith("cuda") else "cuda:0"
        out[key] = out.get(key, 0) + n
    return out


@contextlib.contextmanager
def _oom_guard(lm: Any) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        import torch

        if not isinstance(e, torch.cuda.OutOfMemoryError):
            raise
        msg = str(e).split("\n")[0]
        m = re.search(r"Tried to allocate ([\d.]+ [GMK]iB)", msg)
        peaks = []
        for d in _cuda_devices(lm):
            peaks.append(f"{d}: peak {torch.cuda.max_memory_allocated(d) / 2**20:.0f} MiB of "
                         f"{torch.cuda.get_device_properties(d).total_memory / 2**20:.0f} MiB")
        torch.cuda.empty_cache()
        raise MeasurementError(
            f"CUDA out of memory while generating with {lm.label}"
            + (f": tried to allocate {m.group(1)} more" if m else "")
            + (f" ({'; '.join(peaks)})" if peaks else "")
            + ". Lower max_new_tokens, the batch or the context, or budget a smaller quant") from None


# --------------------------------------------------------------------------- generate

def _timing_values(t: RunTiming) -> dict[str, float]:
    lat = t.end - t.start
    ttft = t.first_token - t.start
    decode = max(t.end - t.first_token, 1e-9)
    n_after = max(t.new_tokens - 1, 0)
    vals = {"latency_ms": lat * 1e3, "ttft_ms": ttft * 1e3}
    if n_after:
        vals["tpot_ms"] = decode / n_after * 1e3
        vals["tokens_per_s"] = n_after * t.batch / decode
    else:
        vals["tokens_per_s"] = t.new_tokens * t.batch / max(lat, 1e-9)
    return vals


def measure_generate(lm: Any, prompts: Sequence[str], max_new_tokens: int, plan: SamplingPlan, *,
                     nvml: Any = None, bandwidth_gbs: float | None = None,
                     gpu_time: bool = True) -> GenerateResult:
    """Warm up, then time repeated greedy generations; add memory, energy and GPU kernel time."""
    from . import stats

    if max_new_tokens < 1:
        raise MeasurementError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not prompts:
        raise MeasurementError("generate needs at least one prompt")
    backend = backend_for(lm)
    prepared = backend.prepare(prompts)
    cuda_devs = _cuda_devices(lm)
    res = GenerateResult(batch=len(prompts), prompt_tokens=backend.prompt_tokens(prepared),
                         new_tokens=max_new_tokens)

    def one_run() -> RunTiming:
        return backend.run(prepared, max_new_tokens)

    with _oom_guard(lm):
        # warm-up: the first run is cold (allocator, kernels, caches) and is never timed. On CUDA the
        # profiled runs for GPU kernel time follow it: they warm the same path, and never share a
        # run with the wall-clock samples.
        warm: list[float] = []
        gms: list[float] = []
        profile = bool(cuda_devs and gpu_time)
        if plan.warmup != 0 or profile:
            t = one_run()
            warm.append(t.end - t.start)
        if profile:
            from . import gpu

            for _ in range(max(plan.gpu_time_runs, 1)):
                gms.append(gpu.gpu_kernel_time_ms(lambda: backend.run(prepared, max_new_tokens)))
        n_warm_max = plan.warmup if plan.warmup is not None else (1 if profile else plan.max_warmup)
        while len(warm) < n_warm_max:
            t = one_run()
            warm.append(t.end - t.start)
            if plan.warmup is None and stats.warmup_settled(warm, rel=plan.warmup_settle):
                break
        res.warmup_runs = len(warm)

        others: dict[str, int] = {}
        if cuda_devs:
            import torch

            own = _own_bytes_per_device(lm, cuda_devs)
            for d in cuda_devs:
                torch.cuda.synchronize(d)
                # other models cached on the same GPU are not this measurement's memory
                others[d] = max(torch.cuda.memory_allocated(d) - own.get(d, 0), 0)
                torch.cuda.reset_peak_memory_stats(d)
        states: list[Any] = []
        proc_mb: list[float] = []
        e0 = nvml.energy_mj() if nvml is not None else None
        if nvml is not None:
            with contextlib.suppress(Exception):
                states.append(nvml.state())
        rule = stats.AdaptiveRule(target_rel_ci=plan.target_rel_ci, min_n=plan.min_repeat,
                                  max_n=plan.max_repeat, max_time_s=plan.max_time_s)
        samples: dict[str, list[float]] = {}
        total_tokens = 0
        t_start = time.perf_counter()
        last: RunTiming | None = None
        with HostPeak() as host:
            while True:
                t = one_run()
                last = t
                total_tokens += t.new_tokens * t.batch
                for k, v in _timing_values(t).items():
                    samples.setdefault(k, []).append(v)
                if nvml is not None:
                    with contextlib.suppress(Exception):
                        pm = nvml.process_memory_mb(os.getpid())
                        if pm:
                            proc_mb.append(pm)
                n = len(samples["latency_ms"])
                if plan.repeat is not None:
                    if n >= plan.repeat:
                        res.stop_reason = f"fixed repeat={plan.repeat}"
                        break
                    continue
                stop, reason = rule.should_stop(samples["latency_ms"], time.perf_counter() - t_start)
                if stop:
                    res.stop_reason = reason
                    break
        e1 = nvml.energy_mj() if nvml is not None else None
        if nvml is not None:
            with contextlib.suppress(Exception):
                states.append(nvml.state())
        res.samples = samples
        res.text = last.text if last else ""
        res.values["host_rss_mb"] = host.peak_mb
        if cuda_devs:
            import torch

            peaks = {d: (torch.cuda.max_memory_allocated(d) - others.get(d, 0)) / 2**20 for d in cuda_devs}
            res.per_device_peak_mb = peaks
            res.values["vram_mb"] = sum(peaks.values())
            res.values["vram_reserved_mb"] = sum(
                (torch.cuda.max_memory_reserved(d) - others.get(d, 0)) / 2**20 for d in cuda_devs)
            if proc_mb:
                res.values["nvml_process_mb"] = max(proc_mb)
        if e0 is not None and e1 is not None and total_tokens:
            res.values["energy_j_per_token"] = (e1 - e0) / 1e3 / total_tokens
        if states:
            from . import gpu

            res.gpu_state = [s.to_dict() if hasattr(s, "to_dict") else dict(vars(s)) for s in states]
            res.flags.extend(gpu.throttle_flags(states))

        if gms:
            res.samples["gpu_ms"] = gms
            res.samples["gpu_ms_per_token"] = [g / max_new_tokens for g in gms]
            wall = statistics.median(samples["latency_ms"])
            res.values["gpu_busy_share"] = statistics.median(gms) / wall if wall else 0.0
            if bandwidth_gbs:
                bpt = bytes_read_per_token(lm, res.prompt_tokens + max_new_tokens // 2, len(prompts))
                tpot_gpu_s = statistics.median(gms) / max_new_tokens / 1e3
                tpot_wall_s = statistics.median(samples.get("tpot_ms") or samples["latency_ms"]) / 1e3
                res.values["bw_util_gpu"] = gpu.bw_util(bpt, tpot_gpu_s, bandwidth_gbs)
                res.values["bw_util_wall"] = gpu.bw_util(bpt, tpot_wall_s, bandwidth_gbs)
    return res


def bytes_read_per_token(lm: Any, context_len: int, batch: int = 1) -> float:
    """Bytes a decode step reads: every weight once plus the KV cache so far."""
    from . import gpu

    kv = 0.0
    with contextlib.suppress(Exception):
        kv = gpu.kv_cache_bytes_per_token(lm.model.config) * context_len * batch
    return float(lm.footprint_bytes) + kv
