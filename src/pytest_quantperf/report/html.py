"""The HTML report: one self-contained file (inline CSS and SVG charts, the run JSON embedded).

Rendered server-side with jinja2 from ``templates/report.html.j2`` with autoescaping on, so a
test id such as ``test_x[<script>]`` shows as text. Nothing is fetched from the network and no
JavaScript is needed to read it.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping

from .charts import Charts, config_data
from .terminal import _budget_cell, _stats_cell, _value_cell, _verdict_cell
from .view import NOTABLE, SEVERITY, fmt_num, fmt_pct, proof_text, shorten_nodeid, summary_line

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


@functools.lru_cache(maxsize=1)
def _env() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"),
                                                                 default_for_string=True, default=True),
                             trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.do"], undefined=jinja2.ChainableUndefined)
    env.globals.update(fmt_num=fmt_num, fmt_pct=fmt_pct, short=lambda n: shorten_nodeid(n, 70),
                       value_cell=lambda r: _value_cell(r, 1), stats_cell=_stats_cell, budget_cell=_budget_cell,
                       verdict=_verdict_cell, chg_class=_chg_class, proof_text=proof_text, notable=NOTABLE)
    return env


def _chg_class(r: Mapping[str, Any]) -> str:
    s = r.get("status")
    if s in ("regression", "breach") and r.get("gating"):
        return "chg-bad"
    if s in ("inconclusive", "regression"):
        return "chg-warn"
    if s == "improvement":
        return "chg-good"
    return ""


def safe_json(obj: Any) -> str:
    """JSON that cannot end a ``<script>`` element or open a comment inside it."""
    from .jsonout import dumps_strict

    text = dumps_strict(obj, default=str)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _sample_rows(t: Mapping[str, Any], max_rows: int) -> list[Mapping[str, Any]]:
    rows = [r for r in t["rows"] if len(r["samples"]) > 1 or len(r.get("baseline_samples") or []) > 1]
    rows.sort(key=lambda r: (SEVERITY.index(r["status"]) if r["status"] in SEVERITY else 99, not r["key"]))
    return rows[:max_rows]


def render_html(view: Mapping[str, Any], data: Any, *, baseline_doc: Mapping[str, Any] | None = None,
                title: str = "quantperf report", max_sample_charts: int = 12, max_sample_rows: int = 8, max_attention: int = 60,
                charts: bool = True) -> str:
    """The whole page as a string. ``data`` is embedded as JSON (the JSON report's content)."""
    __version__ = _version()
    s = view["summary"]
    config_svg = trend_svg = None
    sample_svgs: dict[str, Any] = {}
    sample_note = ""
    has_base_bars = False
    if charts:
        from markupsafe import Markup

        ch = Charts()
        cd = config_data(view, baseline_doc)
        if cd:
            config_svg = Markup(ch.config_bars(cd))
            has_base_bars = any(b is not None for _, _, items in cd for _, _, b in items)
        if view.get("trends"):
            trend_svg = Markup(ch.trends(view["trends"]))
        candidates = [t for t in view["tests"] if _sample_rows(t, 1)]
        candidates.sort(key=lambda t: SEVERITY.index(t["status"]) if t["status"] in SEVERITY else 99)
        for t in candidates[:max_sample_charts]:
            sample_svgs[t["nodeid"]] = Markup(ch.samples(_sample_rows(t, max_sample_rows)))
        if len(candidates) > max_sample_charts:
            sample_note = (f"Sample charts are drawn for {max_sample_charts} of {len(candidates)} tests with "
                           "repeated samples (problems first); every sample is in the embedded JSON.")
    attention = sorted((r for t in view["tests"] for r in t["rows"] if r.get("attention")),
                       key=lambda r: SEVERITY.index(r["status"]))
    tmpl = _env().get_template("report.html.j2")
    return tmpl.render(
        title=title, version=__version__, s=s, c=s["counts"], b=s.get("baseline"), env=view.get("env") or {},
        options=view.get("options") or {}, created=view.get("created"), git=view.get("git"),
        summary_line=summary_line(view), attention=attention[:max_attention], attention_total=len(attention), tests=view["tests"], config_svg=config_svg,
        has_baseline_bars=has_base_bars, trend_svg=trend_svg, trend_count=len(view.get("trends") or []),
        trend_capped=len(view.get("trends") or []) >= 9, sample_svgs=sample_svgs, sample_note=sample_note,
        data_json=_markup(safe_json(data)))


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pytest-quantperf")
    except Exception:
        return "unknown"


def _markup(text: str) -> Any:
    from markupsafe import Markup

    return Markup(text)
