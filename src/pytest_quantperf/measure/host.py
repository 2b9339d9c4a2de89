"""How much of the machine one measured run had: its own CPU time, and what the neighbours took.

Why this exists: on a shared host, wall time measures the neighbours as much as the code.  On the
project's 2-core CPU runner, one other process spinning on one core made torch's two intra-op
threads stall on each other and an unchanged run 4x slower, and the statistics, taking the
repeats of that one run as independent, called it a regression.  A verdict needs to know whether
the process got the CPU it asked for.  :class:`HostMeter` wraps ONE measured run and reports:

* ``cpu_s``: this process's CPU time (user + system, every thread) during the run, from
  ``time.process_time`` (``CLOCK_PROCESS_CPUTIME_ID``: exact, not sampled at the clock tick);
* ``threads``: the threads the process asked for (the caller passes them, e.g.
  ``torch.get_num_threads()``), and ``cores``: the CPUs it may run on (``os.sched_getaffinity``);
* ``others_cpu_s``: the CPU time the rest of the machine spent on those same CPUs during the run
  (busy time of ``psutil.cpu_times(percpu=True)`` over the affinity set, steal included, minus
  ``cpu_s``).  Steal counts: on a virtual machine it is CPU the neighbours of the VM took.

and derives

* ``cpu_share = cpu_s / (wall_s · asked)`` with ``asked = min(threads, cores)``: the CPU the
  process got against what it asked for.  About 1 for a CPU-bound run whose threads all ran
  (torch's intra-op threads spin while waiting, so they count as busy); near 0 for a process
  that waits (a sleep, I/O, a GPU waited for without spinning);
* ``contention``: the share of the asked cores that other processes held,
  ``clip((others_cores + asked − cores) / asked, 0, 1)`` where ``others_cores = others_cpu_s /
  wall_s``.  0 when the neighbours fit beside the process, 0.5 when one busy process shares a
  2-core machine with a 2-thread run, 1 when the neighbours filled every core;
* ``state``: ``quiet``, ``contended`` or ``too_busy`` (thresholds below, from the measurements
  in benchmarks/host_noise.py);
* ``cpu_ms_per_token = cpu_s / tokens · 1000``: the host's own work per generated token.  It is
  only as steady as the threads are idle-free.  Measured on the 2-core runner (bf16, 16 tokens,
  benchmarks/host_noise.py): with torch's 2 intra-op threads it is about twice the wall time
  (the idle thread spins) and moves with it beside a busy process (wall ×3-5, CPU ×2-3: the
  thread waiting for its descheduled sibling spins); with 1 thread it held within +17% while
  wall time went ×2.4-3.5 (CV 6-9% against 9-22%).  On CUDA it includes the spin-wait of a
  synchronising host thread, which turns GPU time into CPU time: read it as host work only where
  the process does not wait on a device.

The figures are per run, so a caller that takes several runs keeps one :class:`HostSample` per
run and summarises them with :func:`summarize`.  No pytest and no torch imports: measure.py calls
it from its run loop::

    with HostMeter(threads=torch.get_num_threads(), tokens=n) as hm:
        run()
    sample = hm.result
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["QUIET", "CONTENDED", "TOO_BUSY", "STATES", "CONTENDED_AT", "TOO_BUSY_AT", "HostSample",
           "HostMeter", "classify", "available_cores", "summarize", "describe", "parse_pin", "core_probe",
           "pinned_thread"]

QUIET, CONTENDED, TOO_BUSY = "quiet", "contended", "too_busy"
STATES = (QUIET, CONTENDED, TOO_BUSY)
# Thresholds on ``contention``, from benchmarks/host_noise.py (default model, bf16, 16 new tokens,
# torch's 2 intra-op threads on 2 cores, 2026-12-01, figures in docs/ab.md):
# * runs with no neighbour read 0.00-0.03 (wall 37-51 ms/token);
# * one spinning neighbour reads 0.30-0.39 (wall 110-238 ms/token, 3-5x);
# * one neighbour holding a whole core reads 0.50 (wall 177-283 ms/token, about 5x);
# * from 0.57 on (more neighbours than one core) wall time was 384 ms to 3.6 s per token, 10-80x:
#   the run measures the scheduler, not the code.
# ``contended`` from 0.15, midway between an idle host and one spinning neighbour; ``too_busy``
# from 0.55, above one neighbour per core the run asked for and below the first reading at which
# the runs fell apart.
CONTENDED_AT = 0.15
TOO_BUSY_AT = 0.55
# A light neighbour costs far more than its share, since torch's threads wait for each other
# (benchmarks/host_noise.py --conditions quiet,duty5,duty10,duty20,duty40, bf16, 2026-12-01): quiet
# runs read a median of 0.01 [0.00-0.02]; one neighbour busy 5% of every 10 ms read 0.03 [0.02-0.05]
# and slowed wall time 1.18x, 10%: 0.06 and 1.30x, 20%: 0.09 and 1.32x, 40%: 0.15 and 1.72x. It is
# not named contended below 0.15: runs slowed by their own code (a sleep per forward pass) read
# 0.03-0.05 as well, and a rule at 0.025 held back 4 of 10 such slowdowns from the gate.
# /proc/stat fields that are not work: idle and waiting for I/O.  guest time is already counted in
# user time, so it is left out to count it once.
_NOT_BUSY = ("idle", "iowait", "guest", "guest_nice")


def classify(contention: float | None) -> str | None:
    """``quiet`` / ``contended`` / ``too_busy`` for a contention figure; None when it is unknown."""
    if contention is None or not math.isfinite(contention):
        return None
    if contention >= TOO_BUSY_AT:
        return TOO_BUSY
    return CONTENDED if contention >= CONTENDED_AT else QUIET


def available_cores() -> list[int]:
    """The CPUs this process may run on (its affinity); every CPU where affinity is not known."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def _busy_s(cpus: Sequence[int]) -> float | None:
    """Busy CPU seconds since boot summed over ``cpus``; None when the counters cannot be read."""
    try:
        import psutil

        per = psutil.cpu_times(percpu=True)
    except Exception:  # noqa: BLE001 - no psutil, or no /proc: the figure is unknown, not an error
        return None
    total = 0.0
    for i in cpus:
        if i >= len(per):
            return None
        t = per[i]._asdict()
        total += sum(v for k, v in t.items() if k not in _NOT_BUSY)
    return total


def _siblings_cpu_s() -> float | None:
    """CPU seconds so far of this run's own xdist workers other than this one; None outside xdist.

    ``pytest -n N`` asks for its workers: their load is the run's own choice, not a neighbour's, so
    the contention a verdict reads leaves them out (the run's wall clock still feels them).
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    try:
        import psutil

        parent = psutil.Process(os.getppid())
        total = 0.0
        for p in parent.children():
            if p.pid == os.getpid():
                continue
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total
    except Exception:  # noqa: BLE001 - no psutil or no parent: nothing is left out
        return None


@dataclass(frozen=True)
class HostSample:
    """What one run had of the machine; the derived figures are properties (see the module doc)."""

    wall_s: float
    cpu_s: float
    threads: int
    cores: int
    others_cpu_s: float | None = None
    tokens: int | None = None
    #: CPU time of the run's own xdist workers in the same window: left out of ``others_cpu_s``
    siblings_cpu_s: float | None = None

    @property
    def asked(self) -> int:
        return max(1, min(self.threads, self.cores))

    @property
    def cpu_share(self) -> float | None:
        return self.cpu_s / (self.wall_s * self.asked) if self.wall_s > 0 else None

    @property
    def others_cores(self) -> float | None:
        if self.others_cpu_s is None or self.wall_s <= 0:
            return None
        return self.others_cpu_s / self.wall_s

    @property
    def contention(self) -> float | None:
        oc = self.others_cores
        if oc is None:
            return None
        return min(max((oc + self.asked - self.cores) / self.asked, 0.0), 1.0)

    @property
    def state(self) -> str | None:
        return classify(self.contention)

    @property
    def cpu_ms_per_token(self) -> float | None:
        return self.cpu_s / self.tokens * 1e3 if self.tokens else None

    @property
    def wall_ms_per_token(self) -> float | None:
        return self.wall_s / self.tokens * 1e3 if self.tokens else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: the raw counts and every derived figure, rounded to what they can resolve."""
        def r(v: float | None, nd: int = 4) -> float | None:
            return None if v is None else round(v, nd)

        return {"wall_s": r(self.wall_s, 6), "cpu_s": r(self.cpu_s, 6), "threads": self.threads,
                "cores": self.cores, "others_cpu_s": r(self.others_cpu_s, 3), "tokens": self.tokens,
                "siblings_cpu_s": r(self.siblings_cpu_s, 3),
                "cpu_share": r(self.cpu_share), "others_cores": r(self.others_cores),
                "contention": r(self.contention), "state": self.state,
                "cpu_ms_per_token": r(self.cpu_ms_per_token), "wall_ms_per_token": r(self.wall_ms_per_token)}


class HostMeter:
    """Context manager around ONE measured run; ``result`` is its :class:`HostSample` afterwards.

    ``threads``: the threads the run asked for (``torch.get_num_threads()`` for torch, the
    ``n_threads`` of llama.cpp); ``tokens``: tokens generated, for ``cpu_ms_per_token`` (may be
    set on the meter before the block ends, when only the run knows it).  Reading the counters
    costs about 0.1 ms on each side of the run.
    """

    def __init__(self, threads: int, *, tokens: int | None = None, cpus: Sequence[int] | None = None,
                 children: bool = False):
        if int(threads) < 1:
            raise ValueError(f"threads must be at least 1, got {threads!r}")
        self.threads = int(threads)
        self.tokens = tokens
        self.cpus = list(cpus) if cpus is not None else available_cores()
        # children=True: the measured work is child processes waited for inside the block (quantperf ab's
        # pytest runs); their CPU time is the "own" figure and this process's time is not a neighbour's
        self.children = bool(children)
        self._result: HostSample | None = None

    def _own(self) -> tuple[float, float]:
        """(measured CPU time, this process's CPU time) so far."""
        me = time.process_time()
        if not self.children:
            return me, me
        import resource

        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime, me

    def __enter__(self) -> "HostMeter":
        self._result = None
        self._busy0 = _busy_s(self.cpus)
        self._sib0 = _siblings_cpu_s()
        self._cpu0, self._me0 = self._own()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        t1 = time.perf_counter()
        cpu1, me1 = self._own()
        busy1 = _busy_s(self.cpus)
        sib1 = _siblings_cpu_s()
        wall, cpu = t1 - self._t0, cpu1 - self._cpu0
        mine = cpu + (me1 - self._me0 if self.children else 0.0)
        siblings = None
        if self._sib0 is not None and sib1 is not None:  # the run's own xdist workers are not neighbours
            siblings = max(sib1 - self._sib0, 0.0)
            mine += siblings
        others = None
        if self._busy0 is not None and busy1 is not None:
            # the system counters tick at 10 ms per CPU and our own time is exact: a small negative
            # difference is rounding, not a neighbour
            others = max(busy1 - self._busy0 - mine, 0.0)
        self._result = HostSample(wall_s=wall, cpu_s=cpu, threads=self.threads, cores=len(self.cpus),
                                  others_cpu_s=others, tokens=self.tokens, siblings_cpu_s=siblings)

    @property
    def result(self) -> HostSample:
        if self._result is None:
            raise RuntimeError("HostMeter.result is known once the with-block has ended")
        return self._result


def summarize(samples: Sequence[HostSample]) -> dict[str, Any]:
    """Several runs of one measurement, for results and reports.

    Lists per run (``cpu_ms_per_token``, ``cpu_share``, ``contention``), their medians, and the
    ``state`` of the measurement: its worst run's, because one run on a contended host already
    moves the median that a verdict reads.  ``counts`` says how many runs were in each state.
    """
    def col(name: str) -> list[float]:
        return [v for v in (getattr(s, name) for s in samples) if v is not None and math.isfinite(v)]

    out: dict[str, Any] = {"runs": len(samples)}
    for name in ("cpu_ms_per_token", "cpu_share", "contention", "others_cores"):
        vals = col(name)
        out[name] = [round(v, 4) for v in vals]
        out[f"{name}_median"] = round(statistics.median(vals), 4) if vals else None
    states = [s.state for s in samples if s.state is not None]
    out["counts"] = {st: states.count(st) for st in STATES}
    out["state"] = max(states, key=STATES.index) if states else None
    out["threads"] = samples[0].threads if samples else None
    out["cores"] = samples[0].cores if samples else None
    return out


def describe(summary: Mapping[str, Any]) -> str:
    """One line for a report: ``contended (0.48 of the asked cores held by others; 3 of 5 runs)``."""
    state = summary.get("state")
    if state is None:
        return "host load unknown"
    c = summary.get("contention_median")
    counts = summary.get("counts") or {}
    n = summary.get("runs") or 0
    held = f"{c:.2f} of the asked cores held by other processes" if c is not None else "contention unknown"
    bad = counts.get(CONTENDED, 0) + counts.get(TOO_BUSY, 0)
    tail = f"; {bad} of {n} runs contended" if state != QUIET else ""
    return f"{state.replace('_', ' ')} (median {held}{tail})"


# --- pinning the thread that drives a GPU -----------------------------------------------------
# On the H200 runner a batch-1 decode of synthetic:qwen2.5-1.5b (kernels 3 ms of a ~25 ms token)
# ran 312 ms on the fastest of its 16 cores and 662 ms on the slowest, each core keeping its pace
# over three generates (benchmarks/core_speed.py, docs/gpu-results.md), and whole pytest processes
# of one unchanged suite read 337, 470 and 671 ms: the scheduler's choice of core was most of the
# drift between processes. Pinned, each measurement runs on the core that is fastest when it starts.


def parse_pin(text: Any) -> int | str | None:
    """``off`` (or empty) -> None, ``auto`` -> ``"auto"``, a CPU number -> that int; ValueError else."""
    t = "off" if text is None else str(text).strip().lower()
    if t in ("", "off", "no", "false"):
        return None
    if t == "auto":
        return "auto"
    try:
        n = int(t)
    except ValueError:
        raise ValueError(f"pin-core must be off, auto or a CPU number, got {text!r}") from None
    if n < 0:
        raise ValueError(f"pin-core must be off, auto or a CPU number, got {text!r}")
    return n


def _spin(n: int = 20000) -> float:
    """Seconds of a fixed pure-Python loop: the kind of work a decode's launch loop is made of."""
    t = time.perf_counter()
    x = 0
    for i in range(n):
        x += i & 7
    return time.perf_counter() - t


def core_probe(cpus: Sequence[int] | None = None, reps: int = 5) -> dict[int, float]:
    """Microseconds of :func:`_spin` on each CPU (the calling thread moved there; the fastest of
    ``reps``, so the move itself is not counted). The thread's affinity is restored afterwards."""
    cpus = list(cpus) if cpus is not None else available_cores()
    before = os.sched_getaffinity(0)
    out: dict[int, float] = {}
    try:
        for c in cpus:
            os.sched_setaffinity(0, {c})
            out[c] = min(_spin() for _ in range(max(reps, 1))) * 1e6
    finally:
        os.sched_setaffinity(0, before)
    return out


class pinned_thread:
    """Pin the calling thread (only it: threads that exist keep their affinity) to one CPU for the
    block, and restore its affinity after. ``pin``: a CPU number, or ``"auto"`` for the fastest by
    :func:`core_probe` at entry. ``info`` says what was done, for results and reports; where the
    platform cannot pin, or the CPU is not allowed, nothing is pinned and ``info`` says why."""

    def __init__(self, pin: int | str):
        self.pin = pin
        self.info: dict[str, Any] = {}
        self._before: set[int] | None = None  # the affinity to give back, once pinned

    def __enter__(self) -> "pinned_thread":
        if not hasattr(os, "sched_setaffinity"):
            self.info = {"pinned_core": None, "why": "this platform cannot pin a thread"}
            return self
        before = os.sched_getaffinity(0)
        allowed = sorted(before)
        if self.pin == "auto":
            probe = core_probe(allowed)
            core = min(probe, key=probe.get)
            self.info = {"pinned_core": core, "probe_us": {str(c): round(v, 1) for c, v in probe.items()}}
        elif self.pin in allowed:
            core = int(self.pin)
            self.info = {"pinned_core": core}
        else:
            self.info = {"pinned_core": None, "why": f"CPU {self.pin} is not one of the allowed {allowed}"}
            return self
        os.sched_setaffinity(0, {core})
        self._before = before
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._before is not None:
            os.sched_setaffinity(0, self._before)
            self._before = None
