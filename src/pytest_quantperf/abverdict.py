"""The verdicts of ``quantperf ab``: every metric judged from its paired rounds, base against head.

:func:`judge_rounds` pairs the run documents of each round and judges every metric of every
test present on both sides with :func:`judge_metric` (rules in its docstring and docs/ab.md);
the statistics it rests on are :mod:`pytest_quantperf.stats.rounds`.  No pytest imports, no
subprocesses: the runs themselves are :mod:`pytest_quantperf.abrun`'s.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

from . import host as _host
from . import stats
from .compare import STAT_KINDS, Tolerance, compare_metric, tolerance_for
from .results import HIGHER, LOWER, Metric, metric_info
from .stats import DEFAULT_ALPHA, rounds_for_alpha

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
    s = [x for x in m.samples if math.isfinite(x)]
    return statistics.median(s) if s else m.value


def _values(m: Metric) -> list[float]:
    s = [x for x in m.samples if math.isfinite(x)]
    return s if s else ([m.value] if math.isfinite(m.value) else [])


def _is_worse(delta: float, better: str) -> bool:
    return delta > 0 if better == LOWER else delta < 0


def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    av = abs(v)
    if av != 0 and (av >= 1e6 or av < 1e-3):
        return f"{v:.3g}"
    return f"{v:.1f}" if av >= 100 else f"{v:.4g}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:+.1f}%"


def judge_metric(nodeid: str, name: str, base_rounds: Sequence[Metric], head_rounds: Sequence[Metric],
                 tol: Tolerance, *, alpha: float = DEFAULT_ALPHA, n_boot: int = 2000, seed: int = 0) -> ABVerdict:
    """Judge one metric from its per-round measurements, ``base_rounds[i]`` paired with ``head_rounds[i]``.

    Timing kinds (``timing``, ``gpu_timing``, ``energy``) — with ``d_i = log(head_i / base_i)``
    the per-round log-ratio of medians, change ``= exp(mean d) - 1``:

    * *pass* when the change is within the tolerance;
    * *regression* (bad direction) or *improvement* (good direction) when the change is beyond
      the tolerance **and** the paired bootstrap interval of ``mean d`` over rounds (at
      ``max(95%, 1 - 2·alpha)``) excludes 0 — with fewer than about 5 rounds this means every
      round moved the same way — **and** it is significant:
      with at least :func:`~pytest_quantperf.stats.rounds_for_alpha` rounds (7 at alpha 0.01) the one-sided exact
      signed-rank test on the ``d_i`` gives ``p < alpha``; with fewer rounds, the one-sided
      stratified rank test of the samples (:func:`~pytest_quantperf.stats.stratified_rank_p`, rounds as strata) gives
      ``p < alpha``;
    * *inconclusive* otherwise (beyond tolerance, not significant).

    Memory, exact and accuracy kinds are deterministic: each round is judged by
    :func:`compare_metric` (paired per-item tests for accuracy), and the rounds must agree —
    all regression → regression, all improvement → improvement, all pass → pass, a mixture →
    inconclusive.  ``better="none"`` and kind ``info`` are *not_gated*.
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

    rc = stats.paired_rounds_change(bm, hm, alpha=alpha, n_boot=n_boot, seed=seed)
    b, h, change, ci, conf = rc.base, rc.head, rc.change, rc.ci, rc.conf
    round_changes = rc.round_changes
    beyond = tol.exceeded(b, h)
    worse = _is_worse(h - b, better)
    bad_good = "regression" if worse else "improvement"
    unit_s = f" {unit}" if unit else ""
    head_line = (f"{name}: base {_fmt(b)}{unit_s} → head {_fmt(h)}{unit_s} ({_pct(change)} over {n} "
                 f"round{'s' if n != 1 else ''}; tolerance {tol.text})")

    def done(status: str, detail: str = "", p: float | None = None, method: str | None = None) -> ABVerdict:
        msg = head_line + (f" {detail}" if detail else "") + f": {status}"
        return ABVerdict(status=status, base=b, head=h, change=change, round_changes=round_changes, ci=ci,
                         p_value=p, p_method=method, message=msg, **common)

    if better not in (LOWER, HIGHER) or kind == "info":
        return done("not_gated")

    if kind not in STAT_KINDS:
        per_round = [compare_metric(nodeid, name, bb, hh, tol, same_hardware=True, alpha=alpha,
                                    n_boot=n_boot, seed=seed) for bb, hh in zip(base_rounds, head_rounds)]
        statuses = {v.status for v in per_round}
        ps = [v.p_value for v in per_round if v.p_value is not None]
        p = max(ps) if ps else None
        method = "paired-items" if ps else "direct"
        if statuses <= {"pass", "too_noisy"}:
            return done("pass", p=p, method=method)
        if statuses == {"regression"} or statuses == {"improvement"}:
            return done(per_round[0].status, p=p, method=method)
        return done("inconclusive", f"(rounds disagree: {', '.join(v.status for v in per_round)})", p, method)

    if not beyond:
        return done("pass")
    up = h > b
    ci_clear = ci is not None and (ci[0] > 0 if up else ci[1] < 0)
    ci_text = f"{conf:.0%} CI [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "no CI"
    p, method = stats.rounds_shift_p(rc.diffs, [_values(m) for m in base_rounds], [_values(m) for m in head_rounds],
                                     up=up, alpha=alpha)
    if method == "signed-rank":
        if ci_clear and p < alpha:
            return done(bad_good, f"(signed-rank p={p:.3g}, {ci_text})", p, "signed-rank")
        return done("inconclusive", f"(signed-rank p={p:.3g}, {ci_text}; not significant at {alpha:g}: "
                    f"more rounds would settle it)", p, "signed-rank")
    n_b = sum(len(_values(m)) for m in base_rounds)
    n_h = sum(len(_values(m)) for m in head_rounds)
    detail = f"({ci_text} over rounds, stratified rank p={p:.3g} on {n_b} vs {n_h} samples"
    if ci_clear and p < alpha:
        return done(bad_good, detail + ")", p, "stratified-rank")
    why = [] if ci_clear else ["rounds disagree"]
    if p >= alpha:
        why.append(f"not significant at {alpha:g}")
    need = rounds_for_alpha(alpha)
    return done("inconclusive", detail + f"; {', '.join(why)}; more samples per test or ~{need} rounds "
                f"would settle it)", p, "stratified-rank")


def judge_rounds(base_docs: Sequence[Mapping[str, Any]], head_docs: Sequence[Mapping[str, Any]],
                 tolerances: Mapping[str, Tolerance] | None = None, *, alpha: float = DEFAULT_ALPHA,
                 n_boot: int = 2000, too_busy: Sequence[int] = (),
                 contended: Sequence[int] = ()) -> list[ABVerdict]:
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
            v = judge_metric(nodeid, name, [b for b, _ in both], [h for _, h in both], tol, alpha=alpha,
                             n_boot=n_boot)
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
                                                  f"({_pct(v.change)}); over {w.rounds} rounds significance is "
                                                  f"p < {later_alpha:.2g}, so the two looks keep alpha {alpha:g}]"))
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
