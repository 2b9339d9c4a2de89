"""The Markdown report: what needs attention first, then every test; fit for a CI job summary."""
from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

from .view import SEVERITY, fmt_num, fmt_pct, summary_line

ICON = {"breach": "❌", "missing": "❌", "regression": "❌", "inconclusive": "⚠️", "improvement": "🚀", "pass": "✅", "new": "🆕", "gone": "➖", "n/a": "➖"}


def cell(text: Any) -> str:
    """Safe inside a table cell: no pipes, no raw HTML, no line breaks."""
    s = html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ").replace("`", "'")
    return s


def code(text: Any) -> str:
    """A code span: shown literally (``<script>`` stays text); pipes escaped for tables."""
    s = str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ")
    return f"`{s}`"


def _status(r: Mapping[str, Any]) -> str:
    s = r["status"]
    if not s:
        return ""
    label = s.replace("_", " ")
    if s == "regression" and not r["gating"]:
        label += " (not gated)"
    return f"{ICON.get(s, '')} {label}".strip()


def _row(r: Mapping[str, Any], with_test: bool, with_message: bool) -> str:
    v = "—" if r["value"] is None else fmt_num(r["value"]) + (f" {r['unit']}" if r["unit"] else "")
    if r["n"] > 1 and r.get("cv"):
        v += f" ±{r['cv'] * 100:.1f}%"
    b = r.get("budget")
    budget = f"{'≤' if b['bound'] == 'max' else '≥'} {fmt_num(b['limit'])}" if b else ""
    cells = ([code(r["nodeid"])] if with_test else []) + [
        cell(r["metric"]), cell(v), cell(budget), cell(fmt_num(r["baseline"]) if r["baseline"] is not None else ""),
        cell(fmt_pct(r.get("change"))), cell(_status(r))]
    if with_message:
        cells.append(cell(r["detail"]))
    return "| " + " | ".join(cells) + " |"


def render(view: Mapping[str, Any], *, title: str = "quantperf", max_rows: int = 300,
           max_work_tables: int = 10) -> str:
    """Markdown for a CI summary and the pull-request comment: what needs attention, the by-name
    diff of each work figure in it, then every test. ``max_rows`` and ``max_work_tables`` keep it
    under GitHub's limits (1 MiB a step summary, 65,536 characters a comment)."""
    s = view["summary"]
    lines = [f"## {cell(title)}: {_headline(s)}", "", cell(summary_line(view)), ""]
    b = s.get("baseline")
    if b and b.get("name") and b.get("found") is not False and not b.get("matched_hardware"):
        lines += [f"> ⚠️ baseline {code(b['name'])} was measured on other hardware "
                  f"({code(b.get('hardware_id'))}, this run {code(view['env'].get('hardware_id'))}): "
                  "speed and energy are shown but do not gate.", ""]
    for w in s["warnings"]:
        lines.append(f"> {cell(w)}")
    if s["warnings"]:
        lines.append("")
    rows = [r for t in view["tests"] for r in t["rows"]]
    notable = sorted((r for r in rows if r.get("attention")), key=lambda r: SEVERITY.index(r["status"]))
    if notable:
        lines += ["### Needs attention", "",
                  "| test | metric | value | budget | baseline | change | verdict | detail |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
        lines += [_row(r, True, True) for r in notable[:max_rows]]
        if len(notable) > max_rows:
            lines.append(f"\n… and {len(notable) - max_rows} more (see the HTML or JSON report)")
        lines.append("")
    moved = [r for r in notable if r.get("work_diff")]
    if moved:
        lines += ["### Work per token by name, against the baseline", ""]
        for r in moved[:max_work_tables]:
            lines += [f"{code(r['nodeid'])} {cell(r['metric'])}, largest changes first:", "",
                      "| name | baseline | now | change |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| {code(c['name'])} | {fmt_num(c['base'])} | {fmt_num(c['cur'])} | {c['delta_text']} |"
                      for c in r["work_diff"]]
            lines.append("")
    failed = s.get("failed_tests") or []
    if failed:
        lines += ["### Failed tests", ""] + [f"- {code(n)}" for n in failed] + [""]
    if view["tests"]:
        lines += [f"<details><summary>All tests ({len(view['tests'])})</summary>", "",
                  "| test | metric | value | budget | baseline | change | verdict |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        key_rows = [r for t in view["tests"] for r in t["rows"] if r["key"]]
        lines += [_row(r, True, False) for r in key_rows[:max_rows]]
        if len(key_rows) > max_rows:
            lines.append(f"\n… and {len(key_rows) - max_rows} more rows (see the HTML or JSON report)")
        lines += ["", "</details>", ""]
    else:
        lines += ["No test measured anything.", ""]
    for key, what in (("new_tests", "New tests (not in the baseline)"),
                      ("gone_tests", "In the baseline but not run")):
        ids: Sequence[str] = s.get(key) or []
        if ids:
            lines += [f"<details><summary>{what} ({len(ids)})</summary>", ""]
            lines += [f"- {code(n)}" for n in ids] + ["", "</details>", ""]
    if s.get("saved"):
        lines += [f"Saved as baseline {code(s['saved'])}.", ""]
    return "\n".join(lines)


def _headline(s: Mapping[str, Any]) -> str:
    return {"fail": "❌ failed", "warn": "⚠️ passed with warnings", "pass": "✅ passed"}[s["status"]]
