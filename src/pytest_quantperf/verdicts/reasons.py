"""The reasons that withhold gating: each one predicate in one place, shown beside the status.

The rule (:mod:`.rule`) says what the figures show; a reason says why that should not fail the
test this time. A reason never rewrites the status: "regression, not gated: host contended" keeps
the regression visible in every report, and a later reader sees both. A verdict gates only when
its status is *regression* (or a budget's *breach*) and no reason stands.

The reasons, in the order they are shown:

* **other hardware**: speed and energy measured on hardware other than the baseline's (the
  hardware-bound kinds) say nothing about the code, unless the run asks to gate across hardware;
* **accepted**: ``quantperf accept`` recorded this value (or a worse one) on purpose, with a reason;
* **host contended**: a wall-clock or energy figure measured while other processes (not the run's
  own xdist workers) held the cores the run asked for, and worse by no more than such contention
  can make it (5x contended, 100x too busy);
* **GPU clock moved**: a kernel time measured at an SM or memory clock more than
  :data:`CLOCK_TOLERANCE` from the baseline's;
* **work unchanged**: a wall-clock figure of a model whose work per token is identical by name to
  the baseline's (and, on CUDA, whose kernel time passed): the code did the same work, so the
  change is the host's.

Pure Python; verdicts are read through their attributes only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Reason", "reasons_for", "CLOCK_TOLERANCE", "CONTENDED_SLOWDOWN", "WALL_CLOCK", "HARDWARE_KINDS", "HOST_KINDS",
           "other_hardware", "accepted", "host_contended", "clock_moved", "work_unchanged"]

#: SM or memory clocks further apart than this make two kernel times incomparable
CLOCK_TOLERANCE = 0.01
WALL_CLOCK = ("latency_ms", "ttft_ms", "tpot_ms", "tokens_per_s")
HARDWARE_KINDS = ("timing", "gpu_timing", "energy")
#: kinds a busy neighbour moves: the wall clock and what is derived from it
HOST_KINDS = ("timing", "energy")


@dataclass(frozen=True)
class Reason:
    """Why a verdict does not gate: a short ``key`` for tools and the ``text`` shown to people."""

    key: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "text": self.text}


def other_hardware(kind: str, same_hardware: bool, gate_cross_hardware: bool) -> Reason | None:
    if kind in HARDWARE_KINDS and not same_hardware and not gate_cross_hardware:
        return Reason("other_hardware", "baseline from other hardware (--quantperf-gate-cross-hardware gates it)")
    return None


def accepted(status: str, record: Mapping[str, Any] | None, within_accepted: bool) -> Reason | None:
    """An intended change: the current value is no worse than the accepted one (within tolerance)."""
    if record and status in ("regression", "inconclusive") and within_accepted:
        return Reason("accepted", f"accepted at {record.get('value')} by {record.get('who', '?')}: "
                                  f"{record.get('reason', '')}")
    return None


#: how much slower than the code a contended run can be: one busy neighbour on the 2-core runner made
#: wall time per token 3-5x slower (benchmarks/host_noise.py); a too-busy host, 10-80x
CONTENDED_SLOWDOWN = {"contended": 5.0, "too_busy": 100.0}


def host_contended(kind: str, host: Mapping[str, Any] | None, worse_by: float | None = None) -> Reason | None:
    """Other processes held the cores: the wall clock measured them as much as the code.

    ``worse_by``: how many times worse than its reference (the baseline, or a budget's limit) the
    figure is; beyond what such contention can cause (:data:`CONTENDED_SLOWDOWN`) the host does not
    explain it, and no reason stands.
    """
    state = (host or {}).get("state")
    if worse_by is not None and state in CONTENDED_SLOWDOWN and worse_by > CONTENDED_SLOWDOWN[state]:
        return None
    if kind in HOST_KINDS and state in ("contended", "too_busy"):
        what = "too busy to measure" if state == "too_busy" else "contended"
        return Reason("host_contended", f"host {what}: {(host or {}).get('summary', '')}".rstrip(": "))
    return None


def clock_moved(kind: str, base_clocks: Any, cur_clocks: Any) -> Reason | None:
    """Kernel time scales with the SM and memory clocks: another clock, another figure."""
    if kind != "gpu_timing" or not isinstance(base_clocks, Mapping) or not isinstance(cur_clocks, Mapping):
        return None
    moved = [k for k in ("sm_clock_mhz", "mem_clock_mhz")
             if base_clocks.get(k) and cur_clocks.get(k)
             and abs(cur_clocks[k] - base_clocks[k]) / base_clocks[k] > CLOCK_TOLERANCE]
    if not moved:
        return None
    what = ", ".join(f"{k.split('_')[0].upper()} clock {base_clocks[k]:.0f} → {cur_clocks[k]:.0f} MHz" for k in moved)
    return Reason("clock_moved", f"{what}: the GPU ran at another clock")


def work_unchanged(metric_base: str, work_same: bool | None, kernel_same: bool | None) -> Reason | None:
    """The same work (and, on CUDA, the same kernel time): a wall-clock change is the host's.

    ``work_same`` is None where the work was not counted; ``kernel_same`` None where no kernel time
    was measured (the CPU), False where it changed or was not decided.
    """
    if metric_base in WALL_CLOCK and work_same and kernel_same is not False:
        extra = " and GPU kernel time" if kernel_same else ""
        return Reason("work_unchanged", f"work per token{extra} unchanged: the wall clock moved with the host")
    return None


def reasons_for(*candidates: Reason | None) -> tuple[Reason, ...]:
    """The reasons that stand, in order, once each."""
    out: list[Reason] = []
    for r in candidates:
        if r is not None and r.key not in {x.key for x in out}:
            out.append(r)
    return tuple(out)
