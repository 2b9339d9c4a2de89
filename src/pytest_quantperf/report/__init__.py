"""Reports of a run: terminal, JSON, Markdown, HTML and exports. pytest-free."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_atomic(path: str, text: str) -> None:
    """Write a whole file or nothing: a temporary file in the same folder, then a rename."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".quantperf-", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def finish_run(qs: Any, session: Any, exitstatus: int) -> None:
    """At the end of the session: save the baseline (passing runs only), then write reports."""
    doc = qs.run_document()
    qs.final_doc = doc
    qs.saved = None
    if qs.settings.save:
        failed = int(getattr(session, "testsfailed", 0) or 0)
        if failed and not qs.settings.warn_only:
            qs.warnings.append(f"baseline {qs.settings.save!r} NOT saved: {failed} test(s) failed; a failing run "
                               "never replaces a baseline (fix it, or rerun with --quantperf-warn-only)")
        elif not doc["tests"]:
            qs.warnings.append(f"baseline {qs.settings.save!r} NOT saved: no test measured anything")
        else:
            qs.saved = qs.save(doc)
    if qs.settings.json:
        write_atomic(qs.settings.json, json.dumps(doc, indent=1, sort_keys=True))


def write_terminal(qs: Any, tr: Any) -> None:
    doc = getattr(qs, "final_doc", None) or qs.run_document()
    tests = doc["tests"]
    if not tests and not qs.warnings:
        return
    tr.write_sep("=", "quantperf")
    for nid, t in tests.items():
        tr.write_line(nid)
        for name, m in t["metrics"].items():
            tr.write_line(f"  {name:<24} {m['value']:>12.4g} {m['unit']}")
    for w in qs.warnings:
        tr.write_line(f"quantperf: {w}")
    if getattr(qs, "saved", None):
        tr.write_line(f"quantperf: saved baseline {qs.saved!r} to {qs.settings.storage}")
