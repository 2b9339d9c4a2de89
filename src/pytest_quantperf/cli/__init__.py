"""The ``quantperf`` command: stored baselines and runs, compared and reported outside pytest.

One argparse parser with a subparser per verb; each verb lives in its own module:
:mod:`.baselines` (list, show, compare, report), :mod:`.history`, :mod:`.accept`, :mod:`.fit`
and :mod:`.ab`, on what :mod:`.common` shares (loading runs, the storage, writing reports).

Built on the same modules as the plugin (storage, compare, report), so ``quantperf compare``
reaches the verdicts a ``pytest --quantperf-baseline`` run would. No pytest imports.

Exit status: 0 fine, 1 a gating regression (``compare``, ``report --baseline``), 2 bad input
(a missing baseline, an unreadable file, a wrong option).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from .. import options as _options
from . import ab, fit
from .accept import cmd_accept
from .baselines import cmd_compare, cmd_list, cmd_report, cmd_show
from .common import CliError, VerbParser
from .history import cmd_history

__all__ = ["main", "build_parser", "PROG"]

PROG = "quantperf"

DESCRIPTION = """\
Inspect, compare and report pytest-quantperf baselines and runs without running pytest.

verbs:
  list                        the stored baselines
  show NAME                   one baseline (or run JSON file) as a table
  compare BASE OTHER          verdicts of OTHER against BASE; exit 1 on a gating regression
  report RUN_OR_NAME --html P HTML/Markdown/JSON report of a stored run
  history [NAME]              saved runs and acceptances; --test/--metric for values, --html for a trend chart
  accept NAME --test ID --metric M --reason TEXT --from RUN|--value V
                              accept a changed value on purpose (kept with who, when and why)
  fit MODEL --quant Q --gpu-mb N
                              predicted memory before any load
  ab --base REF [pytest args] base commit and working tree measured interleaved in one job

BASE, OTHER and RUN_OR_NAME are baseline names (from the storage) or paths to run JSON files
(a history entry, a baseline file, or a --quantperf-json report).
Run `quantperf VERB --help` for each verb's options."""

# fit and ab return their exit status from main() as they did when they parsed their own
# arguments: --help and usage errors give 0 and 2 instead of raising SystemExit; and a closed
# output pipe is not turned into success for them (their status says whether it fits, whether
# it regressed).
_OWN_STATUS = ("fit", "ab")


# --------------------------------------------------------------------------- parser

class _Adder:
    """Feeds the shared option table to argparse: ``%`` in help texts made literal, defaults optional."""

    def __init__(self, parser: argparse.ArgumentParser, suppress_default: bool = False):
        self.parser = parser
        self.suppress_default = suppress_default

    def add_argument(self, *args: Any, **kw: Any) -> Any:
        import re

        if "help" in kw:
            kw["help"] = re.sub(r"(?<!%)%(?!%)", "%%", str(kw["help"]))
        if self.suppress_default:
            kw["default"] = argparse.SUPPRESS
        return self.parser.add_argument(*args, **kw)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # on the verbs, the shared options must not overwrite a value given before the verb
    _options.add_cli_options(_Adder(common, suppress_default=True))
    look = argparse.ArgumentParser(add_help=False)
    look.add_argument("-v", "--verbose", action="count", default=0, help="every metric, with samples and CI")
    look.add_argument("-q", "--quiet", action="count", default=0, help="only what needs attention")
    look.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                      help="colour the verdicts (auto: on a terminal, unless NO_COLOR is set)")
    outs = argparse.ArgumentParser(add_help=False)
    outs.add_argument("--html", metavar="PATH", help="also write the HTML report here")
    outs.add_argument("--markdown", metavar="PATH", help="also write the Markdown report here")
    outs.add_argument("--json", metavar="PATH", help="also write the JSON report here")

    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _options.add_cli_options(_Adder(p))
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=VerbParser)

    s = sub.add_parser("list", parents=[common], help="the stored baselines",
                       description="List the stored baselines: name, tests, hardware, when saved, commit.")
    s.add_argument("--json", action="store_true", help="print the listing as JSON")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("show", parents=[common, look], help="one baseline as a table",
                       description="Show a baseline (or a run JSON file): every test's metrics, budgets and "
                                   "stored verdicts, and the accepted values.")
    s.add_argument("name", metavar="NAME", help="baseline name, or path of a run JSON file")
    s.add_argument("--hardware", metavar="ID", help="the copy saved on this hardware id (default: the latest save)")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("compare", parents=[common, look, outs], help="verdicts of OTHER against BASE",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Compare run OTHER with baseline BASE by the plugin's rules (statistics on "
                                   "timing samples, tolerances, hardware, accepted values).\nExit status 1 when a "
                                   "regression gates, so a CI step can use it:\n\n"
                                   "  quantperf compare main pr-123\n"
                                   "  quantperf compare main .quantperf/history/2026...Z_pr.json --html cmp.html")
    s.add_argument("base", metavar="BASE", help="baseline name or run JSON file: the reference")
    s.add_argument("other", metavar="OTHER", help="baseline name or run JSON file: the run judged")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("report", parents=[common, look, outs], help="HTML/Markdown/JSON report of a stored run",
                       description="Write the reports of a stored run (a baseline name or a run JSON file), with the "
                                   "verdicts stored with it, or against --baseline NAME.")
    s.add_argument("run", metavar="RUN_OR_NAME", help="baseline name, or path of a run JSON file")
    s.add_argument("--baseline", metavar="NAME_OR_FILE", help="compare against this baseline first")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("history", parents=[common], help="saved runs; values of a test/metric; trend chart",
                       description="The history of saved runs and acceptances (oldest first). With --test and/or "
                                   "--metric: the value of each matching test and metric in each run; --html PATH "
                                   "draws their trend.")
    s.add_argument("name", metavar="NAME", nargs="?", help="only this baseline name's history")
    s.add_argument("--test", metavar="NODEID", help="a test node id (or a part of one)")
    s.add_argument("--metric", metavar="M", help="a metric name, e.g. tokens_per_s")
    s.add_argument("--html", metavar="PATH", help="write a trend chart page here")
    s.add_argument("--csv", metavar="PATH", help="write the runs' values as CSV here: one row per run, test and "
                                                 "metric (what pytest_quantperf.load_runs returns)")
    s.add_argument("--limit", type=int, metavar="N", help="only the last N entries")
    s.add_argument("--max-charts", type=int, default=12, metavar="N", help="at most N series in the chart (12)")
    s.set_defaults(func=cmd_history)

    s = sub.add_parser("accept", parents=[common], help="accept a changed value on purpose, with a reason",
                       description="Record that a test's metric at its new value is intended: the next comparison "
                                   "with this baseline shows it as 'accepted' (with the reason) instead of failing. "
                                   "Kept in the baseline and in its history with who, when and why.")
    s.add_argument("name", metavar="NAME", help="the baseline")
    s.add_argument("--test", required=True, metavar="NODEID", help="the test's full node id")
    s.add_argument("--metric", required=True, metavar="M", help="the metric, e.g. tokens_per_s")
    s.add_argument("--reason", required=True, metavar="TEXT", help="why this change is intended")
    s.add_argument("--from", dest="from_run", metavar="RUN",
                   help="accept the value this run measured: the JSON file a --quantperf-json run wrote (e.g. "
                        "the failing pull-request run), or a baseline name")
    s.add_argument("--value", type=float, metavar="V", help="accept this value instead (one of --from, --value)")
    s.add_argument("--who", metavar="NAME", help="who accepts it (default: git user.name, else $USER)")
    s.add_argument("--hardware", metavar="ID", help="only the copy of this hardware id (default: every copy)")
    s.set_defaults(func=cmd_accept)

    s = sub.add_parser("fit", help="predicted memory before any load (quantperf fit --help)",
                       description=fit.DESCRIPTION, strict=True)
    fit.add_arguments(s)
    s.set_defaults(func=fit.cmd_fit)

    s = sub.add_parser("ab", help="A/B of a base commit and the working tree (quantperf ab --help)",
                       **ab.PARSER_KWARGS)
    ab.add_arguments(s)
    s.set_defaults(func=ab.cmd_ab)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        if argv and argv[0] in _OWN_STATUS:
            return int(e.code or 0)
        raise
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.verb in _OWN_STATUS:
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"{PROG} {args.verb}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
