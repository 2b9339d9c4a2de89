"""Tolerances and verdicts: how a measured metric is judged against its stored baseline.

Rules (one verdict per metric of a test present in both runs):

* **Direction** comes from ``Metric.better``: ``"lower"`` or ``"higher"`` is better.  Metrics with
  ``better="none"`` or kind ``info`` are shown, never gated (``not_gated``).
* **Change** is reported as ``change = (now - baseline) / |baseline|`` and ``delta = now -
  baseline``, signed as the numbers moved (tokens/s falling 10% is ``-0.10``); whether that is
  worse follows from the direction.  A relative tolerance (``"5%"``) bounds ``|change|``, an
  absolute one (``"0.01"``) bounds ``|delta|``.
* **Timing kinds** (``timing``, ``gpu_timing``, ``energy``): the run is the unit
  (:func:`stats.run_level_change`). Repeats inside one run share its host load, clocks and memory
  placement, so they never make a change significant alone: a *regression* needs the change beyond
  the tolerance by more than run-to-run noise explains (one-sided, ``p < alpha``). The spread is
  measured on the baseline's saved runs (``history``, three or more) or assumed from
  ``MetricInfo.run_spread``, and the verdict's ``evidence`` says which. Worse beyond tolerance
  within that noise is *inconclusive* (a warning naming the smallest change these runs tell
  apart) when unchanged runs seldom move so far (``p < SUGGESTIVE_P``) or the two runs' own
  scattered samples, not the drift between runs, leave the change unknown (more samples would
  settle it); else *pass*, its message saying how far it moved: a warning on what unchanged code
  does every few runs teaches people to skip warnings. A run whose own samples scatter more than
  twice the tolerance is *too_noisy*. The same rules in the good direction give *improvement*;
  better beyond tolerance within the noise is *pass* (nothing to warn of, too little to claim), its
  message saying so. :func:`judge_test` then applies the kernel-time, GPU-clock and
  host-contention guards per model; they live in :mod:`guards` (re-exported here).
* **Not gated**: figures whose ``MetricInfo.gated`` is False (they follow what else the session
  holds) are shown as ``not_gated``.
* **Memory and exact kinds** (``memory``, ``exact``): deterministic, compared directly: beyond
  tolerance in the bad direction is a *regression*, in the good direction an *improvement*.
* **Accuracy kind**: when both sides carry per-item data of equal length (0/1 per question,
  NLL per token) the comparison is paired: exact McNemar on the discordant questions (Wilcoxon
  signed-rank for non-binary items) and a paired bootstrap interval of the mean difference.
  Beyond tolerance with ``p < alpha`` is a regression (or improvement), worse beyond tolerance
  without significance is inconclusive, better without significance passes.  Without items it
  is compared directly.
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
from dataclasses import dataclass, field, asdict, replace
from typing import Sequence, Any, Mapping

from . import stats
from .guards import (CLOCK_TOLERANCE, WALL_CLOCK, clock_guard,  # noqa: F401 (re-exported)
                     contention_guard, kernel_time_guard, model_key)
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
#: a worse timing change beyond tolerance but not significant is *inconclusive* (a warning) only when
#: unchanged runs seldom move that far (one-sided p below this); at or above it the change is one that
#: unchanged code shows at least one run in ten, and it passes, its message saying so. Unchanged
#: quickstart pairs on the 2-core CPU runner moved -29% to +51% between processes (most at p 0.2-0.7
#: with one save): before this rule, a warning on every other run that said nothing about the code
SUGGESTIVE_P = 0.1

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
    evidence: str = ""  # statistical kinds: "history" (measured run-to-run spread) or "assumed"
    #: why a guard (guards.py), or a baseline from other hardware, holds this verdict back, as the
    #: message's closing ``[...]`` says it; "" if nothing did
    guard: str = ""

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
    guard = ""
    if cross:
        guard = "baseline from other hardware; " + ("gated" if gate_cross_hardware else "not gated")
        msg += f" [{guard}]"
    return Verdict(nodeid=nodeid, metric=name, status=status, baseline=b, current=c, change=change,
                   tolerance=tol.text, cross_hardware=cross, gating=gating, message=msg, delta=delta,
                   unit=cur.unit, better=cur.better, kind=cur.kind, accepted=acc_used, guard=guard, **kw)


def compare_metric(nodeid: str, name: str, base: Metric, cur: Metric, tol: Tolerance, *,
                   same_hardware: bool, gate_cross_hardware: bool = False, alpha: float = 0.01,
                   accepted: Mapping[str, Any] | None = None, conf: float = 0.95,
                   n_boot: int = 2000, seed: int = 0, history: Sequence[float] = (),
                   repeats: Sequence[float] = ()) -> Verdict:
    """Judge one metric of one test against its baseline by the rules of this module.

    ``history``: this metric's figure in earlier saved runs of the baseline (same name and
    hardware), from which the run-to-run spread of the statistical kinds is measured.
    ``repeats``: its figure in the saved runs of the baseline's own code (:func:`repeat_values`);
    with a measured spread, the change is taken from their geometric mean.
    """
    kind = cur.kind or base.kind
    better = cur.better
    common = dict(hardware_bound=kind in HARDWARE_KINDS, same_hardware=same_hardware,
                  gate_cross_hardware=gate_cross_hardware, accepted=accepted)
    if better not in (LOWER, HIGHER) or kind == "info":
        return _finish(nodeid, name, "not_gated", base, cur, tol, **common)
    if not metric_info(name).gated:
        return _finish(nodeid, name, "not_gated", base, cur, tol,
                       detail="(depends on what else the session holds: shown and budgeted, not compared)",
                       **common)
    b, c = base.value, cur.value
    if not (math.isfinite(b) and math.isfinite(c)):
        return _finish(nodeid, name, "inconclusive", base, cur, tol,
                       detail="(a value is missing or not finite)", **common)
    beyond = tol.exceeded(b, c)
    worse = _is_worse(c - b, better)

    if kind in STAT_KINDS:
        bs, cs = _values(base), _values(cur)
        rel_tol = tol.value if tol.relative else (tol.value / abs(b) if b else math.inf)
        info = metric_info(name)
        rl = stats.run_level_change(b, c, rel_tol=rel_tol, history=history, prior_spread=info.run_spread,
                                    prior_df=info.prior_df, base_samples=bs, cur_samples=cs, alpha=alpha,
                                    repeats=repeats)
        evidence = "history" if rl.source == "history" else "assumed"
        if rl.floored:
            spread = (f"run-to-run spread ±{rl.spread * 100:.2g}% assumed: {rl.n_runs} saved runs moved only "
                      f"±{rl.measured * 100:.2g}%, and runs saved in a row miss how far the host drifts")
        elif evidence == "history":
            spread = f"run-to-run spread ±{rl.spread * 100:.2g}% from {rl.n_runs} saved runs"
        else:
            spread = f"run-to-run spread ±{rl.spread * 100:.2g}% assumed: no run history yet"
        if rl.n_reference > 1:  # the baseline's level from its repeated saves: judged and shown from it
            b = rl.reference
            base = replace(base, value=b)
            beyond, worse = tol.exceeded(b, c), _is_worse(c - b, better)
            spread += f"; baseline = geometric mean of its {rl.n_reference} saved runs of the same code"
        det = rl.detectable if math.isfinite(rl.detectable) else None
        ci = rl.ci if all(math.isfinite(x) for x in rl.ci) else None
        kw = dict(p_value=rl.p_value if math.isfinite(rl.p_value) else None, ci=ci, ci_of="change",
                  detectable=det, evidence=evidence)
        ci_txt = f", {1 - 2 * alpha:.0%} CI of change [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
        if beyond:
            if math.isfinite(rl.p_value) and rl.p_value < alpha:
                status = "regression" if worse else "improvement"
                return _finish(nodeid, name, status, base, cur, tol,
                               detail=f"(p={rl.p_value:.3g}{ci_txt}; {spread})", **kw, **common)
            # a pass when unchanged runs often move this far and run-to-run drift, not the two runs' own
            # scattered samples, is what leaves the change unknown (more samples would not settle it)
            seldom = not (math.isfinite(rl.p_value) and rl.p_value >= SUGGESTIVE_P)
            scattered = rl.se_within > rl.se_runs
            if worse and (seldom or scattered):
                why = ("unchanged runs seldom move this far" if seldom
                       else "the two runs' own samples scatter too much to tell")
                return _finish(nodeid, name, "inconclusive", base, cur, tol,
                               detail=(f"({why}, but within the noise at {alpha:g}: p={rl.p_value:.3g}{ci_txt}; "
                                       f"{spread}; changes beyond {_pct(det)} are told apart)"), **kw, **common)
        if len(cs) >= 3 and stats.rel_ci_halfwidth(cs) > 2 * max(rel_tol, rl.spread):
            return _finish(nodeid, name, "too_noisy", base, cur, tol,
                           detail=(f"(this run's {len(cs)} samples scatter ±"
                                   f"{stats.rel_ci_halfwidth(cs) * 100:.1f}% around their median, more than twice "
                                   "the tolerance)"), **kw, **common)
        # beyond the tolerance but within the noise, better, or worse by as much as unchanged runs often
        # move: no regression to warn of, and too little evidence to call it an improvement
        moved_txt = ""
        if beyond and worse:
            moved_txt = (f"(worse, within what unchanged runs often move: p={rl.p_value:.3g}{ci_txt}; {spread}; "
                         f"changes beyond {_pct(det)} are told apart)")
        elif beyond:
            moved_txt = f"(better, within what unchanged runs move: p={rl.p_value:.3g}{ci_txt}; {spread})"
        return _finish(nodeid, name, "pass", base, cur, tol, detail=moved_txt, **kw, **common)

    if kind == "accuracy" and base.items and cur.items and len(base.items) == len(cur.items):
        p = stats.paired_p_value(base.items, cur.items)
        ci = stats.paired_bootstrap_diff_ci(base.items, cur.items, conf, n_boot, seed)
        detail = (f"paired over {len(cur.items)} items: p={p:.3g}, {conf:.0%} CI of mean item difference "
                  f"[{ci[0]:+.4g}, {ci[1]:+.4g}]")
        if beyond and p < alpha:
            status = "regression" if worse else "improvement"
        elif beyond and worse:
            status = "inconclusive"
            detail += f" (not significant at {alpha:g})"
        else:  # within tolerance, or better by more than it without significance
            status = "pass"
            if beyond:
                detail += f" (better, not significant at {alpha:g})"
        return _finish(nodeid, name, status, base, cur, tol, p_value=p, ci=ci, ci_of="items",
                       detail=detail, **common)

    # memory, exact, accuracy without per-item data: deterministic, compared directly
    status = ("regression" if worse else "improvement") if beyond else "pass"
    return _finish(nodeid, name, status, base, cur, tol, **common)


_HOST_ORDER = ("quiet", "contended", "too_busy")


def _note_host(host: dict[str, Mapping[str, Any]], key: str, h: Any, prefix: str) -> None:
    """Keep the worst host state seen for a model, on either side of the comparison."""
    if not isinstance(h, Mapping) or h.get("state") not in _HOST_ORDER:
        return
    seen = host.get(key)
    if seen is None or _HOST_ORDER.index(h["state"]) > _HOST_ORDER.index(seen["state"]):
        host[key] = {"state": h["state"], "summary": prefix + str(h.get("summary", ""))}


def judge_test(nodeid: str, metrics: Mapping[str, Metric], base_test: Mapping[str, Any] | None, *,
               tolerances: Mapping[str, Tolerance] | None = None,
               per_test: Mapping[str, Tolerance] | None = None,
               accepted: Mapping[str, Any] | None = None, same_hardware: bool,
               gate_cross_hardware: bool = False, history: Mapping[str, Sequence[float]] | None = None,
               repeats: Mapping[str, Sequence[float]] | None = None, alpha: float = 0.01) -> list[Verdict]:
    """Every verdict of one test against its baseline: the one path the plugin, ``quantperf
    compare`` and the reports share.

    Metrics only in this run are ``new``; only in the baseline, ``gone``; then the kernel-time and
    host-contention rules apply per model. ``base_test`` None means the test is new.
    """
    tolerances = tolerances or {}
    per = {nodeid: dict(per_test or {})}
    accepted = accepted or {}
    history = history or {}
    repeats = repeats or {}
    base_metrics = (base_test or {}).get("metrics") or {}
    verdicts: list[Verdict] = []
    host: dict[str, Mapping[str, Any]] = {}
    for name in metrics:
        cur = metrics[name]
        _note_host(host, model_key(name), (cur.extra or {}).get("host"), "")
        tol = tolerance_for(nodeid, name, tolerances, per)
        if name not in base_metrics:
            verdicts.append(Verdict(nodeid, name, "new", None, cur.value, None, tol.text,
                                    message=f"{name}: {_fmt(cur.value)} {cur.unit}".rstrip()
                                    + ": new (no baseline value)",
                                    unit=cur.unit, better=cur.better, kind=cur.kind))
            continue
        base = _metric(name, base_metrics[name])
        _note_host(host, model_key(name), (base.extra or {}).get("host"), "the baseline's runs: ")
        verdicts.append(compare_metric(nodeid, name, base, cur, tol, same_hardware=same_hardware,
                                       gate_cross_hardware=gate_cross_hardware, alpha=alpha,
                                       accepted=accepted.get(name), history=history.get(name, ()),
                                       repeats=repeats.get(name, ())))
    if base_test is not None:
        for name in sorted(set(base_metrics) - set(metrics)):
            base = _metric(name, base_metrics[name])
            tol = tolerance_for(nodeid, name, tolerances, per)
            verdicts.append(Verdict(nodeid, name, "gone", base.value, None, None, tol.text,
                                    message=f"{name}: baseline {_fmt(base.value)} {base.unit}".rstrip()
                                    + ": gone (not measured in this run)",
                                    unit=base.unit, better=base.better, kind=base.kind))
    clocks = {name: ((base_metrics.get(name) or {}).get("extra") or {}).get("gpu_clocks") for name in metrics}
    verdicts = clock_guard(verdicts, {n: (c, (metrics[n].extra or {}).get("gpu_clocks")) for n, c in clocks.items()})
    return contention_guard(kernel_time_guard(verdicts), host)


def history_values(history: Sequence[Mapping[str, Any]], nodeid: str, hardware_id: str | None,
                   limit: int = 10) -> dict[str, list[float]]:
    """Per metric of one test, its figure in the latest ``limit`` saved runs on this hardware."""
    return _figures(_runs_on(history, hardware_id)[-limit:], nodeid)


def repeat_values(history: Sequence[Mapping[str, Any]], nodeid: str, base_doc: Mapping[str, Any] | None,
                  limit: int = 10) -> dict[str, list[float]]:
    """Per metric of one test, its figure in the saved runs of the baseline's own code.

    Those are the runs on the baseline's hardware whose git commit is the baseline's, both trees
    clean: the same code measured again, so their spread is only the host's and their mean is a
    better level than one run. Without git (or with a dirty tree) nothing is known to be the same
    code, and the baseline's own figure stands alone.
    """
    git = (base_doc or {}).get("git") or {}
    commit = git.get("commit")
    if not commit or git.get("dirty") is not False:
        return {}
    runs = [h for h in _runs_on(history, _hardware_id(base_doc or {}))
            if (h.get("git") or {}).get("commit") == commit and (h.get("git") or {}).get("dirty") is False]
    return _figures(runs[-limit:], nodeid)


def _runs_on(history: Sequence[Mapping[str, Any]], hardware_id: str | None) -> list[Mapping[str, Any]]:
    return [h for h in history if h.get("kind", "run") == "run" and _hardware_id(h) == hardware_id]


def _figures(runs: Sequence[Mapping[str, Any]], nodeid: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for doc in runs:
        for name, m in (((doc.get("tests") or {}).get(nodeid) or {}).get("metrics") or {}).items():
            v = m.get("value") if isinstance(m, Mapping) else None
            if isinstance(v, (int, float)) and math.isfinite(v):
                out.setdefault(name, []).append(float(v))
    return out


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
                 gate_cross_hardware: bool = False, alpha: float = 0.01,
                 history: Sequence[Mapping[str, Any]] | None = None) -> Comparison:
    """Compare every metric of every test of ``cur_doc`` with ``base_doc`` (run documents).

    Metrics only in the current run are ``new``; only in the baseline, of a test that ran,
    ``gone``; whole tests missing from the current run are listed in ``gone_tests`` (a shard
    or ``-k`` selection), not judged.  Acceptance records come from ``base_doc["accepted"]``;
    ``history`` (saved runs of the baseline's name) gives the run-to-run spread.
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
        cur_metrics = {name: _metric(name, d) for name, d in
                       sorted(((cur_tests[nodeid] or {}).get("metrics") or {}).items())}
        if nodeid not in base_tests:
            new_tests.append(nodeid)
        own = (per_test or {}).get(nodeid)
        verdicts += judge_test(nodeid, cur_metrics, base_tests.get(nodeid) if nodeid in base_tests else None,
                               tolerances=tolerances, per_test=own, accepted=accepted_all.get(nodeid) or {},
                               same_hardware=same, gate_cross_hardware=gate_cross_hardware,
                               history=history_values(history or (), nodeid, bh),
                               repeats=repeat_values(history or (), nodeid, base_doc), alpha=alpha)
    gone_tests = sorted(set(base_tests) - set(cur_tests))
    counts = {s: 0 for s in STATUSES}
    for v in verdicts:
        counts[v.status] += 1
    counts["gating"] = sum(1 for v in verdicts if v.gating)
    return Comparison(tuple(verdicts), tuple(new_tests), tuple(gone_tests), same, bh, ch, counts)
