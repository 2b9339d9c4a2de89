"""``quantperf ab``: the base commit and the working tree measured interleaved in one job.

A stored baseline from another day on another runner misleads on noisy shared machines: the
machine changed, not the code.  Here both sides run on the same machine in the same job,
alternating in rounds (A B, B A, A B, ...), so drift in machine load hits both sides alike,
and the verdict rests on the per-round *paired* differences.

Flow: ``git worktree add --detach`` of the base commit into a temporary folder; then, for each
round, ``python -m pytest ARGS -p no:cacheprovider --quantperf-json=FILE`` in each tree, each in
its own process, same interpreter and environment; then every metric of every test present on
both sides is judged by :func:`judge_metric` (rules in its docstring and docs/ab.md); the
worktree is removed in any case.

Exit status: 0 no regression, 1 a regression, 2 bad input (not a git repository, unknown
REF, pytest could not run, no test measured on both sides).  No pytest imports.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, asdict, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import host as _host
from . import stats
from .stats import DEFAULT_ALPHA, rounds_for_alpha, stratified_rank_p  # re-exported: ab's old names
from .compare import (STAT_KINDS, Tolerance, compare_metric, parse_tolerance_spec, tolerance_for)
from .results import HIGHER, LOWER, Metric, metric_info

__all__ = ["ABError", "ABVerdict", "judge_metric", "judge_rounds", "rounds_for_alpha", "run_ab",
           "format_table", "format_host_table", "run_host_state", "stratified_rank_p", "main", "DEFAULT_ALPHA"]

PROG = "quantperf ab"
STATUSES = ("pass", "improvement", "regression", "inconclusive", "new", "gone", "not_gated")
# pytest exit codes that still mean "the suite ran": 0 all passed, 1 some tests failed
_RAN = (0, 1)
# environment of the calling pytest that must not leak into the child runs
_PARENT_ONLY_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID",
                    "PYTEST_CURRENT_TEST")


class ABError(Exception):
    """Bad input or a run that could not happen: printed with what to do, exit status 2."""


# --------------------------------------------------------------------------- verdicts

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
                 tol: Tolerance, *, alpha: float = 0.01, n_boot: int = 2000, seed: int = 0) -> ABVerdict:
    """Judge one metric from its per-round measurements, ``base_rounds[i]`` paired with ``head_rounds[i]``.

    Timing kinds (``timing``, ``gpu_timing``, ``energy``) — with ``d_i = log(head_i / base_i)``
    the per-round log-ratio of medians, change ``= exp(mean d) - 1``:

    * *pass* when the change is within the tolerance;
    * *regression* (bad direction) or *improvement* (good direction) when the change is beyond
      the tolerance **and** the paired bootstrap interval of ``mean d`` over rounds (at
      ``max(95%, 1 - 2·alpha)``) excludes 0 — with fewer than about 5 rounds this means every
      round moved the same way — **and** it is significant:
      with at least :func:`rounds_for_alpha` rounds (7 at alpha 0.01) the one-sided exact
      signed-rank test on the ``d_i`` gives ``p < alpha``; with fewer rounds, the one-sided
      stratified rank test of the samples (:func:`stratified_rank_p`, rounds as strata) gives
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
                 tolerances: Mapping[str, Tolerance] | None = None, *, alpha: float = 0.01,
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


# --------------------------------------------------------------------------- git and pytest

def _git(cwd: str | os.PathLike[str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise ABError("git was not found on PATH; quantperf ab needs git to check out the base commit") from None
    if check and r.returncode != 0:
        raise ABError(f"git {' '.join(args)} failed in {cwd}: {(r.stderr or r.stdout).strip()}")
    return r


@dataclass(frozen=True)
class Tree:
    """One side of the A/B: where pytest runs and what it sees."""

    label: str  # "base" or "head"
    root: Path  # the repository (or worktree) top level
    cwd: Path  # where pytest starts: the same place relative to root on both sides
    commit: str
    dirty: bool = False


@dataclass
class RunLog:
    """What each pytest run did: for the JSON output and the error message."""

    runs: list[dict[str, Any]] = field(default_factory=list)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _child_env(tree: Tree, pythonpath: Sequence[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PARENT_ONLY_ENV}
    extra = [str(tree.root / p) for p in pythonpath if (tree.root / p).is_dir()]
    if extra:
        env["PYTHONPATH"] = os.pathsep.join([*extra, *filter(None, [env.get("PYTHONPATH", "")])])
    return env


def _run_pytest(tree: Tree, pytest_args: Sequence[str], out: Path, pythonpath: Sequence[str],
                round_no: int, log: RunLog, echo: Any) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", *pytest_args, "-p", "no:cacheprovider", f"--quantperf-json={out}"]
    # the whole pytest run asks for every core: torch's intra-op threads default to all of them
    meter = _host.HostMeter(threads=len(_host.available_cores()), children=True)
    with meter:
        r = subprocess.run(cmd, cwd=tree.cwd, env=_child_env(tree, pythonpath), capture_output=True, text=True)
    hs = meter.result
    wall = hs.wall_s
    entry = {"round": round_no, "side": tree.label, "exit": r.returncode, "wall_s": round(wall, 3),
             "host": hs.to_dict()}
    log.runs.append(entry)
    echo(f"  round {round_no} {tree.label:<4} {tree.commit[:10]}: pytest exit {r.returncode} in {wall:.1f} s"
         + (f"; host {hs.state}: other processes used {hs.others_cores:.2f} of {hs.cores} cores"
            if hs.state is not None and hs.others_cores is not None else ""))
    output = (r.stdout or "") + (r.stderr or "")
    if r.returncode not in _RAN:
        raise ABError(f"pytest could not run the suite on the {tree.label} side ({tree.cwd}, round {round_no}, "
                      f"exit status {r.returncode}). Command: {' '.join(cmd)}\n--- last lines of its output ---\n"
                      f"{_tail(output)}\n--- fix the suite or the pytest arguments and run again")
    if r.returncode == 1:
        echo(f"    some tests failed on the {tree.label} side; their metrics may be missing")
    try:
        with open(out, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ABError(f"pytest ran on the {tree.label} side but wrote no readable run document at {out} ({e}); "
                      f"is pytest-quantperf active there (the {tree.label} commit may predate "
                      f"--quantperf-json, or -p no:quantperf was passed)?\n--- last lines of its output ---\n"
                      f"{_tail(output)}") from None
    measured = measured_host(doc)
    if measured:
        entry["host_measured"] = measured
    return doc


def measured_host(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The host figures the run itself recorded per measurement, when its plugin records them.

    Looks for metrics named ``host_*`` (``host_contention``, ``host_cpu_share``,
    ``host_cpu_ms_per_token``: their samples, else their value) and for ``host_*`` numbers in a
    metric's ``extra``; returns the median of each over the run's tests, or None when the run has
    none (a plugin version that does not measure the host).
    """
    vals: dict[str, list[float]] = {}
    for t in (doc.get("tests") or {}).values():
        for name, m in ((t or {}).get("metrics") or {}).items():
            if not isinstance(m, Mapping):
                continue
            if name.startswith("host_") and name != "host_rss_mb":
                xs = [x for x in (m.get("samples") or [m.get("value")]) if isinstance(x, (int, float))]
                vals.setdefault(name, []).extend(float(x) for x in xs if math.isfinite(x))
            for k, x in (m.get("extra") or {}).items():
                if str(k).startswith("host_") and isinstance(x, (int, float)) and not isinstance(x, bool) \
                        and math.isfinite(x):
                    vals.setdefault(str(k), []).append(float(x))
    if not vals:
        return None
    out: dict[str, Any] = {k: round(statistics.median(v), 4) for k, v in sorted(vals.items()) if v}
    if "host_contention" in vals and vals["host_contention"]:
        out["state"] = _host.classify(max(vals["host_contention"]))
    return out


def run_host_state(run: Mapping[str, Any]) -> str | None:
    """The worse of the state ``quantperf ab`` measured around a run and the one the run recorded itself."""
    states = [s for s in ((run.get("host") or {}).get("state"), (run.get("host_measured") or {}).get("state"))
              if s in _host.STATES]
    return max(states, key=_host.STATES.index) if states else None


def _resolve(cwd: Path, ref: str) -> tuple[Path, str, Path]:
    """``(toplevel, base commit, cwd relative to toplevel)``; ABError when not a repository or REF is unknown."""
    r = _git(cwd, "rev-parse", "--show-toplevel", check=False)
    if r.returncode != 0:
        raise ABError(f"{cwd} is not inside a git repository; run quantperf ab from the repository whose "
                      f"suite you want to compare ({r.stderr.strip()})")
    top = Path(r.stdout.strip()).resolve()
    r = _git(cwd, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False)
    if r.returncode != 0 or not r.stdout.strip():
        raise ABError(f"--base {ref!r} names no commit in {top}; give a branch, tag or commit "
                      f"(e.g. origin/main, HEAD~1), and fetch it first in a shallow CI checkout")
    try:
        rel = cwd.resolve().relative_to(top)
    except ValueError:
        rel = Path(".")
    return top, r.stdout.strip(), rel


def run_ab(base_ref: str, pytest_args: Sequence[str], *, rounds: int | None = None, cwd: str | os.PathLike[str] | None = None,
           pythonpath: Sequence[str] | None = None, keep_worktree: bool = False,
           echo: Any = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Run the suite ``rounds`` times on each side, interleaved; ``(base_docs, head_docs, info)``.

    Round ``i`` runs base then head when ``i`` is odd, head then base when even, so a slow
    drift of the machine favours neither side.  ``rounds`` defaults to :func:`rounds_for_alpha`
    at alpha 0.01 (7): the fewest at which the test across rounds can decide.  Each entry of
    ``info["runs"]`` carries ``host``, what the run had of the machine (:mod:`host`), and
    ``host_measured`` when the run recorded host figures itself.  ``pythonpath`` entries (relative to each tree's
    root; default ``src`` when the repository has one) are prepended to ``PYTHONPATH`` so a
    package installed in editable mode resolves to each tree's own code.
    """
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    if rounds is None:
        rounds = rounds_for_alpha(DEFAULT_ALPHA)
    if rounds < 1:
        raise ABError(f"--rounds must be at least 1, got {rounds}")
    here = Path(cwd or os.getcwd())
    top, base_commit, rel = _resolve(here, base_ref)
    head_commit = _git(top, "rev-parse", "--verify", "-q", "HEAD", check=False).stdout.strip() or "(no commit)"
    dirty = bool(_git(top, "status", "--porcelain", "--untracked-files=no", check=False).stdout.strip())
    if pythonpath is None:
        pythonpath = ["src"] if (top / "src").is_dir() else []
    tmp = Path(tempfile.mkdtemp(prefix="quantperf-ab-"))
    wt = tmp / "base"
    added = False
    log = RunLog()
    try:
        _git(top, "worktree", "add", "--detach", str(wt), base_commit)
        added = True
        base = Tree("base", wt, wt / rel, base_commit)
        head = Tree("head", top, top / rel, head_commit, dirty)
        if not base.cwd.is_dir():
            raise ABError(f"{rel} does not exist in the base commit {base_commit[:10]}; run quantperf ab from "
                          f"a folder both commits have (e.g. the repository root)")
        echo(f"quantperf ab: base {base_ref} ({base_commit[:10]}) vs working tree ({head_commit[:10]}"
             f"{', with uncommitted changes' if dirty else ''}); {rounds} round{'s' if rounds != 1 else ''}, "
             f"{2 * rounds} pytest runs")
        base_docs: list[dict[str, Any]] = []
        head_docs: list[dict[str, Any]] = []
        for i in range(1, rounds + 1):
            order = (base, head) if i % 2 == 1 else (head, base)
            for tree in order:
                doc = _run_pytest(tree, pytest_args, tmp / f"{tree.label}-{i}.json", pythonpath, i, log, echo)
                (base_docs if tree is base else head_docs).append(doc)
        info = {"base": {"ref": base_ref, "commit": base_commit}, "head": {"commit": head_commit, "dirty": dirty},
                "rounds": rounds, "pytest_args": list(pytest_args), "cwd": str(rel), "pythonpath": list(pythonpath),
                "runs": log.runs}
        if keep_worktree:
            info["worktree"] = str(wt)
        return base_docs, head_docs, info
    finally:
        if keep_worktree and added:
            echo(f"quantperf ab: base worktree kept at {wt} (remove it with: git worktree remove --force {wt})")
        else:
            if added:
                _git(top, "worktree", "remove", "--force", str(wt), check=False)
            shutil.rmtree(tmp, ignore_errors=True)
            _git(top, "worktree", "prune", check=False)


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


def format_host_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """What each run had of the machine, one row per pytest run (from ``info["runs"]``).

    ``others``: cores' worth of CPU the rest of the machine used during the run; ``contention``:
    the share of the run's cores they held (the run asks for all of them); ``in-run``: the state
    the run's own measurements recorded, where its plugin records host figures.
    """
    head = ("round", "side", "wall s", "cpu share", "others", "contention", "state", "in-run")
    rows = [head]
    for r in runs:
        h = r.get("host") or {}
        m = r.get("host_measured") or {}

        def f(v: Any, fmt: str = "{:.2f}") -> str:
            return fmt.format(v) if isinstance(v, (int, float)) else "-"

        inrun = "-"
        if m:
            inrun = (m.get("state") or "?") + (f" ({m['host_contention']:.2f})" if "host_contention" in m else "")
        rows.append((str(r.get("round", "")), str(r.get("side", "")), f(r.get("wall_s"), "{:.1f}"),
                     f(h.get("cpu_share")), f(h.get("others_cores")), f(h.get("contention")),
                     str(h.get("state") or "unknown"), inrun))
    widths = [max(len(x[i]) for x in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _rounds_in(runs: Sequence[Mapping[str, Any]], state: str) -> list[int]:
    """Rounds in which a run (either side) was in ``state``."""
    return sorted({int(r["round"]) for r in runs if run_host_state(r) == state})


def _summary(verdicts: Sequence[ABVerdict]) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for v in verdicts:
        counts[v.status] += 1
    return counts


# --------------------------------------------------------------------------- command line

EPILOG = """\
Everything after -- goes to pytest, e.g.:
  quantperf ab --base origin/main -- tests/perf -q -k generate
Cost: 2 x ROUNDS pytest runs (the suite's full time each; 14 at the default 7 rounds).
Verdicts: regression (exit 1), improvement, inconclusive (beyond tolerance, not significant:
add rounds), pass. From 7 rounds on (at --alpha 0.01) significance comes from a signed-rank
test across rounds, the rounds being the independent units; with fewer, from a rank test of the
samples within each round, and every round must move the same way.
Each run's host load is measured and shown, and the timing verdicts name the rounds whose
host was contended or too busy to measure."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Measure the suite on a base commit (a temporary git worktree) and\n"
                                            "on the working tree, interleaved in rounds on this machine, and gate\n"
                                            "on the paired differences.", epilog=EPILOG)
    p.add_argument("--base", required=True, metavar="REF", help="the commit to compare against (branch, tag, sha)")
    p.add_argument("--rounds", type=int, default=None, metavar="N",
                   help="rounds; each runs the suite once per side (default: the fewest at which the test "
                        "across rounds can decide, 7 at --alpha 0.01)")
    p.add_argument("--tolerance", default="", metavar="SPEC",
                   help="tolerances, e.g. tokens_per_s=5%%,step_ms=10%% (defaults per metric)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (default 0.01)")
    p.add_argument("--json", metavar="OUT", help="write verdicts, runs and every round's documents here")
    p.add_argument("--keep-worktree", action="store_true", help="leave the base worktree in place for inspection")
    p.add_argument("--pythonpath", action="append", metavar="DIR",
                   help="folder (relative to each tree's root) put first on PYTHONPATH for that tree's runs; "
                        "repeatable; default: src when the repository has one")
    return p


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    """``quantperf ab --base REF [options] -- [pytest args]``; returns the exit status."""
    own, pytest_args = _split(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args, unknown = parser.parse_known_args(own)
    except SystemExit as e:  # --help (0) or a usage error (2, message already printed)
        return int(e.code or 0)
    pytest_args = [*unknown, *pytest_args]
    try:
        if not 0 < args.alpha < 0.5:
            raise ABError(f"--alpha must be between 0 and 0.5, got {args.alpha}")
        try:
            tolerances = parse_tolerance_spec(args.tolerance)
        except ValueError as e:
            raise ABError(f"--tolerance: {e}") from None
        if args.rounds is None:
            args.rounds = rounds_for_alpha(args.alpha)
        base_docs, head_docs, info = run_ab(args.base, pytest_args, rounds=args.rounds,
                                            pythonpath=args.pythonpath, keep_worktree=args.keep_worktree)
        too_busy = _rounds_in(info["runs"], _host.TOO_BUSY)
        contended = _rounds_in(info["runs"], _host.CONTENDED)
        verdicts = judge_rounds(base_docs, head_docs, tolerances, alpha=args.alpha, too_busy=too_busy,
                                contended=contended)
        if not any(v.status not in ("new", "gone") for v in verdicts):
            base_ids = sorted({k for d in base_docs for k in (d.get("tests") or {})})
            head_ids = sorted({k for d in head_docs for k in (d.get("tests") or {})})
            raise ABError("no metric was measured on both sides, so there is nothing to compare. "
                          f"Base tests: {base_ids[:3] or 'none'}; head tests: {head_ids[:3] or 'none'}. Check the "
                          "pytest arguments select tests that record quantperf metrics in both commits")
    except ABError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(format_table(verdicts))
    print("\nhost load per run:")
    print(format_host_table(info["runs"]))
    states = [run_host_state(r) for r in info["runs"]]
    host_counts = {st: states.count(st) for st in _host.STATES}
    host_counts["unknown"] = states.count(None)
    counts = _summary(verdicts)
    print(f"\n{PROG}: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]) +
          f" (alpha {args.alpha:g}, {args.rounds} rounds, base {args.base})")
    print(f"{PROG}: host " + ", ".join(f"{n} {st.replace('_', ' ')}" for st, n in host_counts.items() if n)
          + f" of {len(states)} runs"
          + (f"; too busy to measure in rounds {', '.join(map(str, too_busy))}: a timing verdict from "
             "those rounds measures the neighbours as much as the code" if too_busy else ""))
    for v in verdicts:
        if v.status in ("regression", "inconclusive", "improvement"):
            print(f"  {v.nodeid}: {v.message}")
    if args.json:
        doc = {"schema": 1, "kind": "ab", "alpha": args.alpha, **info, "counts": counts,
               "host": {"counts": host_counts, "too_busy_rounds": too_busy, "contended_rounds": contended},
               "verdicts": [v.to_dict() for v in verdicts], "base_runs": base_docs, "head_runs": head_docs}
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(str(args.json) + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, args.json)
        except OSError as e:
            print(f"{PROG}: error: could not write --json {args.json}: {e}", file=sys.stderr)
            return 2
    return 1 if counts["regression"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
