"""The terminal report: a table per test and a one-line summary, coloured where the terminal can.

Output goes through a small writer interface (``write(text, **markup)``, ``line(text, **markup)``,
``sep(char, title)``, ``width``) so that pytest's terminal reporter and the ``quantperf`` command
print the same tables. Colour is pytest's markup (``red=True``): the terminal writer drops it
when the output is not a terminal, so CI logs stay plain.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Sequence, TextIO

from .view import NOTABLE, fmt_num, fmt_pct, proof_text, shorten_nodeid, summary_line

COLOUR = {"breach": "red", "missing": "red", "regression": "red", "inconclusive": "yellow",
          "improvement": "green", "pass": "green",
          "new": "cyan", "gone": "yellow", "n/a": "cyan"}


class PytestOut:
    """Writer over pytest's TerminalReporter (only its public methods)."""

    def __init__(self, tr: Any):
        self.tr = tr
        tw = getattr(tr, "_tw", None)
        self.width = int(getattr(tw, "fullwidth", 0) or 100)

    def write(self, text: str, **markup: bool) -> None:
        self.tr.write(text, **markup)

    def line(self, text: str = "", **markup: bool) -> None:
        self.tr.write_line(text, **markup)

    def sep(self, char: str, title: str, **markup: bool) -> None:
        self.tr.write_sep(char, title, **markup)

    def newline(self) -> None:
        self.tr.write("\n")

    def start(self) -> None:
        ensure = getattr(self.tr, "ensure_newline", None)
        if ensure:
            ensure()


_ANSI = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold": "1"}


class StreamOut:
    """Writer over a text stream (the ``quantperf`` command): ANSI colour only on a terminal."""

    def __init__(self, stream: TextIO | None = None, colour: bool | None = None, width: int | None = None):
        self.stream = stream or sys.stdout
        if colour is None:
            colour = (hasattr(self.stream, "isatty") and self.stream.isatty() and not os.environ.get("NO_COLOR")
                      and os.environ.get("TERM") != "dumb") or bool(os.environ.get("FORCE_COLOR"))
        self.colour = bool(colour)
        if width is None:
            import shutil

            width = shutil.get_terminal_size((100, 24)).columns
        self.width = max(60, int(width))

    def _mark(self, text: str, markup: Mapping[str, bool]) -> str:
        codes = [_ANSI[k] for k, v in markup.items() if v and k in _ANSI]
        if not self.colour or not codes or not text:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def write(self, text: str, **markup: bool) -> None:
        self.stream.write(self._mark(text, markup))

    def line(self, text: str = "", **markup: bool) -> None:
        self.stream.write(self._mark(text, markup) + "\n")

    def sep(self, char: str, title: str, **markup: bool) -> None:
        n = max(4, (self.width - len(title) - 2) // 2)
        self.line(f"{char * n} {title} {char * n}"[: self.width], **markup)

    def newline(self) -> None:
        self.stream.write("\n")

    def start(self) -> None:
        pass


def _mk(status: str) -> dict[str, bool]:
    c = COLOUR.get(status)
    return {c: True} if c else {}


def _value_cell(r: Mapping[str, Any], verbose: int) -> str:
    if r["value"] is None:
        return "—"
    s = fmt_num(r["value"]) + (f" {r['unit']}" if r["unit"] else "")
    if verbose <= 0 and r["n"] > 1 and r.get("cv"):
        s += f" ±{r['cv'] * 100:.1f}%"
    return s


def _budget_cell(r: Mapping[str, Any]) -> str:
    b = r.get("budget")
    if not b:
        return ""
    lim = fmt_num(b["limit"])
    return f"{'≤' if b['bound'] == 'max' else '≥'} {lim}"


def _baseline_cell(r: Mapping[str, Any]) -> str:
    return fmt_num(r["baseline"]) if r.get("baseline") is not None else ""


def _verdict_cell(r: Mapping[str, Any]) -> str:
    s = r["status"] or ""
    if s == "regression" and not r["gating"]:
        s = "regression (not gated)"
    return s.replace("_", " ")


def _stats_cell(r: Mapping[str, Any]) -> str:
    if r["n"] <= 1:
        return "n=1" if r["value"] is not None else ""
    s = f"n={r['n']}"
    if r.get("cv"):
        s += f" cv {r['cv'] * 100:.1f}%"
    if r.get("ci"):
        s += f" CI [{fmt_num(r['ci'][0])}, {fmt_num(r['ci'][1])}]"
    return s


def _table(out: Any, rows: Sequence[Mapping[str, Any]], verbose: int, indent: str = "  ") -> None:
    head = ["metric", "value", "budget", "baseline", "change", "verdict"]
    if verbose > 0:
        head.insert(2, "samples")
    cells = []
    for r in rows:
        metric = r["metric"]
        c = [metric, _value_cell(r, verbose), _budget_cell(r), _baseline_cell(r), fmt_pct(r.get("change")),
             _verdict_cell(r)]
        if verbose > 0:
            c.insert(2, _stats_cell(r))
        cells.append(c)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    widths[0] = min(widths[0], 36)
    out.line(indent + "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(), bold=True)
    ci_change = head.index("change")
    ci_verdict = head.index("verdict")
    for r, c in zip(rows, cells):
        out.write(indent)
        for i, (text, w) in enumerate(zip(c, widths)):
            if i == 0 and len(text) > w:
                text = text[: w - 1] + "…"
            padded = text.ljust(w) if i < len(c) - 1 else text
            mk: dict[str, bool] = {}
            if i in (ci_change, ci_verdict) and r["status"] in NOTABLE:
                mk = _mk(r["status"])
                if r["status"] == "regression" and not r["gating"]:
                    mk = {"yellow": True}
            elif i == ci_verdict and r["status"] == "pass":
                mk = {"green": True}
            out.write(padded, **mk)
            if i < len(c) - 1:
                out.write("  ")
        out.newline()


def render(view: Mapping[str, Any], out: Any, verbose: int = 0, *, title: str = "quantperf") -> None:
    """Print the report of ``view`` (see :func:`view.build_view`) at pytest's verbosity (-q = -1)."""
    s = view["summary"]
    tests = view["tests"]
    if not tests and not s["warnings"] and not s.get("saved") and not s.get("gone_tests"):
        return
    out.start()
    out.sep("=", title)
    width = max(40, getattr(out, "width", 100) - 4)
    if verbose < 0:
        notable = [(t, r) for t in tests for r in t["rows"] if r.get("attention") or r["status"] == "improvement"]
        for t, r in notable:
            mk = _mk(r["status"])
            if r["status"] == "regression" and not r["gating"]:
                mk = {"yellow": True}
            out.write(f"{_verdict_cell(r).upper():<12} ", **mk)
            out.line(f"{shorten_nodeid(t['nodeid'], width - 13)}  {r['detail'] or r['metric']}")
        for t in tests:
            if t["outcome"] == "failed" and not any(tt is t for tt, _ in notable):
                out.line(f"{'FAILED':<12} {shorten_nodeid(t['nodeid'], width - 13)}", red=True)
    else:
        for t in tests:
            rows = t["rows"] if verbose > 0 else [r for r in t["rows"] if r["key"]]
            label = shorten_nodeid(t["nodeid"], width)
            tag = t["status"].replace("_", " ") if t["status"] else ""
            out.write(label, bold=True)
            extra = []
            if t["outcome"] and t["outcome"] != "passed":
                extra.append(t["outcome"])
            if t.get("new"):
                extra.append("new test")
            if extra:
                out.write("  (" + ", ".join(extra) + ")", **({"red": True} if t["outcome"] == "failed" else {}))
            if tag and tag != "pass" and not (t.get("new") and t["status"] == "new"):
                out.write("  " + tag.upper(), **_mk(t["status"]))
            out.newline()
            if verbose > 0:
                for p in t["proof"]:
                    out.line("  model " + proof_text(p))
            if rows:
                _table(out, rows, verbose)
            hidden = len(t["rows"]) - len(rows)
            for r in rows:
                for note in r["notes"]:
                    out.line(f"    ↳ {note['message']}")
            if hidden > 0:
                out.line(f"  (+{hidden} more metrics; -v shows every metric)")
        _new_gone(out, s, verbose, width)
    for w in s["warnings"]:
        out.line(f"quantperf: {w}", yellow=True)
    if s.get("saved"):
        out.line(f"quantperf: saved baseline {s['saved']!r}" + (f" to {s['storage']}" if s.get("storage") else ""),
                 green=True)
    mk = {"fail": {"red": True, "bold": True}, "warn": {"yellow": True, "bold": True}}.get(s["status"],
                                                                                        {"green": True})
    out.line("quantperf: " + summary_line(view), **mk)


def _new_gone(out: Any, s: Mapping[str, Any], verbose: int, width: int) -> None:
    limit = None if verbose > 0 else 5
    for key, what in (("new_tests", "new (not in the baseline; listed, not failed)"),
                      ("gone_tests", "in the baseline but not run (listed, not failed)")):
        ids = s.get(key) or []
        if not ids:
            continue
        out.line(f"{len(ids)} test{'s' if len(ids) != 1 else ''} {what}:")
        for nid in ids[:limit]:
            out.line("  " + shorten_nodeid(nid, width - 2))
        if limit is not None and len(ids) > limit:
            out.line(f"  … and {len(ids) - limit} more (-v lists all)")
