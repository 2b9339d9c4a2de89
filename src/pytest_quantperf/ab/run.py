"""The runs of ``quantperf ab``: the base commit in a temporary git worktree, both sides interleaved.

A stored baseline from another day on another runner misleads on noisy shared machines: the
machine changed, not the code.  Here both sides run on the same machine in the same job,
alternating in rounds (A B, B A, A B, ...), so drift in machine load hits both sides alike.

Flow: ``git worktree add --detach`` of the base commit into a temporary folder; then, for each
round, ``python -m pytest ARGS -p no:cacheprovider --quantperf-json=FILE`` in each tree, each in
its own process, same interpreter and environment, with what the run had of the machine
measured around it (:mod:`pytest_quantperf.measure.host`); the worktree is removed in any case.  git
runs through :func:`pytest_quantperf.envinfo.git_process`.  No pytest imports.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..measure import host as _host
from ..envinfo import git_process
from ..stats import DEFAULT_ALPHA, rounds_for_alpha

__all__ = ["ABError", "Tree", "RunLog", "run_ab", "measured_host", "run_host_state", "format_host_table"]

# pytest exit codes that still mean "the suite ran": 0 all passed, 1 some tests failed
_RAN = (0, 1)
# environment of the calling pytest that must not leak into the child runs
_PARENT_ONLY_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID",
                    "PYTEST_CURRENT_TEST")
# a worktree checkout of a large repository takes a while
_GIT_TIMEOUT_S = 120


class ABError(Exception):
    """Bad input or a run that could not happen: printed with what to do, exit status 2."""


def _git(cwd: str | os.PathLike[str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = git_process(cwd, *args, timeout=_GIT_TIMEOUT_S)
    if r is None:
        raise ABError(f"git was not found on PATH (or did not answer within {_GIT_TIMEOUT_S} s); quantperf ab "
                      f"needs git to check out the base commit")
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
    #: the interpreter that runs this side's pytest: another environment (``--base-python``) puts
    #: two installs of the same code side by side ("does upgrading bitsandbytes slow us down")
    python: str = sys.executable


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
    cmd = [tree.python, "-m", "pytest", *pytest_args, "-p", "no:cacheprovider", f"--quantperf-json={out}"]
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
           echo: Any = None, max_rounds: int | None = None,
           extend: Callable[[list[dict[str, Any]], list[dict[str, Any]]], str | None] | None = None,
           base_python: str | None = None,
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Run the suite ``rounds`` times on each side, interleaved; ``(base_docs, head_docs, info)``.

    Round ``i`` runs base then head when ``i`` is odd, head then base when even, so a slow
    drift of the machine favours neither side.  ``rounds`` defaults to :func:`rounds_for_alpha`
    at alpha 0.01 (7): the fewest at which the test across rounds can decide.  After those,
    ``extend(base_docs, head_docs)`` may name what they left undecided; then rounds go on, in
    the same alternation, up to ``max_rounds`` in all (``info["first_rounds"]`` and
    ``info["rounds"]`` say how many ran).  Each entry of
    ``info["runs"]`` carries ``host``, what the run had of the machine (:mod:`host`), and
    ``host_measured`` when the run recorded host figures itself.  ``pythonpath`` entries (relative to each tree's
    root; default ``src`` when the repository has one) are prepended to ``PYTHONPATH`` so a
    package installed in editable mode resolves to each tree's own code. ``base_python`` runs the base
    side with another interpreter (a virtual environment with other versions of torch, transformers
    or bitsandbytes); with ``--base HEAD`` the two sides differ by their environment alone.
    """
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    if rounds is None:
        rounds = rounds_for_alpha(DEFAULT_ALPHA)
    if rounds < 1:
        raise ABError(f"--rounds must be at least 1, got {rounds}")
    may_extend = extend is not None and (max_rounds or 0) > rounds
    here = Path(cwd or os.getcwd())
    top, base_commit, rel = _resolve(here, base_ref)
    head_commit = _git(top, "rev-parse", "--verify", "-q", "HEAD", check=False).stdout.strip() or "(no commit)"
    dirty = bool(_git(top, "status", "--porcelain", "--untracked-files=no", check=False).stdout.strip())
    if pythonpath is None:
        pythonpath = ["src"] if (top / "src").is_dir() else []
    if base_python is not None and not (os.path.isfile(base_python) and os.access(base_python, os.X_OK)):
        raise ABError(f"--base-python {base_python} is not an executable file; give the python of the base "
                      "environment, e.g. /path/to/venv/bin/python")
    tmp = Path(tempfile.mkdtemp(prefix="quantperf-ab-"))
    wt = tmp / "base"
    added = False
    log = RunLog()
    try:
        _git(top, "worktree", "add", "--detach", str(wt), base_commit)
        added = True
        base = Tree("base", wt, wt / rel, base_commit, python=base_python or sys.executable)
        head = Tree("head", top, top / rel, head_commit, dirty)
        if not base.cwd.is_dir():
            raise ABError(f"{rel} does not exist in the base commit {base_commit[:10]}; run quantperf ab from "
                          f"a folder both commits have (e.g. the repository root)")
        echo(f"quantperf ab: base {base_ref} ({base_commit[:10]}) vs working tree ({head_commit[:10]}"
             f"{', with uncommitted changes' if dirty else ''}); {rounds} round{'s' if rounds != 1 else ''}, "
             f"{2 * rounds} pytest runs"
             + (f" (up to {max_rounds} rounds if a timing figure is left undecided)"
                if may_extend else ""))
        base_docs: list[dict[str, Any]] = []
        head_docs: list[dict[str, Any]] = []

        def run_rounds(first: int, last: int) -> None:
            for i in range(first, last + 1):
                order = (base, head) if i % 2 == 1 else (head, base)
                for tree in order:
                    doc = _run_pytest(tree, pytest_args, tmp / f"{tree.label}-{i}.json", pythonpath, i, log, echo)
                    (base_docs if tree is base else head_docs).append(doc)

        run_rounds(1, rounds)
        ran = rounds
        why = extend(base_docs, head_docs) if may_extend and extend else None
        if why:
            assert max_rounds is not None
            more = max_rounds - rounds
            echo(f"quantperf ab: {rounds} round{'s' if rounds != 1 else ''} left {why} undecided; {more} more "
                 f"round{'s' if more != 1 else ''}, {max_rounds} in all")
            run_rounds(rounds + 1, max_rounds)
            ran = max_rounds
        info = {"base": {"ref": base_ref, "commit": base_commit}, "head": {"commit": head_commit, "dirty": dirty},
                "rounds": ran, "first_rounds": rounds, "pytest_args": list(pytest_args), "cwd": str(rel),
                "pythonpath": list(pythonpath), "runs": log.runs,
                "python": {"base": base.python, "head": head.python}}
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
    from .._util.text import text_table

    return text_table(rows)
