"""The one plain-text table of the package: ``quantperf`` listings, the ``fit`` prediction,
``quantperf ab``'s tables and the example suites' Markdown summaries. The terminal report keeps its own coloured table
(report/terminal.py), which must fit pytest's TerminalReporter.
"""
from __future__ import annotations

from typing import Any, Sequence


def text_table(rows: Sequence[Sequence[Any]], *, header: bool = True, markdown: bool = False) -> str:
    """Rows of cells as aligned text: columns left-aligned, two spaces apart, trailing blanks cut;
    with ``header`` the first row is underlined with dashes. ``markdown`` gives a Markdown
    (GitHub) table instead, its first row the header."""
    cells = [[str(c) for c in r] for r in rows]
    if not cells:
        return ""
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|---" * len(cells[0]) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells[1:]])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0 and header:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
