"""Reports of a run: terminal, JSON, Markdown, HTML and exports. pytest-free.

Every report renders the same view (:func:`view.build_view`) of the run document, so the
terminal, the HTML page, the JSON file, the Markdown summary and the ``quantperf`` command agree.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from .._util.io import write_atomic
from .jsonout import clean_json, dumps_strict
from .view import build_view, flat_rows

__all__ = ["write_run_reports", "write_terminal", "json_report", "write_reports", "build_view", "load_history"]


_ROW_KEYS_DROPPED = ("samples", "baseline_samples", "key")


def json_report(doc: Mapping[str, Any], view: Mapping[str, Any]) -> dict[str, Any]:
    """The run document plus ``report``: the summary, one row per test × metric, trend series."""
    rows = [{k: v for k, v in r.items() if k not in _ROW_KEYS_DROPPED} for r in flat_rows(view)]
    out = dict(doc)
    out["report"] = {
        "schema": 1,
        "summary": view["summary"],
        "rows": rows,
        "models": {t["nodeid"]: t["proof"] for t in view["tests"] if t["proof"]},
        "trends": view.get("trends") or [],
    }
    return out


def load_history(storage: Any, name: str | None, doc: Mapping[str, Any] | None = None,
                 saved: bool = False) -> list[dict[str, Any]]:
    """History of ``name`` (oldest first) with this run marked, or appended when it was not saved."""
    if not name:
        return []
    hist = storage.history(name, skip_invalid=True)
    if doc is not None:
        created = doc.get("created")
        mine = [h for h in hist if h.get("kind", "run") == "run" and h.get("created") == created]
        if saved and mine:
            mine[-1]["_this_run"] = True
        else:
            hist.append({**doc, "kind": "run", "_this_run": True})
    return hist


def write_reports(view: Mapping[str, Any], doc: Mapping[str, Any], *, html: str | None = None,
                  json_path: str | None = None, markdown: str | None = None,
                  exports: Sequence[tuple[str, str]] = (), baseline_doc: Mapping[str, Any] | None = None,
                  step_summary: bool = True) -> list[str]:
    """Write the requested reports; returns the paths written. OSErrors propagate to the caller."""
    written: list[str] = []
    data = None
    if json_path or html:
        data = json_report(doc, view)
    if json_path:
        write_atomic(json_path, dumps_strict(data, indent=1, sort_keys=True))
        written.append(json_path)
    if markdown:
        from .markdown import render as render_md

        text = render_md(view)
        write_atomic(markdown, text)
        written.append(markdown)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary and summary:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(text + "\n")
            written.append(summary)
    if html:
        from .html import render_html

        write_atomic(html, render_html(view, data, baseline_doc=baseline_doc))
        written.append(html)
    if exports:
        from .exports import write_exports

        written += write_exports(clean_json(doc), exports, write_atomic)
    return written


def _view(qs: Any, doc: Mapping[str, Any], with_history: bool, saved: str | None,
          warnings: Sequence[str]) -> dict[str, Any]:
    history = None
    warnings = list(warnings)
    if with_history:
        name = qs.settings.save or qs.settings.baseline
        try:
            history = load_history(qs.storage(), name, doc, saved=bool(saved))
        except Exception as e:  # a broken history must not lose the reports
            warnings.append(f"history of {name!r} not shown in the report: {e}")
    view = build_view(doc, baseline_doc=qs.baseline_doc, history=history, warnings=warnings, saved=saved)
    view["summary"]["storage"] = qs.settings.storage
    return view


def write_run_reports(qs: Any, outcome: Any) -> dict[str, Any] | None:
    """The report files the options ask for, from a finished run's outcome; returns their view."""
    st = qs.settings
    if not (st.html or st.json or st.markdown or st.exports):
        return None
    view = _view(qs, outcome.doc, with_history=bool(st.html or st.json), saved=outcome.saved,
                 warnings=outcome.warnings)
    try:
        write_reports(view, outcome.doc, html=st.html, json_path=st.json, markdown=st.markdown, exports=st.exports,
                      baseline_doc=qs.baseline_doc)
    except OSError as e:
        view["summary"]["warnings"] = [*view["summary"]["warnings"], f"could not write a report: {e}; check the "
                                       "path given to --quantperf-html/-json/-markdown/-export"]
    return view


def write_terminal(qs: Any, tr: Any, outcome: Any = None, view: Mapping[str, Any] | None = None) -> None:
    """The terminal report at pytest's verbosity (``-q`` / default / ``-v``)."""
    from .terminal import PytestOut, render

    if view is None:
        doc = outcome.doc if outcome is not None else qs.run_document()
        warnings = outcome.warnings if outcome is not None else tuple(qs.warnings)
        view = _view(qs, doc, with_history=False, saved=getattr(outcome, "saved", None), warnings=warnings)
    verbose = getattr(tr, "verbosity", None)
    if verbose is None:
        verbose = tr.config.option.verbose
    render(view, PytestOut(tr), int(verbose))
