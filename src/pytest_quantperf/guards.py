"""The verdict guards: what turns a regression or improvement into *inconclusive* after the fact.

A per-metric verdict (:func:`compare.compare_metric`) sees one metric; these rules look across the
verdicts of one test, or at what its measurements recorded about the machine, and withdraw a
verdict the figures cannot carry. :func:`compare.judge_test` applies them, per model of a test:

* :func:`kernel_time_guard`: a wall-clock change of a model whose GPU kernel time held steady,
  without run history, is a host-side change or noise.
* :func:`clock_guard`: a kernel-time change measured at another GPU SM or memory clock (more
  than :data:`CLOCK_TOLERANCE` apart) is the clock's.
* :func:`contention_guard`: a timing verdict taken while the host was contended is not a
  regression by itself.

Guarded verdicts are never gating; ``guard`` holds the reason and the message ends with it in
brackets. Verdicts are taken and returned as they are (any dataclass with ``nodeid``, ``metric``,
``status``, ``kind``, ``evidence``, ``gating``, ``guard`` and ``message``), so this module imports
nothing of ``compare``; ``compare`` re-exports every name here.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence, TypeVar

from .tolerance import base_metric_name

__all__ = ["WALL_CLOCK", "CLOCK_TOLERANCE", "model_key", "kernel_time_guard", "clock_guard",
           "contention_guard"]

V = TypeVar("V")  # a compare.Verdict

WALL_CLOCK = ("latency_ms", "ttft_ms", "tpot_ms", "tokens_per_s")


def _withdrawn(v: V, status: str, reason: str) -> V:
    """``v`` taken back by a guard: not gating, ``reason`` kept in ``guard`` and closing the message."""
    return replace(v, status=status, gating=False, guard=reason, message=f"{v.message} [{reason}]")


def model_key(metric: str) -> str:
    """Which model of a test a metric belongs to: ``""`` (the first), ``"ref."`` or ``"[label]"``."""
    base = base_metric_name(metric)
    return metric.replace(base, "", 1)


def kernel_time_guard(verdicts: Sequence[V]) -> list[V]:
    """Wall-clock changes of a model whose GPU kernel time held steady are not verdicts on their own.

    Measured on an H200: wall time per token of identical code moved +94% between two calls minutes
    apart while CUPTI kernel time moved 0.05%. Where no saved runs measure how far the wall clock
    moves (``evidence == "assumed"``), a wall-clock regression or improvement of a model whose own
    ``gpu_ms_per_token`` passed is inconclusive ("host-side change or noise"). With run history the
    measured spread decides and host-side regressions gate. Keyed by model, so a reference's steady
    kernel time never covers a candidate's wall clock.
    """
    steady = {(v.nodeid, model_key(v.metric)) for v in verdicts
              if base_metric_name(v.metric) == "gpu_ms_per_token" and v.status == "pass"}
    out = []
    for v in verdicts:
        if (v.status in ("regression", "improvement") and base_metric_name(v.metric) in WALL_CLOCK
                and v.evidence == "assumed" and (v.nodeid, model_key(v.metric)) in steady):
            v = _withdrawn(v, "inconclusive", "GPU kernel time unchanged and no run history: host-side change or "
                                              "noise, not gated; saved runs of the baseline measure the spread")
        out.append(v)
    return out


#: SM or memory clocks further apart than this make two kernel times incomparable
CLOCK_TOLERANCE = 0.01


def clock_guard(verdicts: Sequence[V], clocks: Mapping[str, tuple[Any, Any]]) -> list[V]:
    """A kernel-time change measured at another GPU clock is the clock's, not the code's.

    Kernel time scales with the SM (compute) and memory clocks, which NVML reads around every
    measurement; two machines of one hardware id, or one GPU under another power state, differ
    there. Where either clock moved by more than :data:`CLOCK_TOLERANCE`, a kernel-time regression
    or improvement is inconclusive and names both clocks.
    """
    out = []
    for v in verdicts:
        b, c = clocks.get(v.metric, (None, None))
        if v.kind == "gpu_timing" and v.status in ("regression", "improvement") \
                and isinstance(b, Mapping) and isinstance(c, Mapping):
            moved = [k for k in ("sm_clock_mhz", "mem_clock_mhz")
                     if b.get(k) and c.get(k) and abs(c[k] - b[k]) / b[k] > CLOCK_TOLERANCE]
            if moved:
                what = ", ".join(f"{k.split('_')[0].upper()} clock {b[k]:.0f} → {c[k]:.0f} MHz" for k in moved)
                v = _withdrawn(v, "inconclusive", f"{what}: the GPU ran at another clock; not gated")
        out.append(v)
    return out


def contention_guard(verdicts: Sequence[V], host: Mapping[str, Mapping[str, Any]]) -> list[V]:
    """A timing verdict taken while the host was contended is not a regression by itself.

    ``host`` maps a model key (:func:`model_key`) to the host figures of its measurement
    (``state``: quiet / contended / too_busy, and a ``summary``); a busy neighbour stalls torch's
    intra-op threads and slows a whole run several-fold, which no statistic on the run can undo.
    """
    out = []
    for v in verdicts:
        h = host.get(model_key(v.metric)) or {}
        state = h.get("state")
        if v.kind in ("timing", "energy") and state in ("contended", "too_busy") \
                and v.status in ("regression", "improvement", "inconclusive", "too_noisy"):
            what = "too busy to measure" if state == "too_busy" else "contended"
            status = "inconclusive" if v.status in ("regression", "improvement") else v.status
            v = _withdrawn(v, status, f"host {what}: {h.get('summary', '')}; not gated")
        out.append(v)
    return out
