"""Verdicts against a stored baseline: every figure judged by the one rule of :mod:`.verdicts.rule`.

For each figure of a test present in both runs, :func:`compare_metric` builds the change and its
interval on the worse-is-up scale and lets the rule decide *regression*, *improvement*, *pass* or
*inconclusive*; :func:`judge_test` adds *new* and *gone* and the reasons that withhold gating
(:mod:`.verdicts.reasons`). How the interval is built depends on what the figure is:

* **timing, kernel time, energy**: the run is the unit. The interval comes from how far unchanged
  runs move (:func:`stats.run_change`): an assumed spread of stated weight, pooled continuously
  with the saved runs of the baseline's own code, plus the two runs' own sample scatter;
* **accuracy with items on both sides** (0/1 per question, NLL per token for perplexity): paired,
  the bootstrap interval of the mean item difference;
* **memory, exact, work, and accuracy without items**: deterministic, the interval is the point.

Figures of kind ``info``, without a direction, or not gated by the catalogue are ``not_gated``.
Only a regression with no reason gates (fails the test).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, asdict, replace
from typing import Sequence, Any, Mapping

from .. import stats
from ..results import Metric, metric_info, LOWER, HIGHER
from .tolerance import (DEFAULT_TOLERANCES, Tolerance, base_metric_name,  # noqa: F401 (public names)
                        parse_tolerance, parse_tolerance_spec, tolerance_for)
from . import reasons as _r
from .rule import ALPHA, INCONCLUSIVE, PASS, REGRESSION, STAT_KINDS, band_for, decide

__all__ = [
    "Tolerance", "parse_tolerance", "parse_tolerance_spec", "DEFAULT_TOLERANCES", "Verdict",
    "STATUSES", "compare_metric", "compare_runs", "Comparison", "tolerance_for", "base_metric_name",
    "judge_test", "same_code_values", "model_key", "figure_interval",
]

STATUSES = ("pass", "improvement", "regression", "inconclusive", "new", "gone", "not_gated")
DETERMINISTIC_KINDS = ("memory", "exact", "work")


@dataclass(frozen=True)
class Verdict:
    """The judgement of one metric of one test against the baseline.

    ``change`` is relative and signed as the value moved; ``ci`` the interval of ``change`` at
    ``1 - 2 alpha`` (a single point for deterministic figures); ``detectable`` the smallest worse
    relative change these runs decide; ``reasons`` what withholds gating; ``gating`` whether this
    verdict fails the test (a regression with no reason).
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
    #: where the interval came from, in words (the spread's source, the pairing)
    evidence: str = ""
    reasons: tuple[_r.Reason, ...] = ()
    #: the whole interval lies on the worse side of zero
    shown_worse: bool = False

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown verdict status {self.status!r}; one of {STATUSES}")

    @property
    def guard(self) -> str:
        """The reasons as one line ("" when none)."""
        return "; ".join(r.text for r in self.reasons)

    @property
    def warns(self) -> bool:
        """Printed as a warning: inconclusive, shown worse, and nothing explains it."""
        return self.status == INCONCLUSIVE and self.shown_worse and not self.reasons

    def with_reasons(self, reasons: Sequence[_r.Reason]) -> "Verdict":
        if not reasons:
            return self
        allr = tuple(self.reasons) + tuple(r for r in reasons if r.key not in {x.key for x in self.reasons})
        text = "; ".join(r.text for r in allr)
        base_msg = self.message.split(" [not gated: ", 1)[0]
        return replace(self, reasons=allr, gating=False,
                       cross_hardware=self.cross_hardware or any(r.key == "other_hardware" for r in allr),
                       message=f"{base_msg} [not gated: {text}]")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        d["accepted"] = dict(self.accepted) if self.accepted is not None else None
        d["reasons"] = [r.to_dict() for r in self.reasons]
        d["guard"] = self.guard
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


def _is_worse(delta: float, better: str) -> bool:
    return delta > 0 if better == LOWER else delta < 0


@dataclass(frozen=True)
class FigureInterval:
    """The current figure's interval as the comparison sees it: ``reference`` is what it is
    compared with (the baseline, or the mean of its saves), ``lo``/``hi`` the current value's
    ``1 - 2 alpha`` bounds, ``evidence`` how they were built."""

    reference: float
    current: float
    lo: float
    hi: float
    evidence: str
    ci_of: str | None = None
    p_value: float | None = None


def figure_interval(name: str, base: Metric, cur: Metric, *, alpha: float = ALPHA,
                    same_code: Sequence[float] = (), n_boot: int = 2000, seed: int = 0) -> FigureInterval:
    """The interval of the current figure against the baseline's, by what kind of figure it is."""
    kind = cur.kind or base.kind
    b, c = base.value, cur.value
    if kind in STAT_KINDS:
        info = metric_info(name)
        rc = stats.run_change(b, c, prior_spread=info.run_spread, prior_df=info.prior_df, same_code=same_code,
                              base_samples=base.finite_values, cur_samples=cur.finite_values)
        if not math.isfinite(rc.d):
            return FigureInterval(b, c, -math.inf, math.inf, rc.source, "change")
        lo, hi = rc.interval(alpha)
        ref = rc.reference
        return FigureInterval(ref, c, ref * math.exp(lo), ref * math.exp(hi), rc.source, "change")
    if kind == "accuracy" and base.items and cur.items and len(base.items) == len(cur.items):
        lo_d, hi_d = stats.paired_bootstrap_diff_ci(base.items, cur.items, 1 - 2 * alpha, n_boot, seed)
        md = statistics.fmean(y - x for x, y in zip(base.items, cur.items))
        p = stats.paired_p_value(base.items, cur.items)
        binary = all(v in (0.0, 1.0) for v in (*base.items, *cur.items))
        what = "questions" if binary else "tokens"
        ev = f"paired over {len(cur.items)} {what} (p={p:.3g})"
        if base_metric_name(name) == "perplexity" and not binary:  # NLL per token: log perplexity moves by the mean
            return FigureInterval(b, c, c * math.exp(lo_d - md), c * math.exp(hi_d - md), ev, "items", p)
        return FigureInterval(b, c, c + (lo_d - md), c + (hi_d - md), ev, "items", p)
    return FigureInterval(b, c, c, c, "deterministic: compared directly" if kind in DETERMINISTIC_KINDS
                          else "one value per side: compared directly")


def _scale(ref: float, value: float, tol: Tolerance, better: str) -> float:
    """``value`` against ``ref`` on the worse-is-up scale of :func:`verdicts.rule.band_for`."""
    sign = 1.0 if better == LOWER else -1.0
    if tol.relative:
        if ref > 0 and value > 0:
            return sign * math.log(value / ref)
        if value == ref:
            return 0.0
        return sign * math.copysign(math.inf, value - ref)
    return sign * (value - ref)


def _work_named(name: str, base: Metric, cur: Metric) -> str:
    """The largest per-name changes of a work figure (``+1 aten._local_scalar_dense per token``)."""
    from ..measure.work import NO_CHANGE_BY_NAME, format_changes, metric_changes

    changes = metric_changes(base_metric_name(name), base.extra, cur.extra)
    if changes is None:
        return ""
    return format_changes(changes) or NO_CHANGE_BY_NAME


def _settle(kind: str) -> str:
    if kind in STAT_KINDS:
        return ("save the baseline again from the same code (each save of it narrows this) or measure both "
                "commits interleaved with `quantperf ab`")
    if kind == "accuracy":
        return "more questions or tokens (a larger evaluation set) would settle it"
    return "a figure with samples would settle it"


def compare_metric(nodeid: str, name: str, base: Metric, cur: Metric, tol: Tolerance, *,
                   same_hardware: bool, gate_cross_hardware: bool = False, alpha: float = ALPHA,
                   accepted: Mapping[str, Any] | None = None, n_boot: int = 2000, seed: int = 0,
                   same_code: Sequence[float] = ()) -> Verdict:
    """Judge one metric of one test against its baseline by the one rule.

    ``same_code``: this metric's figure in every saved run of the baseline's own code
    (:func:`same_code_values`), which measures the run-to-run spread of the timing kinds.
    """
    kind = cur.kind or base.kind
    better = cur.better
    b, c = base.value, cur.value
    delta = c - b if (math.isfinite(b) and math.isfinite(c)) else None
    change = (delta / abs(b)) if (delta is not None and b != 0) else (0.0 if delta == 0 else None)
    unit = f" {cur.unit}" if cur.unit else ""
    head = f"{name}: baseline {_fmt(b)}{unit} → now {_fmt(c)}{unit} ({_pct(change)}; tolerance {tol.text})"
    common = dict(nodeid=nodeid, metric=name, baseline=b, current=c, change=change, tolerance=tol.text,
                  delta=delta, unit=cur.unit, better=better, kind=kind)
    if better not in (LOWER, HIGHER) or kind == "info" or not metric_info(name).gated:
        why = "shown, never gated" if kind == "info" or better not in (LOWER, HIGHER) else \
            "depends on what else the session holds: shown and budgeted, not compared"
        return Verdict(status="not_gated", message=f"{head}: not_gated ({why})", **common)
    if delta is None:
        return Verdict(status=INCONCLUSIVE, message=f"{head}: inconclusive (a value is missing or not finite)",
                       **common)
    fi = figure_interval(name, base, cur, alpha=alpha, same_code=same_code, n_boot=n_boot, seed=seed)
    ref = fi.reference
    if ref != b:  # the baseline's level from its repeated saves
        delta = c - ref
        change = delta / abs(ref) if ref else None
        common.update(baseline=ref, delta=delta, change=change)
        head = f"{name}: baseline {_fmt(ref)}{unit} → now {_fmt(c)}{unit} ({_pct(change)}; tolerance {tol.text})"
    band = band_for(tol.value, tol.relative, better == LOWER)
    pts = sorted((_scale(ref, fi.lo, tol, better), _scale(ref, fi.hi, tol, better)))
    point = _scale(ref, c, tol, better)
    dec = decide(point, pts[0], pts[1], band)
    ci = None
    if fi.lo != fi.hi and ref:
        ci = ((fi.lo - ref) / abs(ref), (fi.hi - ref) / abs(ref))
    detectable = None
    if math.isfinite(dec.decides_beyond):
        db = dec.decides_beyond
        detectable = (math.expm1(db) if better == LOWER else -math.expm1(-db)) if tol.relative \
            else (db / abs(ref) if ref else None)
    parts = [head]
    interval = f"{1 - 2 * alpha:.0%} interval [{_pct(ci[0])}, {_pct(ci[1])}]; " if ci else ""
    parts.append(f"({interval}{fi.evidence})")
    msg = " ".join(parts) + f": {dec.status}"
    if dec.status == INCONCLUSIVE:
        decides = (f"these runs decide changes beyond {_pct(detectable)}" if detectable is not None
                   else "these runs decide no change")
        shown = "shown worse, by how much these runs cannot say; " if dec.shown_worse else ""
        msg += f" ({shown}{decides}; {_settle(kind)})"
    if kind == "work" and dec.status != PASS:
        named = _work_named(name, base, cur)
        if named:
            msg += f"; by name: {named}"
    acc_record = None
    within_acc = False
    if accepted:
        try:
            av = float(accepted["value"])
        except (KeyError, TypeError, ValueError):
            av = math.nan
        if math.isfinite(av):
            within_acc = (not _is_worse(c - av, better)) or not tol.exceeded(av, c)
            acc_record = dict(accepted) if within_acc else None
    v = Verdict(status=dec.status, p_value=fi.p_value, ci=ci, detectable=detectable, ci_of=fi.ci_of,
                message=msg, evidence=fi.evidence, shown_worse=dec.shown_worse,
                gating=dec.status == REGRESSION, accepted=acc_record, **common)
    return v.with_reasons(_r.reasons_for(
        _r.other_hardware(kind, same_hardware, gate_cross_hardware),
        _r.accepted(dec.status, accepted, within_acc)))


_HOST_ORDER = ("quiet", "contended", "too_busy")


def _note_host(host: dict[str, Mapping[str, Any]], key: str, h: Any, prefix: str) -> None:
    """Keep the worst host state seen for a model, on either side of the comparison."""
    if not isinstance(h, Mapping) or h.get("state") not in _HOST_ORDER:
        return
    seen = host.get(key)
    if seen is None or _HOST_ORDER.index(h["state"]) > _HOST_ORDER.index(seen["state"]):
        host[key] = {"state": h["state"], "summary": prefix + str(h.get("summary", ""))}


def model_key(metric: str) -> str:
    """Which model of a test a metric belongs to: ``""`` (the first), ``"ref."`` or ``"[label]"``."""
    base = base_metric_name(metric)
    return metric.replace(base, "", 1)


def _same_work(base_m: Mapping[str, Any], cur: Mapping[str, Metric], key: str) -> bool | None:
    """Whether this model's work per token is identical to the baseline's, by name where kept.

    None where the work was not counted on either side.
    """
    names = [n for n, m in cur.items() if m.kind == "work" and model_key(n) == key]
    if not names:
        return None
    for n in names:
        b = base_m.get(n)
        if not isinstance(b, Mapping) or b.get("value") != cur[n].value:
            return False
        bn, cn = (b.get("extra") or {}).get("by_name"), (cur[n].extra or {}).get("by_name")
        if bn is not None and cn is not None and bn != cn:
            return False
    return True


def _work_summary(verdicts: Sequence[Verdict], key: str) -> str:
    """``ops_per_token +3.2%, syncs_per_token +1`` for one model's work figures that moved."""
    parts = []
    for v in verdicts:
        if v.kind == "work" and model_key(v.metric) == key and v.delta:
            size = f"{v.change * 100:+.1f}%" if v.change is not None and v.baseline else f"{v.delta:+g}"
            parts.append(f"{base_metric_name(v.metric)} {size}")
    return ", ".join(parts) or "by name"


def _worse_by(v: Verdict) -> float | None:
    """How many times worse than the baseline a figure is (1 or less when not worse)."""
    if v.baseline is None or v.current is None or not v.baseline > 0 or not v.current > 0:
        return None
    return v.current / v.baseline if v.better == LOWER else v.baseline / v.current


def judge_test(nodeid: str, metrics: Mapping[str, Metric], base_test: Mapping[str, Any] | None, *,
               tolerances: Mapping[str, Tolerance] | None = None,
               per_test: Mapping[str, Tolerance] | None = None,
               accepted: Mapping[str, Any] | None = None, same_hardware: bool,
               gate_cross_hardware: bool = False, same_code: Mapping[str, Sequence[float]] | None = None,
               alpha: float = ALPHA, versions: str = "") -> list[Verdict]:
    """Every verdict of one test against its baseline: the one path the plugin, ``quantperf
    compare`` and the reports share.

    Metrics only in this run are ``new``; only in the baseline, ``gone``; then the reasons that
    look across a model's figures (host contention, GPU clocks, unchanged work) are added.
    ``base_test`` None means the test is new. ``versions`` (:func:`versions_moved`) is said beside
    every work or wall-clock figure that moved.
    """
    tolerances = tolerances or {}
    per = {nodeid: dict(per_test or {})}
    accepted = accepted or {}
    same_code = same_code or {}
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
                                       accepted=accepted.get(name), same_code=same_code.get(name, ())))
    if base_test is not None:
        for name in sorted(set(base_metrics) - set(metrics)):
            base = _metric(name, base_metrics[name])
            tol = tolerance_for(nodeid, name, tolerances, per)
            verdicts.append(Verdict(nodeid, name, "gone", base.value, None, None, tol.text,
                                    message=f"{name}: baseline {_fmt(base.value)} {base.unit}".rstrip()
                                    + ": gone (not measured in this run)",
                                    unit=base.unit, better=base.better, kind=base.kind))
    kernel: dict[str, bool] = {model_key(v.metric): v.status == PASS for v in verdicts
                               if base_metric_name(v.metric) == "gpu_ms_per_token" and v.status != "new"}
    work = {key: _same_work(base_metrics, metrics, key) for key in {model_key(n) for n in metrics}}
    out = []
    for v in verdicts:
        if v.status in ("new", "gone", "not_gated"):
            out.append(v)
            continue
        key = model_key(v.metric)
        base_clocks = ((base_metrics.get(v.metric) or {}).get("extra") or {}).get("gpu_clocks")
        cur_clocks = (metrics[v.metric].extra or {}).get("gpu_clocks")
        if work.get(key) is False and base_metric_name(v.metric) in _r.WALL_CLOCK:
            v = replace(v, message=f"{v.message} (the work per token changed: {_work_summary(verdicts, key)})")
        if versions and v.status != PASS and (v.kind == "work" or base_metric_name(v.metric) in _r.WALL_CLOCK):
            v = replace(v, message=f"{v.message} (since the baseline: {versions})")
        out.append(v.with_reasons(_r.reasons_for(
            _r.host_contended(v.kind, host.get(key), _worse_by(v)),
            _r.clock_moved(v.kind, base_clocks, cur_clocks),
            _r.work_unchanged(base_metric_name(v.metric), work.get(key), kernel.get(key)))))
    return out


#: the packages whose versions a run document's ``env`` names: a change of any of them since the
#: baseline is said beside a changed work or wall-clock figure (the usual cause of a changed path)
VERSIONED = ("torch", "transformers", "bitsandbytes", "accelerate", "python")


def versions_moved(base_env: Mapping[str, Any] | None, cur_env: Mapping[str, Any] | None) -> str:
    """``bitsandbytes 0.50.2 → 0.48.2, torch 2.13.0 → 2.12.0``: what the environment upgraded or
    downgraded since the baseline (empty: nothing, or one side unknown)."""
    if not isinstance(base_env, Mapping) or not isinstance(cur_env, Mapping):
        return ""
    moved = [f"{k} {base_env[k]} → {cur_env[k]}" for k in VERSIONED
             if base_env.get(k) and cur_env.get(k) and str(base_env[k]) != str(cur_env[k])]
    return ", ".join(moved)


def same_code_values(history: Sequence[Mapping[str, Any]], nodeid: str, base_doc: Mapping[str, Any] | None,
                     limit: int = 10) -> dict[str, list[float]]:
    """Per metric of one test, its figure in the saved runs of the baseline's own code.

    Those are the runs on the baseline's hardware whose git commit is the baseline's, both trees
    clean: the same code measured again, so their spread is only the host's and their mean is a
    better level than one run. Without git (or with a dirty tree) nothing is known to be the same
    code, and the baseline's own figure stands alone. Runs of other commits never count: a change
    of code is not noise.
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
                 gate_cross_hardware: bool = False, alpha: float = ALPHA,
                 history: Sequence[Mapping[str, Any]] | None = None) -> Comparison:
    """Compare every metric of every test of ``cur_doc`` with ``base_doc`` (run documents).

    Metrics only in the current run are ``new``; only in the baseline, of a test that ran,
    ``gone``; whole tests missing from the current run are listed in ``gone_tests`` (a shard
    or ``-k`` selection), not judged.  Acceptance records come from ``base_doc["accepted"]``;
    ``history`` (saved runs of the baseline's name) gives the saves of the baseline's own code.
    """
    tolerances = tolerances or {}
    bh, ch = _hardware_id(base_doc), _hardware_id(cur_doc)
    same = bh is not None and bh == ch
    base_tests = base_doc.get("tests") or {}
    cur_tests = cur_doc.get("tests") or {}
    accepted_all = base_doc.get("accepted") or {}
    versions = versions_moved(base_doc.get("env"), cur_doc.get("env"))
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
                               same_code=same_code_values(history or (), nodeid, base_doc), alpha=alpha,
                               versions=versions)
    gone_tests = sorted(set(base_tests) - set(cur_tests))
    counts = {s: 0 for s in STATUSES}
    for v in verdicts:
        counts[v.status] += 1
    counts["gating"] = sum(1 for v in verdicts if v.gating)
    return Comparison(tuple(verdicts), tuple(new_tests), tuple(gone_tests), same, bh, ch, counts)
