"""``quantperf ab``: the base commit and the working tree measured interleaved in one job.

A stored baseline from another day on another runner misleads on noisy shared machines: the
machine changed, not the code.  Here both sides run on the same machine in the same job,
alternating in rounds (A B, B A, A B, ...), so drift in machine load hits both sides alike,
and the verdict rests on the per-round *paired* differences.

This module is the command: its options, the run (:func:`pytest_quantperf.ab.run.run_ab`), the
verdicts (:func:`pytest_quantperf.ab.verdict.judge_rounds`, rules in docs/ab.md) and what is
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
Cost: 2 x ROUNDS pytest runs (the suite's full time each; 14 at the default 7 rounds, and up
to 28 when those 7 leave a timing figure inconclusive: see --max-rounds).
Verdicts: regression (exit 1), improvement, inconclusive (beyond tolerance, not significant:
add rounds), pass. From 7 rounds on (at --alpha 0.01) significance comes from a signed-rank
test across rounds, the rounds being the independent units; with fewer, from a rank test of the
samples within each round, and every round must move the same way. Seven rounds decide only
when every round moved one way (p = 1/128); a figure they leave undecided is judged again over
all 14 rounds at p < 0.0022, what the first look left of alpha, so both looks together keep
the false-alarm rate at most alpha.
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
    p.add_argument("--max-rounds", type=int, default=None, metavar="M",
                   help="when the first rounds leave a timing figure inconclusive, run more rounds, up to M "
                        "in all, and judge that figure again over all of them at what the first look left of "
                        "alpha (default: twice the default rounds, 14; with --rounds given, --rounds: no "
                        "second look)")
    p.add_argument("--tolerance", default=argparse.SUPPRESS, metavar="SPEC",
                   help="tolerances, e.g. tokens_per_s=5%%,step_ms=10%% (defaults per metric)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (default 0.01)")
    p.add_argument("--json", metavar="OUT", help="write verdicts, runs and every round's documents here")
    p.add_argument("--keep-worktree", action="store_true", help="leave the base worktree in place for inspection")
    p.add_argument("--base-python", metavar="PATH", default=None,
                   help="run the base side with this interpreter (another virtual environment: other versions of "
                        "torch, transformers, bitsandbytes); with --base HEAD the sides differ by environment alone")
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

    for name in ("pytest_quantperf.ab.run", "pytest_quantperf.ab.verdict"):
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
    from ..ab.run import run_host_state

    return sorted({int(r["round"]) for r in runs if run_host_state(r) == state})


def _summary(verdicts: Sequence[Any]) -> dict[str, int]:
    from ..ab.verdict import STATUSES

    counts = {s: 0 for s in STATUSES}
    for v in verdicts:
        counts[v.status] += 1
    return counts


def _plan(args: argparse.Namespace) -> tuple[int, int, float]:
    """``(rounds, max_rounds, later_alpha)`` from the options; ABError where they cannot work together.

    Without ``--rounds`` the first look is the fewest rounds that can decide (7 at 0.01) and the
    second may double them; with ``--rounds N`` the run is N rounds unless ``--max-rounds`` asks
    for more.  The second look needs enough rounds for the signed-rank test to reach what the
    first left of alpha (9 at 0.0022).
    """
    from ..ab.run import ABError
    from ..stats import rounds_for_alpha, second_look_alpha

    rounds = args.rounds if args.rounds is not None else rounds_for_alpha(args.alpha)
    max_rounds = args.max_rounds
    if max_rounds is None:
        max_rounds = 2 * rounds if args.rounds is None else rounds
    if max_rounds < rounds:
        raise ABError(f"--max-rounds ({max_rounds}) is below --rounds ({rounds}); give at least {rounds}")
    later_alpha = second_look_alpha(rounds, args.alpha)
    if max_rounds > rounds:
        if later_alpha <= 0:
            raise ABError(f"--max-rounds above --rounds needs --rounds of at least {rounds_for_alpha(args.alpha)} "
                          f"at --alpha {args.alpha:g}: with {rounds} the first look spends all of alpha, so "
                          f"a second could only raise false alarms; drop --max-rounds or raise --rounds")
        need = rounds_for_alpha(later_alpha)
        if max_rounds < need:
            raise ABError(f"--max-rounds {max_rounds} is too few for a second look: at the p < {later_alpha:.2g} it "
                          f"is left, the test across rounds needs at least {need}; give --max-rounds {need} or more")
    return rounds, max_rounds, later_alpha


def cmd_ab(args: argparse.Namespace) -> int:
    """Run both sides, judge, print the tables and the summary, write ``--json``; the exit status."""
    if not _available():
        return 2
    from ..measure import host as _host
    from .._util.io import write_atomic
    from ..ab.run import ABError, format_host_table, run_ab, run_host_state
    from ..ab.verdict import STATUSES, _pct, format_table, judge_rounds, second_look, undecided
    from ..verdicts.compare import parse_tolerance_spec

    pytest_args = list(getattr(args, "pytest_args", None) or [])
    try:
        if not 0 < args.alpha < 0.5:
            raise ABError(f"--alpha must be between 0 and 0.5, got {args.alpha}")
        try:
            tolerances = parse_tolerance_spec(getattr(args, "tolerance", None) or "")
        except ValueError as e:
            raise ABError(f"--tolerance: {e}") from None
        rounds, max_rounds, later_alpha = _plan(args)

        def extend(base_docs: list[dict[str, Any]], head_docs: list[dict[str, Any]]) -> str | None:
            """What the first rounds left undecided, for the progress line; None: nothing."""
            left = undecided(judge_rounds(base_docs, head_docs, tolerances, alpha=args.alpha))
            return (", ".join(f"{v.metric} {_pct(v.change)}" for v in left[:4]) + (" and more" if len(left) > 4 else "")
                    if left else None)

        base_docs, head_docs, info = run_ab(args.base, pytest_args, rounds=rounds, max_rounds=max_rounds,
                                            extend=extend, pythonpath=args.pythonpath,
                                            base_python=getattr(args, "base_python", None),
                                            keep_worktree=args.keep_worktree)
        too_busy = _rounds_in(info["runs"], _host.TOO_BUSY)
        contended = _rounds_in(info["runs"], _host.CONTENDED)
        verdicts = judge_rounds(base_docs[:rounds], head_docs[:rounds], tolerances, alpha=args.alpha,
                                too_busy=too_busy, contended=contended)
        extended = info["rounds"] > rounds
        if extended:
            later = judge_rounds(base_docs, head_docs, tolerances, alpha=later_alpha, too_busy=too_busy,
                                 contended=contended)
            verdicts = second_look(verdicts, later, rounds, later_alpha, args.alpha)
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
    looks = (f"{rounds} rounds, then {info['rounds'] - rounds} more for the undecided figures at p < {later_alpha:.2g}"
             if extended else f"{rounds} rounds")
    print(f"\n{PROG}: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]) +
          f" (alpha {args.alpha:g}, {looks}, base {args.base})")
    print(f"{PROG}: host " + ", ".join(f"{n} {st.replace('_', ' ')}" for st, n in host_counts.items() if n)
          + f" of {len(states)} runs"
          + (f"; too busy to measure in rounds {', '.join(map(str, too_busy))}: a timing verdict from "
             "those rounds measures the neighbours as much as the code" if too_busy else ""))
    for v in verdicts:
        if v.status in ("regression", "inconclusive", "improvement"):
            print(f"  {v.nodeid}: {v.message}")
    if args.json:
        doc = {"schema": 1, "kind": "ab", "alpha": args.alpha, **info, "max_rounds": max_rounds,
               "second_look_alpha": later_alpha if extended else None, "counts": counts,
               "host": {"counts": host_counts, "too_busy_rounds": too_busy, "contended_rounds": contended},
               "verdicts": [v.to_dict() for v in verdicts], "base_runs": base_docs, "head_runs": head_docs}
        try:
            write_atomic(args.json, json.dumps(doc, indent=1, sort_keys=True))
        except OSError as e:
            print(f"{PROG}: error: could not write --json {args.json}: {e}", file=sys.stderr)
            return 2
    return 1 if counts["regression"] else 0
