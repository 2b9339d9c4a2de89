"""``quantperf accept``: a changed value accepted on purpose, kept with who, when and why."""
from __future__ import annotations

import argparse
import difflib
import os
from typing import Any, Mapping

from .common import CliError, _storage, load_run


def _who() -> str:
    from ..envinfo import run_git

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
    from ..store.schema import StorageError

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
