"""``quantperf history``: saved runs and acceptances; the values of a test and metric; a trend chart."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, Sequence

from .common import CliError, _print_table, _storage


def _match_tests(nodeids: Sequence[str], want: str | None) -> list[str]:
    if not want:
        return list(nodeids)
    if want in nodeids:
        return [want]
    return [n for n in nodeids if want in n]


def cmd_history(args: argparse.Namespace) -> int:
    from ..store.schema import StorageError

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
        from ..store.runs import load_runs

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
                from ..report.view import fmt_num

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
    from .._util.io import write_atomic
    from ..report.charts import Charts
    from ..report.html import _env, safe_json
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
