"""``quantperf ab``: the base commit and the working tree measured interleaved in one job.

A stored baseline from another day on another runner misleads on noisy shared machines: the
machine changed, not the code.  Here both sides run on the same machine in the same job,
alternating in rounds (A B, B A, A B, ...), so drift in machine load hits both sides alike,
and the verdict rests on the per-round *paired* differences.

This module is the command: its options, the run (:func:`pytest_quantperf.abrun.run_ab`), the
verdicts (:func:`pytest_quantperf.abverdict.judge_rounds`, rules in docs/ab.md) and what is
printed and written.  Exit status: 0 no regression, 1 a regression, 2 bad input (not a git
repository, unknown REF, pytest could not run, no test measured on both sides).  No pytest imports.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping, Sequence

from ..stats import DEFAULT_ALPHA
from .common import VerbParser

PROG = "quantperf ab"

DESCRIPTION = ("Measure the suite on a base commit (a temporary git worktree) and\n"
               "on the working tree, interleaved in rounds on this machine, and gate\n"
               "on the paired differences.")

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

# how the parser of `quantperf ab` is made, as a verb of `quantperf` or on its own
PARSER_KWARGS: dict[str, Any] = dict(allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=DESCRIPTION, epilog=EPILOG, pass_on="pytest_args")


def add_arguments(p: Any) -> None:
    """The options of ``quantperf ab``; the parser must be a :class:`VerbParser` with ``pass_on="pytest_args"``.

    ``--tolerance`` has no default of its own, so that one given before the verb
    (``quantperf --tolerance SPEC ab ...``) is not overwritten.
    """
    p.add_argument("--base", required=True, metavar="REF", help="the commit to compare against (branch, tag, sha)")
    p.add_argument("--rounds", type=int, default=None, metavar="N",
                   help="rounds; each runs the suite once per side (default: the fewest at which the test "
                        "across rounds can decide, 7 at --alpha 0.01)")
    p.add_argument("--tolerance", default=argparse.SUPPRESS, metavar="SPEC",
                   help="tolerances, e.g. tokens_per_s=5%%,step_ms=10%% (defaults per metric)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (default 0.01)")
    p.add_argument("--json", metavar="OUT", help="write verdicts, runs and every round's documents here")
    p.add_argument("--keep-worktree", action="store_true", help="leave the base worktree in place for inspection")
    p.add_argument("--pythonpath", action="append", metavar="DIR",
                   help="folder (relative to each tree's root) put first on PYTHONPATH for that tree's runs; "
                        "repeatable; default: src when the repository has one")


def build_parser(prog: str = PROG) -> VerbParser:
    """``quantperf ab``'s options on a parser of its own (what :func:`main` parses)."""
    p = VerbParser(prog=prog, **PARSER_KWARGS)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``quantperf ab --base REF [options] -- [pytest args]`` (the arguments after ``ab``); the exit status."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:  # --help (0) or a usage error (2, message already printed)
        return int(e.code or 0)
    return cmd_ab(args)


def _available() -> bool:
    """Whether the modules the command runs on are installed; says what is missing when not."""
    import importlib

    for name in ("pytest_quantperf.abrun", "pytest_quantperf.abverdict"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name in (None, name):
                print(f"{PROG}: not available in this installation of pytest-quantperf (the module "
                      f"{name} is missing); upgrade pytest-quantperf", file=sys.stderr)
                return False
            raise
    return True


def _rounds_in(runs: Sequence[Mapping[str, Any]], state: str) -> list[int]:
    """Rounds in which a run (either side) was in ``state``."""
    from ..abrun import run_host_state

    return sorted({int(r["round"]) for r in runs if run_host_state(r) == state})


def _summary(verdicts: Sequence[Any]) -> dict[str, int]:
    from ..abverdict import STATUSES

    counts = {s: 0 for s in STATUSES}
    for v in verdicts:
        counts[v.status] += 1
    return counts


def cmd_ab(args: argparse.Namespace) -> int:
    """Run both sides, judge, print the tables and the summary, write ``--json``; the exit status."""
    if not _available():
        return 2
    from .. import host as _host
    from .._io import write_atomic
    from ..abrun import ABError, format_host_table, run_ab, run_host_state
    from ..abverdict import STATUSES, format_table, judge_rounds
    from ..compare import parse_tolerance_spec
    from ..stats import rounds_for_alpha

    pytest_args = list(getattr(args, "pytest_args", None) or [])
    try:
        if not 0 < args.alpha < 0.5:
            raise ABError(f"--alpha must be between 0 and 0.5, got {args.alpha}")
        try:
            tolerances = parse_tolerance_spec(getattr(args, "tolerance", None) or "")
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
            write_atomic(args.json, json.dumps(doc, indent=1, sort_keys=True))
        except OSError as e:
            print(f"{PROG}: error: could not write --json {args.json}: {e}", file=sys.stderr)
            return 2
    return 1 if counts["regression"] else 0
