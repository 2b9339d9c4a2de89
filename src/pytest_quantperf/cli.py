"""The ``quantperf`` command: stored baselines and runs, compared and reported outside pytest.

Built on the same modules as the plugin (storage, compare, report), so ``quantperf compare``
reaches the verdicts a ``pytest --quantperf-baseline`` run would. No pytest imports.

Exit status: 0 fine, 1 a gating regression (``compare``, ``report --baseline``), 2 bad input
(a missing baseline, an unreadable file, a wrong option).
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import options as _options

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


class CliError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- loading

def _find_storage(explicit: str | None) -> str:
    """``--storage`` as given; otherwise ``.quantperf`` in this folder or the nearest parent that has one."""
    if explicit and explicit != ".quantperf":
        return explicit
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / ".quantperf").is_dir():
            return str(d / ".quantperf")
    return str(here / ".quantperf")


def _storage(args: argparse.Namespace):
    from .storage import Storage

    return Storage(_find_storage(getattr(args, "storage", None)))


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".json") or os.sep in ref and os.path.exists(ref) or os.path.isfile(ref)


def load_run(args: argparse.Namespace, ref: str, hardware_id: str | None = None) -> tuple[dict[str, Any], str]:
    """A run document from a baseline name or a JSON file path; ``(doc, description)``."""
    from .storage import StorageError, validate_doc, validate_name

    if _looks_like_path(ref):
        try:
            with open(ref, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise CliError(f"{ref}: no such file (give a baseline name, or the path of a run JSON file)") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise CliError(f"{ref}: not valid JSON ({e})") from None
        try:
            validate_doc(doc, ref)
        except StorageError as e:
            raise CliError(str(e)) from None
        if isinstance(doc, dict) and doc.get("kind") == "accept":
            raise CliError(f"{ref}: an acceptance record, not a run; give a saved run or a baseline")
        return doc, ref
    try:
        validate_name(ref)
    except ValueError as e:
        raise CliError(f"{ref!r} is neither a JSON file nor a valid baseline name: {e}") from None
    st = _storage(args)
    try:
        got = st.load(ref, hardware_id)
    except StorageError as e:
        raise CliError(str(e)) from None
    if got is None:
        names = [e["name"] for e in st.list()]
        near = difflib.get_close_matches(ref, names, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else (
            f"; stored: {', '.join(names)}" if names else "; nothing is stored there yet")
        raise CliError(f"no baseline named {ref!r} in {st.url}{hint} (or give --storage / a JSON file path)")
    return got[0], f"baseline {ref!r}"


def _tolerances(args: argparse.Namespace) -> dict[str, Any]:
    from .compare import parse_tolerance_spec

    try:
        return parse_tolerance_spec(getattr(args, "tolerance", None) or "")
    except ValueError as e:
        raise CliError(f"--tolerance: {e}") from None


def _per_test_tolerances(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``tolerance=`` of each test's quant_budget marker, as stored with its budgets."""
    from .compare import parse_tolerance

    out: dict[str, dict[str, Any]] = {}
    for nid, t in (doc.get("tests") or {}).items():
        tol = ((t or {}).get("budgets") or {}).get("tolerance") or {}
        if isinstance(tol, Mapping) and tol:
            try:
                out[nid] = {str(k): parse_tolerance(str(v)) for k, v in tol.items()}
            except ValueError:
                continue
    return out


def _compare(args: argparse.Namespace, base: Mapping[str, Any], cur: Mapping[str, Any], base_name: str):
    from .compare import compare_runs

    history = None
    if not _looks_like_path(base_name):
        try:  # saved runs of the baseline's name measure the run-to-run spread, as in the plugin
            history = _storage(args).history(base_name, skip_invalid=True)
        except Exception:
            history = None
    comp = compare_runs(base, cur, _tolerances(args), per_test=_per_test_tolerances(cur),
                        gate_cross_hardware=bool(getattr(args, "gate_cross_hardware", False)), history=history)
    from .report.view import with_comparison

    cur = dict(cur)
    cur["tests"] = with_comparison(cur.get("tests") or {}, comp)  # the written JSON carries the verdicts
    cur["baseline"] = {"name": base_name, "hardware_id": comp.baseline_hardware_id,
                       "matched_hardware": comp.same_hardware, "created": base.get("created")}
    return comp, cur


def _out(args: argparse.Namespace):
    from .report.terminal import StreamOut

    colour = {"always": True, "never": False}.get(getattr(args, "color", "auto"))
    return StreamOut(sys.stdout, colour=colour)


def _verbosity(args: argparse.Namespace) -> int:
    return int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet", 0) or 0)


def _write_outputs(args: argparse.Namespace, view: dict[str, Any], doc: Mapping[str, Any],
                   baseline_doc: Mapping[str, Any] | None) -> None:
    from .report import write_reports

    html, js, md = getattr(args, "html", None), getattr(args, "json", None), getattr(args, "markdown", None)
    if not (html or js or md):
        return
    try:
        written = write_reports(view, doc, html=html, json_path=js, markdown=md, baseline_doc=baseline_doc,
                                step_summary=False)
    except OSError as e:
        raise CliError(f"cannot write the report: {e}") from None
    for p in written:
        print(f"wrote {p}", file=sys.stderr)


def _history_for(args: argparse.Namespace, name: str | None, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not name or not (getattr(args, "html", None) or getattr(args, "json", None)):
        return []
    from .report import load_history

    try:
        return load_history(_storage(args), name, doc, saved=True)
    except Exception as e:
        print(f"quantperf: history of {name!r} not shown: {e}", file=sys.stderr)
        return []


# --------------------------------------------------------------------------- verbs

def cmd_list(args: argparse.Namespace) -> int:
    st = _storage(args)
    entries = st.list()
    if args.json:
        print(json.dumps(entries, indent=1, default=str))
        return 0
    if not entries:
        print(f"no baselines in {st.url} (save one with pytest --quantperf-save=NAME)")
        return 0
    rows = [("name", "tests", "hardware", "saved", "commit", "hardware copies")]
    for e in entries:
        if e.get("error"):
            rows.append((e["name"], "?", "", "", "", f"unreadable: {e['error']}"))
            continue
        git = e.get("git") or {}
        rows.append((e["name"], str(e.get("tests", "")), e.get("hardware_id") or "",
                     (e.get("saved") or e.get("created") or "")[:19], (git.get("commit") or "")[:10],
                     str(len(e.get("hardware_ids") or []))))
    _print_table(rows)
    print(f"({len(entries)} baseline{'s' if len(entries) != 1 else ''} in {st.url})")
    return 0


def _print_table(rows: Sequence[Sequence[Any]]) -> None:
    from ._text import text_table

    print(text_table(rows))


def _header(doc: Mapping[str, Any], what: str) -> None:
    env = doc.get("env") or {}
    git = doc.get("git") or {}
    bits = [what, f"saved {doc.get('saved') or doc.get('created') or '?'}",
            f"hardware {env.get('hardware_id') or '?'}"]
    if git.get("commit"):
        bits.append(f"commit {git['commit'][:10]}" + (f" ({git['branch']})" if git.get("branch") else ""))
    print(" · ".join(bits))


def cmd_show(args: argparse.Namespace) -> int:
    from .report import build_view
    from .report.terminal import render

    doc, what = load_run(args, args.name, args.hardware)
    _header(doc, what)
    view = build_view(doc)
    acc = doc.get("accepted") or {}
    render(view, _out(args), _verbosity(args), title=str(doc.get("name") or args.name))
    if acc:
        print("accepted values:")
        for nid, per in acc.items():
            for metric, rec in per.items():
                print(f"  {nid} {metric} = {rec.get('value')} by {rec.get('who')} on {rec.get('when')}: "
                      f"{rec.get('reason')}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .report import build_view
    from .report.terminal import render

    other, other_what = load_run(args, args.other)
    base, base_what = load_run(args, args.base, (other.get("env") or {}).get("hardware_id"))
    comp, cur = _compare(args, base, other, args.base)
    print(f"{other_what} against {base_what}")
    hist = _history_for(args, base.get("name") if not _looks_like_path(args.base) else None, cur)
    view = build_view(cur, baseline_doc=base, comparison=comp, history=hist)
    render(view, _out(args), _verbosity(args), title=f"{args.other} vs {args.base}")
    _write_outputs(args, view, cur, base)
    return 1 if comp.gating else 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_view
    from .report.terminal import render

    doc, what = load_run(args, args.run)
    if not (args.html or args.json or args.markdown):
        raise CliError("say where the report goes: --html PATH, --markdown PATH and/or --json PATH")
    base = comp = None
    if args.baseline:
        base, _ = load_run(args, args.baseline, (doc.get("env") or {}).get("hardware_id"))
        comp, doc = _compare(args, base, doc, args.baseline)
    elif (doc.get("baseline") or {}).get("name") and not _looks_like_path(doc["baseline"]["name"]):
        # the run was compared when it ran: its verdicts are stored; show new/gone tests too when we can
        try:
            base = _storage(args).load(doc["baseline"]["name"], (doc.get("baseline") or {}).get("hardware_id"))
            base = base[0] if base else None
        except Exception:
            base = None
    # the trend: the run's own baseline name, else the baseline it was compared with (as the plugin does)
    name = doc.get("name") or (None if _looks_like_path(args.run) else args.run) \
        or (doc.get("baseline") or {}).get("name")
    view = build_view(doc, baseline_doc=base, comparison=comp, history=_history_for(args, name, doc))
    render(view, _out(args), min(_verbosity(args), -1) if not args.verbose else _verbosity(args),
           title=f"{what}")
    _write_outputs(args, view, doc, base)
    return 1 if comp is not None and comp.gating else 0


def _match_tests(nodeids: Sequence[str], want: str | None) -> list[str]:
    if not want:
        return list(nodeids)
    if want in nodeids:
        return [want]
    return [n for n in nodeids if want in n]


def cmd_history(args: argparse.Namespace) -> int:
    from .storage import StorageError

    st = _storage(args)
    try:
        entries = st.history(args.name, skip_invalid=True)
    except (StorageError, ValueError) as e:
        raise CliError(str(e)) from None
    if args.limit:
        entries = entries[-args.limit:]
    if not entries:
        print(f"no history{f' for {args.name!r}' if args.name else ''} in {st.url}")
        return 0
    if args.csv:
        from .runs import load_runs

        df = load_runs(st.url, args.name, test=args.test, metric=args.metric)
        if args.limit:
            df = df[df["created"].isin(sorted(df["created"].unique())[-args.limit:])]
        df.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}: {len(df)} rows (one per run, test and metric)")
        return 0
    if not args.test and not args.metric:
        rows = [("saved", "name", "kind", "tests", "hardware", "commit / acceptance")]
        for h in entries:
            if h.get("kind") == "accept":
                rows.append(((h.get("created") or "")[:19], h.get("name"), "accept", "", h.get("hardware_id") or "",
                             f"{h.get('nodeid')} {h.get('metric')} = {h.get('value')} by {h.get('who')}: "
                             f"{h.get('reason')}"))
            else:
                git = h.get("git") or {}
                rows.append(((h.get("created") or "")[:19], h.get("name") or "", "run", str(len(h.get("tests") or {})),
                             (h.get("env") or {}).get("hardware_id") or "", (git.get("commit") or "")[:10]))
        _print_table(rows)
        if args.html:
            raise CliError("--html draws a trend: give --test and/or --metric to choose what to chart")
        return 0
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    units: dict[tuple[str, str], str] = {}
    rows = [("saved", "name", "commit", "test", "metric", "value", "n")]
    accepts = []
    for h in entries:
        if h.get("kind") == "accept":
            if (not args.metric or h.get("metric") == args.metric) and _match_tests([h.get("nodeid", "")], args.test):
                accepts.append(h)
                rows.append(((h.get("created") or "")[:19], h.get("name"), "accept", h.get("nodeid"), h.get("metric"),
                             f"{h.get('value')} (accepted by {h.get('who')}: {h.get('reason')})", ""))
            continue
        tests = h.get("tests") or {}
        for nid in _match_tests(list(tests), args.test):
            for mname, m in ((tests[nid] or {}).get("metrics") or {}).items():
                if args.metric and mname != args.metric:
                    continue
                series.setdefault((nid, mname), []).append({"created": h.get("created"), "value": m.get("value"),
                                                            "commit": ((h.get("git") or {}).get("commit") or "")[:10]})
                units[(nid, mname)] = m.get("unit") or ""
                from .report.view import fmt_num

                rows.append(((h.get("created") or "")[:19], h.get("name") or "",
                             ((h.get("git") or {}).get("commit") or "")[:10], nid, mname,
                             f"{fmt_num(m.get('value'))} {m.get('unit') or ''}".rstrip(),
                             str(len(m.get("samples") or []) or 1)))
    if len(rows) == 1:
        raise CliError("nothing in the history matches "
                       + " and ".join(x for x in (f"--test {args.test!r}" if args.test else "",
                                                   f"--metric {args.metric!r}" if args.metric else "") if x))
    _print_table(rows)
    if args.html:
        _history_html(args, series, units, accepts)
    return 0


def _history_html(args: argparse.Namespace, series: Mapping[tuple[str, str], list[dict[str, Any]]],
                  units: Mapping[tuple[str, str], str], accepts: Sequence[Mapping[str, Any]]) -> None:
    from .report import write_atomic
    from .report.charts import Charts
    from .report.html import _env, safe_json
    from markupsafe import Markup

    chosen = [(k, v) for k, v in series.items() if len(v) >= 1][: args.max_charts]
    data = [{"nodeid": nid, "metric": m, "unit": units.get((nid, m), ""), "status": "",
             "points": pts, "accepted": [{"created": a.get("created"), "value": a.get("value"), "who": a.get("who"),
                                          "reason": a.get("reason")}
                                         for a in accepts if a.get("nodeid") == nid and a.get("metric") == m]}
            for (nid, m), pts in chosen]
    svg = Markup(Charts().trends(data)) if data else None
    page = _env().get_template("history.html.j2").render(
        title=f"quantperf history{f' of {args.name}' if args.name else ''}", svg=svg, series=data,
        total=len(series), test=args.test, metric=args.metric, data_json=Markup(safe_json(data)))
    try:
        write_atomic(args.html, page)
    except OSError as e:
        raise CliError(f"cannot write {args.html}: {e}") from None
    print(f"wrote {args.html}", file=sys.stderr)


def _who() -> str:
    from .envinfo import run_git

    name = run_git(".", "config", "user.name", timeout=5)
    if name:
        return name
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def _metric_value(doc: Mapping[str, Any], nodeid: str, metric: str) -> float | None:
    """The stored value (the median for sampled metrics) of one test's metric in a run document."""
    m = (((doc.get("tests") or {}).get(nodeid) or {}).get("metrics") or {}).get(metric)
    v = m.get("value") if isinstance(m, Mapping) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def cmd_accept(args: argparse.Namespace) -> int:
    """Accept a value given with ``--value``, or the value the run in ``--from`` measured.

    Without either there is nothing to accept: a run that regressed is never saved, so the only
    stored value is the baseline's own, and accepting that changes no verdict.  The command then
    refuses and names ``--from`` and ``--value`` instead of writing a record that accepts nothing.
    """
    from .storage import StorageError

    if not args.reason.strip():
        raise CliError("an acceptance needs a reason: say why this change is intended (--reason TEXT)")
    st = _storage(args)
    doc, _ = load_run(args, args.name, args.hardware)
    tests = doc.get("tests") or {}
    if args.test not in tests:
        near = difflib.get_close_matches(args.test, list(tests), n=3, cutoff=0.4)
        raise CliError(f"baseline {args.name!r} has no test {args.test!r}"
                       + (f"; did you mean {', '.join(near)}?" if near else "") + " (give the full node id)")
    metrics = (tests[args.test] or {}).get("metrics") or {}
    if args.metric not in metrics:
        raise CliError(f"test {args.test!r} of baseline {args.name!r} has no metric {args.metric!r}; it has "
                       f"{', '.join(sorted(metrics)) or 'none'}")
    unit = metrics[args.metric].get("unit") or ""
    us = f" {unit}" if unit else ""
    base_value = _metric_value(doc, args.test, args.metric)
    if args.value is not None and args.from_run:
        raise CliError("give --value V or --from RUN, not both")
    if args.value is not None:
        value, source = float(args.value), "--value"
    elif args.from_run:
        run, desc = load_run(args, args.from_run)
        value = _metric_value(run, args.test, args.metric)
        if value is None:
            raise CliError(f"{desc} has no value of {args.test} {args.metric} (did that test fail before "
                           f"measuring it?); pass --value V to accept a value by hand")
        source = f"{desc}, created {run.get('created') or '?'}"
    else:
        held = f"; the baseline holds {base_value:g}{us}, and accepting its own value would change no verdict" \
            if base_value is not None else ""
        raise CliError(f"say which value of {args.test} {args.metric} to accept: --from RUN, the run that "
                       f"measured the new value (the file its --quantperf-json wrote, or a name it was saved "
                       f"under), or --value V{held}")
    better = metrics[args.metric].get("better")
    note = ""
    if base_value is not None and better in ("lower", "higher") and \
            not (value > base_value if better == "lower" else value < base_value):
        note = f" (no worse than the baseline's {base_value:g}{us}: nothing fails there today)"
    who = args.who or _who()
    try:
        st.accept(args.name, args.test, args.metric, float(value), args.reason, who, hardware_id=args.hardware)
    except (StorageError, ValueError) as e:
        raise CliError(str(e)) from None
    print(f"accepted {args.test} {args.metric} = {value:g}{us} (from {source}) in baseline "
          f"{args.name!r} by {who}: {args.reason}{note}")
    return 0


def cmd_fit(argv: Sequence[str]) -> int:
    from .fit import fit_main

    return int(fit_main(list(argv)) or 0)


def cmd_ab(argv: Sequence[str]) -> int:
    import importlib

    try:
        ab = importlib.import_module("pytest_quantperf.ab")
    except ModuleNotFoundError as e:
        if e.name in (None, "pytest_quantperf.ab"):
            print("quantperf ab: not available in this installation of pytest-quantperf (the module "
                  "pytest_quantperf.ab is missing); upgrade pytest-quantperf", file=sys.stderr)
            return 2
        raise
    return int(ab.main(list(argv)) or 0)


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
    sub = p.add_subparsers(dest="verb", metavar="VERB")

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

    sub.add_parser("fit", add_help=False, help="predicted memory before any load (quantperf fit --help)")
    sub.add_parser("ab", add_help=False, help="A/B of a base commit and the working tree (quantperf ab --help)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fit":
        return cmd_fit(argv[1:])
    if argv and argv[0] == "ab":
        return cmd_ab(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"{PROG} {args.verb}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
