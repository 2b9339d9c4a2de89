"""The verdicts of ``quantperf ab``: every metric judged from its paired rounds, base against head.

:func:`judge_rounds` pairs the run documents of each round and judges every metric of every
test present on both sides with :func:`judge_metric` (rules in its docstring and docs/ab.md);
the statistics it rests on are :mod:`pytest_quantperf.stats.rounds`.  No pytest imports, no
subprocesses: the runs themselves are :mod:`pytest_quantperf.ab.run`'s.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

from ..measure import host as _host
from .. import stats
from ..verdicts.compare import Tolerance, tolerance_for
from ..verdicts.rule import STAT_KINDS
from ..verdicts.rule import Band, band_for, decide
from ..results import HIGHER, LOWER, Metric, metric_info
from ..stats import DEFAULT_ALPHA

__all__ = ["ABVerdict", "STATUSES", "judge_metric", "judge_rounds", "undecided", "second_look", "format_table"]

STATUSES = ("pass", "improvement", "regression", "inconclusive", "new", "gone", "not_gated")


@dataclass(frozen=True)
class ABVerdict:
    """The judgement of one metric of one test, base commit against working tree.

    ``base`` and ``head`` are the geometric means of the per-round medians (arithmetic when a
    value is not positive); ``change`` is ``head / base - 1``, signed as the numbers moved;
    ``round_changes`` the change of each round; ``ci`` the interval of ``change`` from the
    paired bootstrap over rounds; ``p_value`` from ``p_method`` (``signed-rank`` across rounds,
    ``stratified-rank`` on the samples within rounds, or ``paired-items``/``direct`` for deterministic
    kinds).
    """

    nodeid: str
    metric: str
    status: str
    base: float | None
    head: float | None
    change: float | None
    tolerance: str
    rounds: int = 0
    round_changes: tuple[float, ...] = ()
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    p_method: str | None = None
    unit: str = ""
    better: str = LOWER
    kind: str = ""
    message: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; one of {STATUSES}")

    @property
    def gating(self) -> bool:
        return self.status == "regression"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["round_changes"] = list(self.round_changes)
        d["ci"] = list(self.ci) if self.ci is not None else None
        d["gating"] = self.gating
        for k in ("base", "head", "change", "p_value"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None
        return d


def _metric(name: str, d: Mapping[str, Any]) -> Metric:
    info = metric_info(name, str(d.get("unit", "") or ""), str(d.get("better", LOWER) or LOWER))
    return Metric.from_dict({"name": name, "unit": info.unit, "better": info.better, "kind": info.kind, **d})


def _location(m: Metric) -> float:
    s = m.finite_values
    return statistics.median(s) if s else m.value


def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    av = abs(v)
    if av != 0 and (av >= 1e6 or av < 1e-3):
        return f"{v:.3g}"
    return f"{v:.1f}" if av >= 100 else f"{v:.4g}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:+.1f}%"


def _walsh_bounds(d: Sequence[float], alpha: float) -> tuple[float, float]:
    """The exact signed-rank confidence interval of the rounds' pseudo-median, each side at ``alpha``.

    Inverting the one-sided exact Wilcoxon signed-rank test: the lower bound is the Walsh average
    (``(d_i + d_j) / 2``, ``i <= j``) above which the test can no longer reject at ``alpha``. At 7
    rounds and alpha 0.01 only "every round beyond" rejects, so the bounds are the smallest and
    largest round: the interval lies beyond the tolerance only when every round does. Too few rounds
    to reach ``alpha`` give an unbounded interval.
    """
    n = len(d)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(n) for j in range(i, n))
    size = stats.signed_rank_size(n, alpha)
    if size <= 0:
        return (-math.inf, math.inf)
    # the critical W+: the smallest w whose null tail P(W+ >= w) is at most alpha (size is that tail)
    counts = [1] + [0] * (n * (n + 1) // 2)
    for k in range(1, n + 1):
        for w in range(len(counts) - 1, k - 1, -1):
            counts[w] += counts[w - k]
    tail, w_crit = 0, len(counts)
    for w in range(len(counts) - 1, -1, -1):
        tail += counts[w]
        if tail / 2.0 ** n > alpha:
            break
        w_crit = w
    k = len(walsh) - w_crit  # 0-based index of A_(N - w_crit + 1)
    return (walsh[k], walsh[len(walsh) - 1 - k])


def judge_metric(nodeid: str, name: str, base_rounds: Sequence[Metric], head_rounds: Sequence[Metric],
                 tol: Tolerance, *, alpha: float = DEFAULT_ALPHA) -> ABVerdict:
    """Judge one metric from its per-round measurements, ``base_rounds[i]`` paired with ``head_rounds[i]``.

    The one rule of :mod:`.verdicts.rule`, with the interval taken across rounds: each round's
    change ``d_i`` (the log ratio of the medians for a relative tolerance, the difference for an
    absolute one), and the exact signed-rank interval of their pseudo-median at ``1 - 2 alpha``
    (:func:`_walsh_bounds`), held against the tolerance band: *regression* when it lies wholly
    beyond the tolerance on the worse side (at 7 rounds: every round beyond it), *pass* when it lies
    within, *inconclusive* otherwise. The same test decides "beyond the tolerance" as the baseline
    gate does, not "changed at all". With fewer rounds than the exact test needs to reach alpha
    (7 at 0.01), the interval is Student's t across the rounds (one round: its own samples).
    Deterministic figures (memory, exact, work, accuracy) are exact in each round: their interval is
    the range the rounds span, a point when they agree. ``better="none"`` and kind
    ``info`` are *not_gated*.
    """
    if len(base_rounds) != len(head_rounds):
        raise ValueError(f"rounds must pair up, got {len(base_rounds)} base and {len(head_rounds)} head")
    n = len(base_rounds)
    if n == 0:
        raise ValueError("judge_metric needs at least one round")
    first = head_rounds[0]
    kind, better, unit = first.kind or base_rounds[0].kind, first.better, first.unit
    bm = [_location(m) for m in base_rounds]
    hm = [_location(m) for m in head_rounds]
    common = dict(nodeid=nodeid, metric=name, tolerance=tol.text, rounds=n, unit=unit, better=better,
                  kind=kind)
    finite = all(math.isfinite(v) for v in bm + hm)
    if not finite:
        return ABVerdict(status="inconclusive", base=None, head=None, change=None,
                         message=f"{name}: a value is missing or not finite", **common)

    rc = stats.paired_rounds_change(bm, hm, alpha=alpha, interval=False)  # the interval is the rule's, below
    b, h, change = rc.base, rc.head, rc.change
    round_changes = rc.round_changes
    unit_s = f" {unit}" if unit else ""
    head_line = (f"{name}: base {_fmt(b)}{unit_s} → head {_fmt(h)}{unit_s} ({_pct(change)} over {n} "
                 f"round{'s' if n != 1 else ''}; tolerance {tol.text})")
    if better not in (LOWER, HIGHER) or kind == "info":
        return ABVerdict(status="not_gated", base=b, head=h, change=change, round_changes=round_changes,
                         message=head_line + ": not_gated", **common)
    sign = 1.0 if better == LOWER else -1.0
    log_scale = tol.relative and all(v > 0 for v in bm + hm)
    d = [sign * (math.log(y / x) if log_scale else (y - x) / (abs(x) if tol.relative and x else 1.0))
         for x, y in zip(bm, hm)]
    band = band_for(tol.value, tol.relative, better == LOWER) if log_scale else Band(tol.value, tol.value)
    if max(d) == min(d):
        lo = hi = d[0]
        method = "direct"
    elif kind not in STAT_KINDS:  # each round measured it exactly: the interval is what the rounds span
        lo, hi = min(d), max(d)
        method = "range of the rounds"
    elif stats.signed_rank_size(n, alpha) > 0:
        lo, hi = _walsh_bounds(d, alpha)
        method = "signed-rank"
    elif n >= 2:
        mean, sd = statistics.fmean(d), statistics.stdev(d)
        h = stats.t_quantile(1 - alpha, n - 1) * sd / math.sqrt(n)
        lo, hi = mean - h, mean + h
        method = "t across rounds"
    else:
        from ..stats.samples import _rel_se_median

        se = math.hypot(_rel_se_median(base_rounds[0].finite_values), _rel_se_median(head_rounds[0].finite_values))
        h = stats.t_quantile(1 - alpha, None) * se if math.isfinite(se) else math.inf
        lo, hi = d[0] - h, d[0] + h
        method = "within the round"
    point = statistics.fmean(d)
    dec = decide(point, lo, hi, band)

    def back(x: float) -> float:
        if not math.isfinite(x):
            return x
        return math.expm1(sign * x) if log_scale else sign * x * (1.0 if tol.relative else (1 / abs(b) if b else 1.0))

    ci_pts = sorted((back(lo), back(hi)))
    ci = (ci_pts[0], ci_pts[1]) if lo != hi else None
    ci_txt = f"{1 - 2 * alpha:.0%} interval [{_pct(ci[0])}, {_pct(ci[1])}] by {method}" if ci else "every round the same"
    msg = f"{head_line} ({ci_txt}): {dec.status}"
    if dec.status == "inconclusive":
        msg += " (more rounds would settle it)"
    return ABVerdict(status=dec.status, base=b, head=h, change=change, round_changes=round_changes, ci=ci,
                     p_value=None, p_method=method, message=msg, **common)


def judge_rounds(base_docs: Sequence[Mapping[str, Any]], head_docs: Sequence[Mapping[str, Any]],
                 tolerances: Mapping[str, Tolerance] | None = None, *, alpha: float = DEFAULT_ALPHA,
                 too_busy: Sequence[int] = (), contended: Sequence[int] = ()) -> list[ABVerdict]:
    """Verdicts for every metric of every test from paired run documents (one pair per round).

    A metric measured on only one side in every round is ``new`` (head only) or ``gone``
    (base only); rounds where either side lacks it (a failed test) are left out of the pairing.
    ``too_busy`` and ``contended`` (round numbers from 1) are rounds in which a run's host was too
    busy to measure, or contended: they are named in the timing verdicts' messages.  They stay in
    the pairing: load that hits both runs of a round cancels in its ratio, which is why ``ab``
    interleaves, and load that hits one run moves one round, which the test across rounds weighs
    as one round of seven.
    """
    if len(base_docs) != len(head_docs):
        raise ValueError(f"rounds must pair up, got {len(base_docs)} base and {len(head_docs)} head documents")
    tolerances = tolerances or {}
    seen: dict[tuple[str, str], None] = {}
    for doc in (*base_docs, *head_docs):
        for nodeid, t in (doc.get("tests") or {}).items():
            for name in ((t or {}).get("metrics") or {}):
                seen[(nodeid, name)] = None

    def get(doc: Mapping[str, Any], nodeid: str, name: str) -> Metric | None:
        d = (((doc.get("tests") or {}).get(nodeid) or {}).get("metrics") or {}).get(name)
        return _metric(name, d) if d else None

    loaded = {int(r): _host.TOO_BUSY for r in too_busy}
    for r in contended:
        loaded.setdefault(int(r), _host.CONTENDED)
    out: list[ABVerdict] = []
    for nodeid, name in sorted(seen):
        tol = tolerance_for(nodeid, name, tolerances)
        pairs = [(get(bd, nodeid, name), get(hd, nodeid, name)) for bd, hd in zip(base_docs, head_docs)]
        both = [(b, h) for b, h in pairs if b is not None and h is not None]
        if both:
            v = judge_metric(nodeid, name, [b for b, _ in both], [h for _, h in both], tol, alpha=alpha)
            notes = []
            if len(both) < len(pairs):
                notes.append(f"measured on both sides in only {len(both)} of {len(pairs)} rounds")
            used = [i + 1 for i, (b, h) in enumerate(pairs) if b is not None and h is not None]
            if v.kind in STAT_KINDS:
                for state in (_host.TOO_BUSY, _host.CONTENDED):
                    rs = [r for r in used if loaded.get(r) == state]
                    if rs:
                        notes.append(f"host {state.replace('_', ' ')}{' to measure' if state == _host.TOO_BUSY else ''}"
                                     f" in round{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}")
            if notes:
                v = replace(v, message=v.message + f" ({'; '.join(notes)})")
            out.append(v)
            continue
        any_h = next((h for _, h in pairs if h is not None), None)
        any_b = next((b for b, _ in pairs if b is not None), None)
        m = any_h or any_b
        assert m is not None
        status = "new" if any_h is not None and any_b is None else "gone"
        if any_h is not None and any_b is not None:
            status = "inconclusive"  # measured on each side, never in the same round
        out.append(ABVerdict(nodeid=nodeid, metric=name, status=status,
                             base=_location(any_b) if any_b else None, head=_location(any_h) if any_h else None,
                             change=None, tolerance=tol.text, rounds=0, unit=m.unit, better=m.better,
                             kind=m.kind, message=f"{name}: {status} (measured on "
                             f"{'the head only' if status == 'new' else 'the base only' if status == 'gone' else 'each side in different rounds'})"))
    return out


# --------------------------------------------------------------------------- a second look over more rounds

def undecided(verdicts: Sequence[ABVerdict]) -> list[ABVerdict]:
    """The timing figures the rounds so far left *inconclusive* (beyond tolerance, not significant):
    what more rounds could settle.  Deterministic kinds are left out: each round already says all
    they can."""
    return [v for v in verdicts if v.status == "inconclusive" and v.kind in STAT_KINDS]


def second_look(first: Sequence[ABVerdict], later: Sequence[ABVerdict], first_rounds: int,
                later_alpha: float, alpha: float) -> list[ABVerdict]:
    """The verdicts after a second look: ``first`` judged on the first ``first_rounds`` rounds at
    ``alpha``, ``later`` on every round at ``later_alpha`` (:func:`stats.second_look_alpha`).

    Only the figures :func:`undecided` names take the later verdict; every other keeps the first
    one, so a figure decided on the first rounds is never judged twice.  A false alarm then needs
    ``p < alpha`` at the first look or ``p < later_alpha`` at the second, which together happen at
    most ``alpha`` of the time when nothing changed.
    """
    again = {(v.nodeid, v.metric) for v in undecided(first)}
    by_key = {(v.nodeid, v.metric): v for v in later}
    out = []
    for v in first:
        w = by_key.get((v.nodeid, v.metric))
        if (v.nodeid, v.metric) not in again or w is None:
            out.append(v)
            continue
        out.append(replace(w, message=w.message + f" [second look: {first_rounds} rounds left it {v.status} "
                                                  f"({_pct(v.change)}); over {w.rounds} rounds each side of the interval "
                                                  f"is a test at {later_alpha:.2g}, so the two looks keep alpha {alpha:g}]"))
    return out


# --------------------------------------------------------------------------- output

_HEADERS = ("test", "metric", "base", "head", "change", "CI of change", "p", "verdict")


def format_table(verdicts: Sequence[ABVerdict]) -> str:
    """Plain-text table, one row per metric, widest cells setting the column widths."""
    rows = [_HEADERS]
    for v in verdicts:
        unit = f" {v.unit}" if v.unit else ""
        ci = f"[{_pct(v.ci[0])}, {_pct(v.ci[1])}]" if v.ci else ""
        p = f"{v.p_value:.3g}" if v.p_value is not None else ""
        rows.append((v.nodeid, v.metric, _fmt(v.base) + unit if v.base is not None else "-",
                     _fmt(v.head) + unit if v.head is not None else "-", _pct(v.change) if v.change is not None else "",
                     ci, p, v.status.upper() if v.status == "regression" else v.status))
    from .._util.text import text_table

    return text_table(rows)
