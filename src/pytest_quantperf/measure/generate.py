"""Timing, memory and energy of generation: the figures the budgets and baselines rest on.

Rules kept here, because every backend shares them: the first (cold) run is never timed;
warm-up is short generates (a few tokens load the kernels and the allocator of the decode path)
ending in one full-length run, which on CUDA is the profiled run for GPU kernel time; measured
repeats go on until the median is known to the target precision, bounded in count and by one
time budget that covers the whole measurement (warm-up and profiling included); the device is
synchronised around every timed region; the profiler never touches the wall-clock samples; the
NVML energy counter is read around every timed run, so energy has one sample per run.

Host peak memory, the model's GPUs and out-of-memory handling live in ``memory``; GPU readings
come from ``gpu``.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..backends import RunTiming, backend_for
from ..errors import MeasurementError
from .memory import HostPeak, _cuda_devices, _free_after_oom, _oom_message, _own_bytes_per_device


@dataclass(frozen=True)
class SamplingPlan:
    """How many runs, and how long a measurement may take.

    ``repeat``/``warmup`` are fixed counts or None (``auto``). ``max_time_s`` bounds the whole
    measurement, warm-up and profiled run included: a run is started only when the time so far
    plus one more run fits, except that one timed run is always taken. So a 7B int8 at 11 s a
    run costs a short warm-up, one profiled and one timed run (~23 s), not ``min_repeat`` runs:
    within one session the repeats are pseudo-replicates (the drift between sessions is larger
    than the spread within one), so the verdict needs a sound figure per session, and the GPU
    kernel time, steady to 0.05%, is the figure that gates on CUDA. ``min_repeat`` stays 5 where
    time allows because a one-sided Mann-Whitney test of 5 against 5 is the smallest that can
    reach p < 0.01 (fast CPU models get there within the budget).
    """

    repeat: int | None = None  # None = auto
    warmup: int | None = None  # None = auto (short runs until settled, then one full-length run)
    target_rel_ci: float = 0.02
    min_repeat: int = 5
    max_repeat: int = 20
    max_time_s: float = 10.0
    max_warmup: int = 3
    warmup_settle: float = 0.25  # a cold run is 2-3x slower; wall time drifts 10-17% between warm runs
    warmup_tokens: int = 4  # new tokens of a short warm-up generate: prefill plus a few decode steps
    gpu_time_runs: int = 1  # kernel time repeats to 0.05%: one profiled run gives the figure
    kernel_window: int = 8  # decode steps profiled (gpu/window.py); 0 profiles the whole generate
    work_window: int = 8  # decode steps whose work is counted (work_count.py); 0 counts the whole generate
    #: on CUDA, the CPU the driving thread is pinned to while measuring: None (not pinned), "auto"
    #: (the fastest allowed core when the measurement starts) or a CPU number (host.pinned_thread)
    pin_core: int | str | None = None

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

    def next_timed_run(self, latencies_s: Sequence[float], elapsed_s: float) -> tuple[bool, str]:
        """``(go_on, reason)`` after ``len(latencies_s)`` timed runs and ``elapsed_s`` of the measurement.

        Reasons: ``fixed repeat=N``, ``max_n``, ``time``, ``min_n``, ``converged``, ``more``.
        """
        from .. import stats

        n = len(latencies_s)
        if self.repeat is not None:
            return n < self.repeat, f"fixed repeat={self.repeat}"
        if n == 0:
            return True, "min_n"
        if n >= self.max_repeat:
            return False, "max_n"
        if elapsed_s + statistics.median(latencies_s) > self.max_time_s:
            return False, "time"
        if n < self.min_repeat:
            return True, "min_n"
        if stats.rel_ci_halfwidth(latencies_s) <= self.target_rel_ci:
            return False, "converged"
        return True, "more"


# Metric families and the phase whose runs made them (see GenerateResult.cost).
_PROFILED_METRICS = frozenset({"gpu_ms", "gpu_ms_per_token", "gpu_busy_share", "bw_util_gpu"})
_WORK_METRICS = frozenset({"ops_per_token", "py_calls_per_token", "syncs_per_token", "launches_per_token",
                           "prompt_tokens"})


@dataclass
class GenerateResult:
    """Samples and figures of one ``quantperf.generate`` call, and what they cost.

    ``runs``/``timed_seconds`` are the timed runs (wall-clock, memory and energy figures come from
    them), ``profiled_runs``/``profiled_seconds`` the profiled runs (kernel time), and
    ``warmup_runs``/``warmup_seconds`` the warm-up; ``seconds`` is the whole measurement.
    """

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
    runs: int = 0
    seconds: float = 0.0
    warmup_seconds: float = 0.0
    profiled_runs: int = 0
    profiled_seconds: float = 0.0
    timed_seconds: float = 0.0
    kernel_time_path: str = ""
    #: the profiled segments when kernel time came from a decode window (gpu.WindowProfile)
    kernel_window: dict[str, Any] = field(default_factory=dict)
    #: how much of the machine the timed runs had (host.summarize): verdicts taken on a contended
    #: host say so and are not regressions by themselves
    host: dict[str, Any] = field(default_factory=dict)
    #: the work of one decode (work.Work.to_dict), counted in a run of its own after the timed runs;
    #: empty when counting is off or the backend cannot count (``work_note`` says why)
    work: dict[str, Any] = field(default_factory=dict)
    work_seconds: float = 0.0
    work_note: str = ""

    @property
    def median(self) -> dict[str, float]:
        out = {k: statistics.median(v) for k, v in self.samples.items() if v}
        out.update(self.values)
        return out

    def cost(self, metric: str) -> dict[str, Any]:
        """How many runs and seconds the figure ``metric`` cost: for the metric's ``extra``."""
        if metric in _WORK_METRICS:
            return {"runs": 1 if self.work else 0, "seconds": round(self.work_seconds, 3),
                    "scope": self.work.get("scope", "")}
        if metric in _PROFILED_METRICS:
            out: dict[str, Any] = {"runs": self.profiled_runs, "seconds": round(self.profiled_seconds, 3)}
            if self.kernel_time_path:
                out["kernel_time_path"] = self.kernel_time_path
            if self.kernel_window:
                out["kernel_window"] = dict(self.kernel_window)
            return out
        return {"runs": self.runs, "seconds": round(self.timed_seconds, 3)}

    def costs(self) -> dict[str, float | int | str]:
        """The whole measurement's bill, phase by phase (JSON-able)."""
        return {"runs": self.runs, "seconds": round(self.seconds, 3), "warmup_runs": self.warmup_runs,
                "warmup_seconds": round(self.warmup_seconds, 3), "profiled_runs": self.profiled_runs,
                "profiled_seconds": round(self.profiled_seconds, 3), "timed_seconds": round(self.timed_seconds, 3),
                "kernel_time_path": self.kernel_time_path, "stop_reason": self.stop_reason,
                "work_seconds": round(self.work_seconds, 3)}


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


def _threads_asked(lm: Any, on_cuda: bool) -> int:
    """The CPU threads a run asks for: one host thread drives a GPU; torch's or llama.cpp's pool otherwise."""
    if on_cuda:
        return 1
    n = getattr(lm, "n_threads", None) or getattr(getattr(lm, "spec", None), "n_threads", None)
    if isinstance(n, int) and n > 0:
        return n
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 1


def measure_generate(lm: Any, prompts: Sequence[Any], max_new_tokens: int, plan: SamplingPlan, *,
                     nvml: Any = None, bandwidth_gbs: float | None = None,
                     gpu_time: bool = True, count_work: bool = False,
                     generate_kwargs: Mapping[str, Any] | None = None) -> GenerateResult:
    """Warm up, profile once (CUDA), then time repeated greedy generations within the plan's budget;
    with ``count_work``, count the work of one more run afterwards (``work_count``).

    ``prompts`` are strings, or chat message lists (the tokenizer's chat template applies);
    ``generate_kwargs`` reach ``model.generate`` in every run (backends that take them only).
    A generate that runs out of GPU memory raises :class:`MeasurementError` naming the memory
    asked for and free, after giving back what it took, so the session's next test is unharmed.
    """
    __tracebackhide__ = True  # pytest shows the test's line and the message, not this module's insides
    if max_new_tokens < 1:
        raise MeasurementError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not prompts:
        raise MeasurementError("generate needs at least one prompt")
    oom: str | None = None
    try:
        if plan.pin_core is None or not _cuda_devices(lm):  # the CPU's own threads are left as torch set them
            return _measure(lm, prompts, max_new_tokens, plan, nvml=nvml, bandwidth_gbs=bandwidth_gbs,
                            gpu_time=gpu_time, count_work=count_work, generate_kwargs=generate_kwargs)
        from .host import pinned_thread

        with pinned_thread(plan.pin_core) as pin:
            res = _measure(lm, prompts, max_new_tokens, plan, nvml=nvml, bandwidth_gbs=bandwidth_gbs,
                           gpu_time=gpu_time, count_work=count_work, generate_kwargs=generate_kwargs)
        core = pin.info.get("pinned_core")
        res.host = {**(res.host or {}), **pin.info}
        res.host["summary"] = str(res.host.get("summary") or "") + (
            f"; driving thread pinned to CPU {core}" if core is not None else f"; not pinned: {pin.info.get('why')}")
        return res
    except Exception as e:
        oom = _oom_message(lm, e)
        if oom is None:
            raise
    # out of the except block: the OOM error and the frames it held are gone before freeing
    _free_after_oom(lm)
    raise MeasurementError(oom)


def _measure(lm: Any, prompts: Sequence[Any], max_new_tokens: int, plan: SamplingPlan, *,
             nvml: Any, bandwidth_gbs: float | None, gpu_time: bool, count_work: bool = False,
             generate_kwargs: Mapping[str, Any] | None = None) -> GenerateResult:
    from .. import stats

    backend = backend_for(lm)
    if generate_kwargs:
        if not getattr(backend, "takes_generate_kwargs", False):
            raise MeasurementError(f"quantperf.generate: the {backend.name} backend takes no generate keyword "
                                   f"arguments (got {', '.join(sorted(generate_kwargs))}); they are for "
                                   "transformers models")
        backend.set_generate_kwargs(generate_kwargs)
    if any(not isinstance(p, str) for p in prompts) and not getattr(backend, "takes_generate_kwargs", False):
        raise MeasurementError(f"quantperf.generate: the {backend.name} backend takes prompts as text, not "
                               "messages=")
    prepared = backend.prepare(prompts)
    cuda_devs = _cuda_devices(lm)
    res = GenerateResult(batch=len(prompts), prompt_tokens=backend.prompt_tokens(prepared),
                         new_tokens=max_new_tokens)
    profile = bool(cuda_devs and gpu_time)
    t_begin = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - t_begin

    # --- warm-up: the first run is cold (allocator, kernels, caches) and is never timed. Short runs
    # warm the kernels of prefill and decode; the warm-up ends with one full-length run (the profiled
    # run on CUDA) so the allocator has seen the whole KV cache before any timed run.
    short = max(1, min(plan.warmup_tokens, max_new_tokens))
    warm: list[float] = []  # seconds per new token of each short warm-up
    if plan.warmup is None:  # auto: short runs until two agree, at most max_warmup, within a quarter of the budget
        full_last = not profile
        while len(warm) < max(plan.max_warmup, 1):
            t = backend.run(prepared, short)
            warm.append((t.end - t.start) / short)
            if stats.warmup_settled(warm, rel=plan.warmup_settle) or elapsed() >= plan.max_time_s / 4:
                break
    else:  # N warm-up runs, the last of them full length unless the profiled run follows
        full_last = not profile and plan.warmup > 0
        n_short = max(plan.warmup, 1) if profile else max(plan.warmup - 1, 0)  # CUPTI never profiles a cold run
        for _ in range(n_short):
            t = backend.run(prepared, short)
            warm.append((t.end - t.start) / short)
    if full_last:
        t = backend.run(prepared, max_new_tokens)
        warm.append((t.end - t.start) / max(max_new_tokens, 1))
    res.warmup_runs = len(warm)
    res.warmup_seconds = elapsed()

    # --- GPU kernel time, from a profiled run of its own
    gms: list[float] = []
    if profile:
        from ..gpu import profile_generate

        t_prof = time.perf_counter()
        for _ in range(max(plan.gpu_time_runs, 1)):
            kp = profile_generate(backend, prepared, max_new_tokens, cuda_devs[0], window=plan.kernel_window)
            gms.append(kp.gpu_ms)
            res.kernel_time_path = kp.path
            if hasattr(kp, "to_dict"):
                res.kernel_window = kp.to_dict()
        res.profiled_runs = len(gms)
        res.profiled_seconds = time.perf_counter() - t_prof

    # --- timed runs
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
    energy: list[float] = []  # J per generated token, one per timed run
    energy_missing = False
    e_first = nvml.energy_mj() if nvml is not None else None
    if nvml is not None:
        with contextlib.suppress(Exception):
            states.append(nvml.state())
    samples: dict[str, list[float]] = {}
    lat_s: list[float] = []
    total_tokens = 0
    t_timed = time.perf_counter()
    last: RunTiming | None = None
    from .host import HostMeter, describe, summarize

    threads = _threads_asked(lm, bool(cuda_devs))
    host_runs = []
    with HostPeak() as host:
        while True:
            go_on, reason = plan.next_timed_run(lat_s, elapsed())
            if not go_on:
                res.stop_reason = reason
                break
            e0 = nvml.energy_mj() if nvml is not None else None
            with HostMeter(threads, tokens=max_new_tokens * len(prompts)) as hm:
                t = backend.run(prepared, max_new_tokens)  # synchronises the device before returning
            host_runs.append(hm.result)
            e1 = nvml.energy_mj() if nvml is not None else None
            last = t
            lat_s.append(t.end - t.start)
            tokens = t.new_tokens * t.batch
            total_tokens += tokens
            if e0 is not None and e1 is not None and e1 >= e0 and tokens:
                energy.append((e1 - e0) / 1e3 / tokens)
            elif nvml is not None:
                energy_missing = True
            for k, v in _timing_values(t).items():
                samples.setdefault(k, []).append(v)
            if nvml is not None:
                with contextlib.suppress(Exception):
                    pm = nvml.process_memory_mb(os.getpid())
                    if pm:
                        proc_mb.append(pm)
    e_last = nvml.energy_mj() if nvml is not None else None
    res.timed_seconds = time.perf_counter() - t_timed
    res.runs = len(lat_s)
    if nvml is not None:
        with contextlib.suppress(Exception):
            states.append(nvml.state())
    res.samples = samples
    res.text = last.text if last else ""
    res.values["host_rss_mb"] = host.peak_mb
    if host_runs:
        summary = summarize(host_runs)
        res.host = {**summary, "summary": describe(summary)}
        cpu = [x for x in summary["cpu_ms_per_token"] if x]
        if cpu:
            res.samples["cpu_ms_per_token"] = cpu
    if cuda_devs:
        import torch

        peaks = {d: (torch.cuda.max_memory_allocated(d) - others.get(d, 0)) / 2**20 for d in cuda_devs}
        res.per_device_peak_mb = peaks
        res.values["vram_mb"] = sum(peaks.values())
        res.values["vram_reserved_mb"] = sum(
            (torch.cuda.max_memory_reserved(d) - others.get(d, 0)) / 2**20 for d in cuda_devs)
        if proc_mb:
            res.values["nvml_process_mb"] = max(proc_mb)
    if energy and not energy_missing:
        res.samples["energy_j_per_token"] = energy
    elif e_first is not None and e_last is not None and e_last >= e_first and total_tokens:
        # some per-run reading failed: one figure over all timed runs rather than a biased subset
        res.values["energy_j_per_token"] = (e_last - e_first) / 1e3 / total_tokens
    if states:
        from .. import gpu

        res.gpu_state = [s.to_dict() if hasattr(s, "to_dict") else dict(vars(s)) for s in states]
        res.flags.extend(gpu.throttle_flags(states))

    if gms:
        from .. import gpu

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
    if count_work:
        _count_work(res, backend, prepared, max_new_tokens, cuda_devs, plan)
    res.seconds = elapsed()
    return res


def _count_work(res: GenerateResult, backend: Any, prepared: Any, max_new_tokens: int,
                cuda_devs: Sequence[str], plan: SamplingPlan) -> None:
    """The work of one more run, after every timed run: the counters never touch a timed sample."""
    from .work_count import count_work, counts_work

    if not counts_work(backend):
        res.work_note = f"the {backend.name} backend does not expose its work: n/a"
        return
    t0 = time.perf_counter()
    try:
        # CUDA's kernel launches and runtime syncs (kineto) are left out of the counting run: on an H100
        # the one lease that ran it recorded 0 launches per token and its pytest process did not exit
        # (benchmarks/RESULTS-gpu.md). Operators, Python calls and scalar reads (syncs on a GPU) are counted
        # on CUDA as on the CPU; benchmarks/gpu_work_probe.py tries the kineto path on its own
        w = count_work(backend, prepared, max_new_tokens, window=plan.work_window, cuda_device=None,
                       prompt_tokens=res.prompt_tokens, batch=res.batch)
    except MeasurementError:
        raise
    except Exception as e:  # a model the counters cannot follow keeps its timings; the note says why
        res.work_note = f"work not counted: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        return
    finally:
        res.work_seconds = time.perf_counter() - t0
    res.work = w.to_dict()
    if cuda_devs:
        res.work["detail"] = {**res.work.get("detail", {}),
                              "cuda": "kernel launches and CUDA runtime syncs not counted (see benchmarks/RESULTS-gpu.md)"}


def bytes_read_per_token(lm: Any, context_len: int, batch: int = 1) -> float:
    """Bytes a decode step reads: every weight once plus the KV cache so far."""
    from .. import gpu

    kv = 0.0
    with contextlib.suppress(Exception):
        kv = gpu.kv_cache_bytes_per_token(lm.model.config) * context_len * batch
    return float(lm.footprint_bytes) + kv
