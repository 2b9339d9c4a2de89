"""``quantperf list``, ``show``, ``compare`` and ``report``: stored baselines and runs, read and compared."""
from __future__ import annotations

import argparse
import json
from typing import Any, Mapping

from .common import CliError, _compare, _history_for, _looks_like_path, _out, _print_table, _storage, _verbosity, \
    _write_outputs, load_run


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


def _header(doc: Mapping[str, Any], what: str) -> None:
    env = doc.get("env") or {}
    git = doc.get("git") or {}
    bits = [what, f"saved {doc.get('saved') or doc.get('created') or '?'}",
            f"hardware {env.get('hardware_id') or '?'}"]
    if git.get("commit"):
        bits.append(f"commit {git['commit'][:10]}" + (f" ({git['branch']})" if git.get("branch") else ""))
    print(" · ".join(bits))


def cmd_show(args: argparse.Namespace) -> int:
    from ..report import build_view
    from ..report.terminal import render

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
    from ..report import build_view
    from ..report.terminal import render

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
    from ..report import build_view
    from ..report.terminal import render

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
