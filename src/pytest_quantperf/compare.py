"""Tolerances and verdicts: how a measured metric is judged against its stored baseline.

Rules (one verdict per metric of a test present in both runs):

* **Direction** comes from ``Metric.better``: ``"lower"`` or ``"higher"`` is better.  Metrics with
  ``better="none"`` or kind ``info`` are shown, never gated (``not_gated``).
* **Change** is reported as ``change = (now - baseline) / |baseline|`` and ``delta = now -
  baseline``, signed as the numbers moved (tokens/s falling 10% is ``-0.10``); whether that is
  worse follows from the direction.  A relative tolerance (``"5%"``) bounds ``|change|``, an
  absolute one (``"0.01"``) bounds ``|delta|``.
* **Timing kinds** (``timing``, ``gpu_timing``, ``energy``): noisy, so statistics decide.
  A *regression* needs all three: the median moved beyond the tolerance in the bad direction,
  a one-sided Mann–Whitney U test on the samples gives ``p < alpha`` (default 0.01), and the
  bootstrap interval (at ``1 - 2·alpha``, at least 95%) of the median ratio (now / baseline)
  lies wholly on the bad side of 1 — and for wall-clock kinds (``timing``, ``energy``) wholly
  beyond the tolerance itself, because wall time drifts 10-17% between runs on shared GPU hosts
  and an A/A pair must never fail.  ``gpu_timing`` (CUPTI kernel time, repeatable to ~0.1%)
  with as few as two samples a side is compared directly when every sample lies within a
  third of the tolerance of its side's median.
  Beyond tolerance but not significant is *inconclusive* (a warning, with the number of
  samples that would settle it).  Within tolerance while either side's median is known less
  well than the tolerance (relative half-width of its confidence interval wider than the
  tolerance, or a single sample) is *too_noisy*: reported, never silently passed.  The same
  rules in the good direction give *improvement*.  With fewer than 3 samples on a side a
  change beyond tolerance is *inconclusive*.
* **Memory and exact kinds** (``memory``, ``exact``): deterministic, compared directly: beyond
  tolerance in the bad direction is a *regression*, in the good direction an *improvement*.
* **Accuracy kind**: when both sides carry per-item data of equal length (0/1 per question,
  NLL per token) the comparison is paired: exact McNemar on the discordant questions (Wilcoxon
  signed-rank for non-binary items) and a paired bootstrap interval of the mean difference.
  Beyond tolerance with ``p < alpha`` is a regression (or improvement), beyond tolerance
  without significance is inconclusive.  Without items it is compared directly.
* **Hardware**: speed and energy (the hardware-bound kinds) measured on different hardware
  (``hardware_id`` differs) keep their computed status, but ``cross_hardware`` is set, the
  message says so and they do not gate unless ``gate_cross_hardware``.  Memory and accuracy
  always gate.
* **Accepted**: a baseline may carry an acceptance record for a test and metric
  (``{"value", "reason", "who", "when"}``, written by ``quantperf accept``).  A regression or
  inconclusive result whose current value is no worse than the accepted value (within the
  tolerance) becomes *accepted*: shown with its reason, not gating.
* Only *regression* gates (fails the test); everything else is information or a warning.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import replace, dataclass, field, asdict
from typing import Sequence, Any, Mapping

from . import stats
from .results import METRICS, Metric, metric_info, LOWER, HIGHER
from .tolerance import (DEFAULT_TOLERANCES, Tolerance, base_metric_name,  # noqa: F401 (re-exported)
                        parse_tolerance, parse_tolerance_spec, tolerance_for)

__all__ = [
    "Tolerance", "parse_tolerance", "parse_tolerance_spec", "DEFAULT_TOLERANCES", "Verdict",
    "STATUSES", "compare_metric", "compare_runs", "Comparison", "tolerance_for", "base_metric_name",
]

STATUSES = ("pass", "improvement", "regression", "inconclusive", "too_noisy", "new", "gone",
            "accepted", "not_gated")
STAT_KINDS = ("timing", "energy", "gpu_timing")
DIRECT_KINDS = ("memory", "exact")
HARDWARE_KINDS = ("timing", "gpu_timing", "energy")

@dataclass(frozen=True)
class Verdict:
    """The judgement of one metric of one test against the baseline.

    ``change`` is relative and signed as the value moved (see module docstring); ``ci`` is the
    interval of ``change`` for timing kinds and of the mean per-item difference for paired
    accuracy (``ci_of`` says which); ``detectable`` is the smallest relative change these
    samples could have flagged; ``gating`` says whether this verdict fails the test.
    """

    nodeid: str
    metric: str
    status: str
    baseline: float | None
    current: float | None
    change: float | None
    tolerance: str
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    detectable: float | None = None
    samples_needed: int | None = None
    cross_hardware: bool = False
    gating: bool = False
    message: str = ""
    delta: float | None = None
    unit: str = ""
    better: str = LOWER
    kind: str = ""
    ci_of: str | None = None
    accepted: Mapping[str, Any] | None = None
    source: str = "baseline"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown verdict status {self.status!r}; one of {STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        d["accepted"] = dict(self.accepted) if self.accepted is not None else None
        for k in ("change", "delta", "p_value", "detectable", "baseline", "current"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None
        if d["ci"] is not None and not all(math.isfinite(x) for x in d["ci"]):
            d["ci"] = None
        return d


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    av = abs(v)
    if av != 0 and (av >= 1e6 or av < 1e-3):
        return f"{v:.3g}"
    if av >= 100:
        return f"{v:.1f}"
    return f"{v:.4g}"


def _pct(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v * 100:+.1f}%"


def _values(m: Metric) -> list[float]:
    s = [x for x in m.samples if math.isfinite(x)]
    return s if s else ([m.value] if math.isfinite(m.value) else [])


def _is_worse(delta: float, better: str) -> bool:
    return delta > 0 if better == LOWER else delta < 0


def _finish(nodeid: str, name: str, status: str, base: Metric, cur: Metric, tol: Tolerance, *,
            hardware_bound: bool, same_hardware: bool, gate_cross_hardware: bool,
            accepted: Mapping[str, Any] | None, detail: str = "", **kw: Any) -> Verdict:
    """Apply the hardware and acceptance rules, write the message, build the Verdict."""
    b, c = base.value, cur.value
    delta = c - b if (math.isfinite(b) and math.isfinite(c)) else None
    change = (delta / abs(b)) if (delta is not None and b != 0) else (0.0 if delta == 0 else None)
    cross = hardware_bound and not same_hardware
    acc_used = None
    if accepted and status in ("regression", "inconclusive"):
        try:
            av = float(accepted["value"])
        except (KeyError, TypeError, ValueError):
            av = math.nan
        if math.isfinite(av) and math.isfinite(c):
            no_worse = (not _is_worse(c - av, cur.better)) or not tol.exceeded(av, c)
            if no_worse:
                status = "accepted"
                acc_used = dict(accepted)
    gating = status == "regression" and not (cross and not gate_cross_hardware)
    unit = f" {cur.unit}" if cur.unit else ""
    parts = [f"{name}: baseline {_fmt(b)}{unit} → now {_fmt(c)}{unit}",
             f"({_pct(change)}" + (f", Δ {delta:+.4g}" if delta is not None and not tol.relative else "")
             + f"; tolerance {tol.text})"]
    if detail:
        parts.append(detail)
    msg = " ".join(parts) + f": {status}"
    if status == "accepted" and acc_used:
        msg += (f" (accepted at {_fmt(float(acc_used['value']))}{unit} by {acc_used.get('who', '?')}"
                f": {acc_used.get('reason', '')})")
    if cross:
        msg += (" [baseline from other hardware; " + ("gated" if gate_cross_hardware else "not gated") + "]")
    return Verdict(nodeid=nodeid, metric=name, status=status, baseline=b, current=c, change=change,
                   tolerance=tol.text, cross_hardware=cross, gating=gating, message=msg, delta=delta,
                   unit=cur.unit, better=cur.better, kind=cur.kind, accepted=acc_used, **kw)


def compare_metric(nodeid: str, name: str, base: Metric, cur: Metric, tol: Tolerance, *,
                   same_hardware: bool, gate_cross_hardware: bool = False, alpha: float = 0.01,
                   accepted: Mapping[str, Any] | None = None, conf: float = 0.95,
                   n_boot: int = 2000, seed: int = 0) -> Verdict:
    """Judge one metric of one test against its baseline by the rules of this module."""
    kind = cur.kind or base.kind
    better = cur.better
    common = dict(hardware_bound=kind in HARDWARE_KINDS, same_hardware=same_hardware,
                  gate_cross_hardware=gate_cross_hardware, accepted=accepted)
    if better not in (LOWER, HIGHER) or kind == "info":
        return _finish(nodeid, name, "not_gated", base, cur, tol, **common)
    b, c = base.value, cur.value
    if not (math.isfinite(b) and math.isfinite(c)):
        return _finish(nodeid, name, "inconclusive", base, cur, tol,
                       detail="(a value is missing or not finite)", **common)
    beyond = tol.exceeded(b, c)
    worse = _is_worse(c - b, better)

    if kind in STAT_KINDS:
        bs, cs = _values(base), _values(cur)
        detectable = stats.min_detectable_change(bs, cs, alpha)
        det = detectable if math.isfinite(detectable) else None
        rel_tol = tol.value if tol.relative else (tol.value / abs(b) if b else math.inf)
        if beyond:
            eff = abs(c - b) / abs(b) if b else rel_tol
            if kind == "gpu_timing" and len(bs) >= 2 and len(cs) >= 2 and _steady(bs, cs, rel_tol):
                # kernel time repeats to ~0.1%: when every sample on both sides agrees far closer than the
                # tolerance, the change itself is beyond noise and is compared directly
                status = "regression" if worse else "improvement"
                return _finish(nodeid, name, status, base, cur, tol, detectable=det,
                               detail=(f"(kernel time: every sample within {_spread(bs + cs) * 100:.2f}% of its side's "
                                       f"median, under a third of the tolerance)"), **common)
            if len(bs) < 3 or len(cs) < 3:
                need = stats.samples_needed(bs, cs, eff, alpha)
                return _finish(nodeid, name, "inconclusive", base, cur, tol, detectable=det,
                               samples_needed=need,
                               detail=f"(only {len(bs)} vs {len(cs)} samples; ~{need} per side would settle it)",
                               **common)
            alt = "greater" if c > b else "less"
            p = stats.mann_whitney(cs, bs, alt)
            # a one-sided test at alpha matches a two-sided interval at 1 - 2 alpha
            ci_conf = max(conf, 1 - 2 * alpha)
            lo, hi = stats.bootstrap_median_ratio_ci(bs, cs, ci_conf, n_boot, seed)
            ci = (lo - 1, hi - 1) if math.isfinite(lo) else None
            # wall clock drifts between runs on shared hosts: a regression needs the whole interval of the
            # change beyond the tolerance, not merely beyond zero (an A/A pair must not fail)
            edge = rel_tol if kind in ("timing", "energy") else 0.0
            clear = ci is not None and (ci[0] > edge if c > b else ci[1] < -edge)
            detail = f"p={p:.3g}" + (f", {ci_conf:.0%} CI of change [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")
            if p < alpha and clear:
                status = "regression" if worse else "improvement"
                return _finish(nodeid, name, status, base, cur, tol, p_value=p, ci=ci, ci_of="change",
                               detectable=det, detail=detail, **common)
            need = stats.samples_needed(bs, cs, eff, alpha)
            if need <= max(len(bs), len(cs)):
                # the planning formula is already met yet the test failed: ask for twice as many
                need = 2 * max(len(bs), len(cs))
            return _finish(nodeid, name, "inconclusive", base, cur, tol, p_value=p, ci=ci, ci_of="change",
                           detectable=det, samples_needed=need,
                           detail=detail + f" (not significant at {alpha:g}; ~{need} samples per side would settle it)",
                           **common)
        hw_b, hw_c = stats.rel_ci_halfwidth(bs, conf), stats.rel_ci_halfwidth(cs, conf)
        if max(hw_b, hw_c) > rel_tol:
            need = stats.samples_needed(bs, cs, rel_tol, alpha) if rel_tol > 0 else None
            spread = ("spread unknown with one sample" if not math.isfinite(max(hw_b, hw_c))
                      else f"median known to ±{max(hw_b, hw_c) * 100:.1f}%, wider than the tolerance")
            return _finish(nodeid, name, "too_noisy", base, cur, tol, detectable=det, samples_needed=need,
                           detail=f"({spread}; {len(bs)} vs {len(cs)} samples)", **common)
        return _finish(nodeid, name, "pass", base, cur, tol, detectable=det, **common)

    if kind == "accuracy" and base.items and cur.items and len(base.items) == len(cur.items):
        p = stats.paired_p_value(base.items, cur.items)
        ci = stats.paired_bootstrap_diff_ci(base.items, cur.items, conf, n_boot, seed)
        detail = (f"paired over {len(cur.items)} items: p={p:.3g}, {conf:.0%} CI of mean item difference "
                  f"[{ci[0]:+.4g}, {ci[1]:+.4g}]")
        if beyond:
            if p < alpha:
                status = "regression" if worse else "improvement"
            else:
                status = "inconclusive"
                detail += f" (not significant at {alpha:g})"
        else:
            status = "pass"
        return _finish(nodeid, name, status, base, cur, tol, p_value=p, ci=ci, ci_of="items",
                       detail=detail, **common)

    # memory, exact, accuracy without per-item data: deterministic, compared directly
    status = ("regression" if worse else "improvement") if beyond else "pass"
    return _finish(nodeid, name, status, base, cur, tol, **common)


WALL_CLOCK = ("latency_ms", "ttft_ms", "tpot_ms", "tokens_per_s")


def kernel_time_guard(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Wall-clock regressions of a test whose GPU kernel time held steady become inconclusive.

    Measured on an H100: wall time per run drifts 10-30% between runs on a shared host, enough to
    make an A/A pair look significant, while CUPTI kernel time repeats to ~0.1%. When the same
    test's ``gpu_ms_per_token`` passed against the same baseline, a wall-clock change is the host's
    (or noise): reported with that reason, never failing the test. GPU-side slowdowns are caught by
    ``gpu_ms_per_token`` itself.
    """
    steady = {(v.nodeid, base_metric_name(v.metric).split("[")[0]) for v in verdicts
              if base_metric_name(v.metric) == "gpu_ms_per_token" and v.status in ("pass", "improvement")}
    steady_tests = {n for n, _ in steady}
    out = []
    for v in verdicts:
        if v.status == "regression" and v.nodeid in steady_tests and base_metric_name(v.metric) in WALL_CLOCK:
            v = replace(v, status="inconclusive", gating=False,
                        message=v.message + " [GPU kernel time unchanged: host-side change or noise, not gated]")
        out.append(v)
    return out


def _spread(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.inf
    med = statistics.median(vals)
    return (max(vals) - min(vals)) / abs(med) if med else math.inf


def _steady(bs: Sequence[float], cs: Sequence[float], rel_tol: float) -> bool:
    return max(_spread(bs), _spread(cs)) < rel_tol / 3


@dataclass(frozen=True)
class Comparison:
    """All verdicts of one run against one baseline, with what is new, gone and on which hardware."""

    verdicts: tuple[Verdict, ...]
    new_tests: tuple[str, ...]
    gone_tests: tuple[str, ...]
    same_hardware: bool
    baseline_hardware_id: str | None
    current_hardware_id: str | None
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "regression"]

    @property
    def gating(self) -> list[Verdict]:
        """Verdicts that fail their test."""
        return [v for v in self.verdicts if v.gating]

    def for_test(self, nodeid: str) -> list[Verdict]:
        return [v for v in self.verdicts if v.nodeid == nodeid]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdicts": [v.to_dict() for v in self.verdicts],
            "new_tests": list(self.new_tests), "gone_tests": list(self.gone_tests),
            "same_hardware": self.same_hardware, "baseline_hardware_id": self.baseline_hardware_id,
            "current_hardware_id": self.current_hardware_id, "counts": dict(self.counts),
        }


def _metric(name: str, d: Mapping[str, Any]) -> Metric:
    info = metric_info(name, str(d.get("unit", "") or ""), str(d.get("better", LOWER) or LOWER))
    full = {"name": name, "unit": info.unit, "better": info.better, "kind": info.kind, **d}
    return Metric.from_dict(full)


def _hardware_id(doc: Mapping[str, Any]) -> str | None:
    env = doc.get("env") or {}
    hid = env.get("hardware_id") if isinstance(env, Mapping) else None
    return str(hid) if hid else None


def compare_runs(base_doc: Mapping[str, Any], cur_doc: Mapping[str, Any],
                 tolerances: Mapping[str, Tolerance] | None = None, *,
                 per_test: Mapping[str, Mapping[str, Tolerance]] | None = None,
                 gate_cross_hardware: bool = False, alpha: float = 0.01) -> Comparison:
    """Compare every metric of every test of ``cur_doc`` with ``base_doc`` (run documents).

    Metrics only in the current run are ``new``; only in the baseline, of a test that ran,
    ``gone``; whole tests missing from the current run are listed in ``gone_tests`` (a shard
    or ``-k`` selection), not judged.  Acceptance records come from ``base_doc["accepted"]``.
    """
    tolerances = tolerances or {}
    bh, ch = _hardware_id(base_doc), _hardware_id(cur_doc)
    same = bh is not None and bh == ch
    base_tests = base_doc.get("tests") or {}
    cur_tests = cur_doc.get("tests") or {}
    accepted_all = base_doc.get("accepted") or {}
    verdicts: list[Verdict] = []
    new_tests: list[str] = []
    for nodeid in sorted(cur_tests):
        cur_metrics = (cur_tests[nodeid] or {}).get("metrics") or {}
        if nodeid not in base_tests:
            new_tests.append(nodeid)
        base_metrics = ((base_tests.get(nodeid) or {}).get("metrics") or {})
        acc_test = accepted_all.get(nodeid) or {}
        for name in sorted(cur_metrics):
            cur = _metric(name, cur_metrics[name])
            tol = tolerance_for(nodeid, name, tolerances, per_test)
            if name not in base_metrics:
                verdicts.append(Verdict(nodeid, name, "new", None, cur.value, None, tol.text,
                                        message=f"{name}: {_fmt(cur.value)} {cur.unit}".rstrip()
                                        + ": new (no baseline value)",
                                        unit=cur.unit, better=cur.better, kind=cur.kind))
                continue
            base = _metric(name, base_metrics[name])
            verdicts.append(compare_metric(nodeid, name, base, cur, tol, same_hardware=same,
                                           gate_cross_hardware=gate_cross_hardware, alpha=alpha,
                                           accepted=acc_test.get(name)))
        if nodeid in base_tests:
            for name in sorted(set(base_metrics) - set(cur_metrics)):
                base = _metric(name, base_metrics[name])
                tol = tolerance_for(nodeid, name, tolerances, per_test)
                verdicts.append(Verdict(nodeid, name, "gone", base.value, None, None, tol.text,
                                        message=f"{name}: baseline {_fmt(base.value)} {base.unit}".rstrip()
                                        + ": gone (not measured in this run)",
                                        unit=base.unit, better=base.better, kind=base.kind))
    verdicts = kernel_time_guard(verdicts)
    gone_tests = sorted(set(base_tests) - set(cur_tests))
    counts = {s: 0 for s in STATUSES}
    for v in verdicts:
        counts[v.status] += 1
    counts["gating"] = sum(1 for v in verdicts if v.gating)
    return Comparison(tuple(verdicts), tuple(new_tests), tuple(gone_tests), same, bh, ch, counts)
