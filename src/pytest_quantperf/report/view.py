"""One view of a run for every report: rows (test × metric) with budget, baseline, change, verdict.

The terminal, HTML, JSON and Markdown reports and the ``quantperf`` command all render this
same structure, built from a run document (and, when known, the baseline document and the
history), so they cannot disagree. Everything here is plain, JSON-able data; pytest-free.
"""
from __future__ import annotations

import functools
import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

from ..verdicts.budgets import RELATIVE, absolute_limit, relative_limit
from ..verdicts.tolerance import base_metric_name
from ..results import METRICS

#: worst first: the status a row shows is the worst of its verdicts
SEVERITY = ("breach", "missing", "regression", "inconclusive", "n/a", "improvement",
            "new", "gone", "pass", "not_gated", "")
#: rows that ``-q`` lists (the "needs attention" sections list only rows whose ``attention`` is set)
NOTABLE = ("breach", "missing", "regression", "inconclusive", "improvement")
FAILING = ("breach", "missing", "regression")

#: metrics shown at the default verbosity (every metric at -v); user metrics are always key
KEY_METRICS = ("latency_ms", "ttft_ms", "tpot_ms", "tokens_per_s", "vram_mb", "host_rss_mb", "footprint_mb",
               "energy_j_per_token", "gpu_ms_per_token", "perplexity", "accuracy", "kl_div", "top1_agreement")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_num(v: Any) -> str:
    """Four significant digits, no exponent for everyday magnitudes; ``n/a`` for missing."""
    if not _finite(v):
        return "n/a" if v is None else str(v)
    av = abs(v)
    if av != 0 and (av >= 1e7 or av < 1e-3):
        return f"{v:.3g}"
    if av >= 1000:
        return f"{v:.0f}"
    if av >= 100:
        return f"{v:.1f}"
    return f"{v:.4g}"


def fmt_pct(v: Any) -> str:
    return f"{v * 100:+.1f}%" if _finite(v) else ""


def is_key_metric(metric: str) -> bool:
    b = base_metric_name(metric)
    if metric.startswith("ref."):
        return False
    return b in KEY_METRICS or b not in METRICS


@functools.lru_cache(maxsize=256)
def _ci_ranks(n: int) -> tuple[int, int]:
    from ..stats import median_ci

    lo, hi = median_ci([float(i) for i in range(n)])
    return int(lo), int(hi)


def median_ci(samples: Sequence[float]) -> tuple[float, float] | None:
    """95% distribution-free CI of the median (the same order statistics as ``stats.median_ci``)."""
    xs = sorted(float(x) for x in samples if _finite(x))
    if len(xs) < 2:
        return None
    lo, hi = _ci_ranks(len(xs))
    return xs[lo], xs[hi]


def shorten_nodeid(nodeid: str, width: int = 80) -> str:
    """Keep the file, the test function and its parameters; elide the middle of the path first.

    ``tests/a/b/c/test_x.py::TestK::test_f[p]`` → ``tests/…/test_x.py::TestK::test_f[p]``; a
    parameter id still too long loses its middle: ``test_f[abc…xyz]``.
    """
    if len(nodeid) <= width:
        return nodeid
    path, sep, rest = nodeid.partition("::")
    parts = path.split("/")
    if len(parts) > 2:
        path = parts[0] + "/…/" + parts[-1]
    s = path + sep + rest
    if len(s) <= width:
        return s
    s = parts[-1] + sep + rest
    if len(s) <= width:
        return s
    # the function name stays whole; the parameter id loses its middle
    head, br, params = rest.partition("[")
    if br and params.endswith("]"):
        params = params[:-1]
        room = max(8, width - len(parts[-1]) - len(sep) - len(head) - 3)
        if len(params) > room:
            keep = room - 1
            params = params[: (keep + 1) // 2] + "…" + params[len(params) - keep // 2:]
        return parts[-1] + sep + head + "[" + params + "]"
    return s[: width - 1] + "…"


def _bound(budget_key: str) -> str:
    absolute, relative = absolute_limit(budget_key), relative_limit(budget_key)
    if absolute is not None:
        return absolute[1]
    if relative is not None:
        return relative[1]
    return "max"


def _budget_metric(budget_key: str) -> str | None:
    """The metric row a budget attaches to (``vram_mb`` → ``vram_mb``); None for its own row."""
    absolute = absolute_limit(budget_key)
    if absolute is not None and absolute[0] == budget_key:
        return budget_key
    return None


def worst(statuses: Iterable[str]) -> str:
    best = len(SEVERITY) - 1
    for s in statuses:
        i = SEVERITY.index(s) if s in SEVERITY else len(SEVERITY) - 1
        best = min(best, i)
    return SEVERITY[best]


def quant_proof(models: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per model: layers, quantized share and footprint against the bit-width prediction."""
    out = []
    for label, m in (models or {}).items():
        if not isinstance(m, Mapping):
            continue
        q = m.get("quant_summary") or {}
        fp = q.get("footprint_bytes")
        pred = q.get("predicted_bytes")
        dev = (fp - pred) / pred if _finite(fp) and _finite(pred) and pred else None
        out.append({
            "label": label, "reference": bool(m.get("reference")), "device": m.get("device"),
            "backend": m.get("backend"), "load_s": m.get("load_s"), "footprint_mb": m.get("footprint_mb"),
            "disk_mb": m.get("disk_mb"), "quant": q.get("quant") or (m.get("spec") or {}).get("quant"),
            "linear4bit": q.get("linear4bit"), "linear8bit": q.get("linear8bit"),
            "plain_linear": q.get("plain_linear"), "quant_types": q.get("quant_types") or [],
            "compute_dtypes": q.get("compute_dtypes") or [], "double_quant": q.get("double_quant") or [],
            "quantized_share": q.get("quantized_share"),
            "method": q.get("method"), "quantized_layers": q.get("quantized_layers"),
            "layer_kinds": q.get("layer_kinds") or [], "note": q.get("note"),
            # why the work of this model's decodes is not counted, e.g. a backend without hooks: n/a
            "work": m.get("work") if isinstance(m.get("work"), str) else None,
            "predicted_mb": pred / 2**20 if _finite(pred) else None,
            "footprint_vs_predicted": dev,
        })
    return out


def proof_text(p: Mapping[str, Any]) -> str:
    """``default/nf4: 210 4-bit + 0 8-bit linear (1 plain), nf4, 93.1% of params quantized, ...``."""
    bits = [f"{p['label']}" + (" (reference)" if p.get("reference") else "") + ":"]
    if p.get("method") not in (None, "none", "bitsandbytes"):
        bits.append(f"{p.get('quantized_layers') or 0} {p['method']} quantized layers "
                    f"({p.get('plain_linear') or 0} plain)")
        if p.get("layer_kinds"):
            bits.append("holding " + "/".join(map(str, p["layer_kinds"])))
    elif p.get("linear4bit") is not None:
        bits.append(f"{p['linear4bit']} 4-bit + {p.get('linear8bit') or 0} 8-bit linear layers "
                    f"({p.get('plain_linear') or 0} plain)")
        if p.get("quant_types"):
            bits.append("type " + "/".join(map(str, p["quant_types"])))
        if p.get("compute_dtypes"):
            bits.append("compute " + "/".join(map(str, p["compute_dtypes"])))
        if p.get("double_quant"):
            bits.append("double-quant " + "/".join("yes" if x else "no" for x in p["double_quant"]))
    if _finite(p.get("quantized_share")):
        bits.append(f"{p['quantized_share'] * 100:.1f}% of params quantized")
    if _finite(p.get("footprint_mb")):
        s = f"footprint {fmt_num(p['footprint_mb'])} MiB"
        if _finite(p.get("predicted_mb")):
            s += f" vs predicted {fmt_num(p['predicted_mb'])} MiB ({fmt_pct(p.get('footprint_vs_predicted'))})"
        bits.append(s)
    if p.get("note"):
        bits.append(str(p["note"]))
    if p.get("work"):
        bits.append(f"work per token: {p['work']}")
    return " ".join(bits[:2]) + (", " + ", ".join(bits[2:]) if len(bits) > 2 else "")


def _rows_for_test(nodeid: str, t: Mapping[str, Any], base_test: Mapping[str, Any] | None,
                   baseline_known: bool) -> list[dict[str, Any]]:
    metrics: Mapping[str, Any] = t.get("metrics") or {}
    verdicts: list[Mapping[str, Any]] = list(t.get("verdicts") or [])
    budgets_v: dict[str, Mapping[str, Any]] = {}
    base_v: dict[str, Mapping[str, Any]] = {}
    for v in verdicts:
        if v.get("source") == "budget":
            budgets_v[str(v.get("metric"))] = v
        else:
            base_v[str(v.get("metric"))] = v
    base_metrics = (base_test or {}).get("metrics") or {}
    rows: list[dict[str, Any]] = []
    order = list(metrics)
    # budgets on a metric that was never measured, or on a ratio (``*_vs_ref``): rows of their own
    extra_budget_rows = [k for k in budgets_v if _budget_metric(k) not in metrics]
    gone = [k for k, v in base_v.items() if v.get("status") == "gone" and k not in metrics]
    names = order + extra_budget_rows + [g for g in gone if g not in extra_budget_rows]
    for name in names:
        m = metrics.get(name) or {}
        is_metric = name in metrics
        bkey = name if name in budgets_v and (not is_metric or _budget_metric(name) == name) else None
        bv = budgets_v.get(bkey) if bkey else None
        cv_ = base_v.get(name) if is_metric or name in gone else None
        samples = [x for x in (m.get("samples") or []) if _finite(x)]
        bm = base_metrics.get(name) or {}
        value = m.get("value") if is_metric else (bv.get("current") if bv else None)
        unit = m.get("unit", "") if is_metric else ("x" if name in RELATIVE and RELATIVE[name][2] == "ratio"
                                                    else (bm.get("unit", "") if bm else ""))
        if name in gone and not is_metric:
            value = None
        status_parts = []
        if bv:
            status_parts.append(str(bv.get("status")))
        bstatus = None
        if cv_:
            bstatus = str(cv_.get("status"))
        if bstatus:
            status_parts.append(bstatus)
        status = worst(status_parts) if status_parts else ""
        baseline_value = (cv_ or {}).get("baseline")
        if baseline_value is None and bm:
            baseline_value = bm.get("value")
        messages = [str(x.get("message")) for x in (bv, cv_) if x and x.get("message")]
        # the message of the verdict that decided the row's status, for one-line listings
        detail = next((str(x.get("message")) for x in (bv, cv_) if x and x.get("status") == status
                       and x.get("message")), " | ".join(messages))
        row = {
            "nodeid": nodeid, "metric": name, "model": m.get("model"), "value": value, "unit": unit or "",
            "better": m.get("better") or (cv_ or {}).get("better"), "kind": m.get("kind") or (cv_ or {}).get("kind"),
            "n": len(samples) if samples else (1 if is_metric else 0), "cv": m.get("cv"),
            "ci": list(median_ci(samples)) if len(samples) >= 2 else None,
            "samples": samples,
            "flags": list(m.get("flags") or []),
            "budget": ({"key": bkey, "limit": bv.get("limit"), "bound": _bound(bkey), "status": bv.get("status"),
                        "message": bv.get("message")} if bv else None),
            "baseline": baseline_value if _finite(baseline_value) else None,
            "baseline_samples": [x for x in (bm.get("samples") or []) if _finite(x)],
            "change": (cv_ or {}).get("change"), "delta": (cv_ or {}).get("delta"),
            "tolerance": (cv_ or {}).get("tolerance"), "p_value": (cv_ or {}).get("p_value"),
            "change_ci": (cv_ or {}).get("ci") if (cv_ or {}).get("ci_of") == "change" else None,
            "samples_needed": (cv_ or {}).get("samples_needed"),
            "cross_hardware": bool((cv_ or {}).get("cross_hardware")),
            "accepted": (cv_ or {}).get("accepted"),
            "baseline_status": bstatus, "budget_status": bv.get("status") if bv else None,
            "status": status, "gating": any(bool(x.get("gating")) for x in (bv, cv_) if x),
            "message": " | ".join(messages), "messages": messages, "detail": detail,
            "reasons": [r.get("text") for x in (bv, cv_) if x for r in (x.get("reasons") or [])],
            "warns": any(_warns(x) for x in (bv, cv_) if x),
            "notes": [{"status": str(x.get("status")), "message": str(x.get("message"))}
                      for x in (bv, cv_) if x and x.get("message") and x.get("status") in NOTABLE], "key": is_key_metric(name) or bool(bv) or status in NOTABLE,
        }
        # what a reader must look at: what fails, what warns, and a regression or breach a reason holds back
        row["attention"] = row["gating"] or row["warns"] or (status in FAILING and bool(row["reasons"]))
        row["work_diff"] = _work_diff(name, m, bm)
        if row["change"] is None and _finite(value) and _finite(baseline_value) and baseline_value:
            row["change"] = (value - baseline_value) / abs(baseline_value)
        rows.append(row)
    return rows


#: names listed per work figure in a report's by-name diff (the verdict's message names the top 5)
WORK_DIFF_TOP = 12


def _work_diff(name: str, m: Mapping[str, Any], bm: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The largest per-name changes per token of a work figure against its baseline (empty: none,
    or not a work figure, or no counts by name on one side)."""
    from ..measure.work import fmt_count, metric_changes

    changes = metric_changes(base_metric_name(name), bm.get("extra"), m.get("extra"), top=WORK_DIFF_TOP)
    return [{"name": c.name, "base": c.base, "cur": c.cur, "delta": c.delta, "delta_text": fmt_count(c.delta)}
            for c in changes or ()]


def _warns(v: Mapping[str, Any]) -> bool:
    """A verdict printed as a warning: shown worse without a size (baseline), or beyond its limit
    without certainty (budget), and no reason explains it."""
    if v.get("status") != "inconclusive" or v.get("reasons"):
        return False
    if v.get("source") == "budget":
        cur, lim = v.get("current"), v.get("limit")
        return "straddles the limit" in str(v.get("message")) and _finite(cur) and _finite(lim) and cur != lim
    return bool(v.get("shown_worse"))


def _count(rows: list[dict[str, Any]]) -> dict[str, int]:
    c = {k: 0 for k in ("breach", "missing", "regression", "regression_not_gated", "inconclusive", "warns",
                        "improvement", "new", "gone", "pass", "not_gated", "gating", "n/a")}
    for r in rows:
        bs = r.get("budget_status")
        if bs in ("breach", "missing", "inconclusive", "pass", "n/a"):
            c[bs] += 1
        s = r.get("baseline_status")
        if s == "regression" and not r["gating"]:
            c["regression_not_gated"] += 1
        elif s in c:
            c[s] += 1
        if r["gating"]:
            c["gating"] += 1
        if r.get("warns"):
            c["warns"] += 1
    return c


def build_view(doc: Mapping[str, Any], *, baseline_doc: Mapping[str, Any] | None = None,
               history: Sequence[Mapping[str, Any]] | None = None, warnings: Sequence[str] = (),
               saved: str | None = None, comparison: Any = None, max_trends: int = 9) -> dict[str, Any]:
    """Everything a report shows, from a run document.

    ``baseline_doc`` adds new/gone tests and baseline samples; ``history`` (storage entries, oldest
    first) adds trend series; ``comparison`` (a :class:`compare.Comparison`) supplies verdicts for a
    run compared after the fact (the ``quantperf compare`` command).
    """
    tests_doc: Mapping[str, Any] = doc.get("tests") or {}
    if comparison is not None:
        tests_doc = with_comparison(tests_doc, comparison)
    base_info = dict(doc.get("baseline") or {}) or None
    base_tests = (baseline_doc or {}).get("tests") or {}
    baseline_known = baseline_doc is not None
    if baseline_doc is not None:
        bh = (baseline_doc.get("env") or {}).get("hardware_id")
        ch = (doc.get("env") or {}).get("hardware_id")
        base_info = {**(base_info or {}), "name": (base_info or {}).get("name") or baseline_doc.get("name"),
                     "hardware_id": bh, "created": baseline_doc.get("created"),
                     "git": baseline_doc.get("git"), "found": True,
                     "matched_hardware": (base_info or {}).get("matched_hardware",
                                                               bool(bh) and bh == ch)}
        if base_info.get("matched_hardware") is None:
            base_info["matched_hardware"] = bool(bh) and bh == ch
    elif base_info is not None:
        base_info["found"] = bool(base_info.get("hardware_id") or base_info.get("created"))
    tests = []
    all_rows: list[dict[str, Any]] = []
    for nodeid, t in tests_doc.items():
        rows = _rows_for_test(nodeid, t, base_tests.get(nodeid) if baseline_known else None, baseline_known)
        all_rows.extend(rows)
        status = worst(r["status"] for r in rows) if rows else ""
        outcome = str(t.get("outcome") or "")
        tests.append({"nodeid": nodeid, "outcome": outcome, "status": status, "rows": rows,
                      "proof": quant_proof(t.get("models") or {}),
                      "new": baseline_known and nodeid not in base_tests})
    new_tests = [t["nodeid"] for t in tests if t["new"]]
    gone_tests = sorted(set(base_tests) - set(tests_doc)) if baseline_known else []
    if comparison is not None:
        new_tests = list(comparison.new_tests)
        gone_tests = list(comparison.gone_tests)
    counts = _count(all_rows)
    failed = [t["nodeid"] for t in tests if t["outcome"] == "failed"]
    if counts["gating"] or failed:
        overall = "fail"
    elif any(counts[k] for k in ("warns", "regression_not_gated")) or warnings:
        overall = "warn"
    else:
        overall = "pass"
    summary = {
        "status": overall, "tests": len(tests), "metrics": sum(1 for r in all_rows if r["value"] is not None),
        "counts": counts, "failed_tests": failed, "new_tests": new_tests, "gone_tests": gone_tests,
        "baseline": base_info, "warnings": list(warnings), "saved": saved,
    }
    view = {"summary": summary, "tests": tests, "env": dict(doc.get("env") or {}), "git": doc.get("git"),
            "created": doc.get("created"), "name": doc.get("name"), "options": doc.get("options") or {}}
    view["trends"] = trends(history or [], all_rows, max_series=max_trends) if history else []
    return view


def with_comparison(tests_doc: Mapping[str, Any], comparison: Any) -> dict[str, Any]:
    """A copy of the tests whose baseline verdicts are those of ``comparison`` (budget ones kept)."""
    out: dict[str, Any] = {}
    by_test: dict[str, list[dict[str, Any]]] = {}
    for v in comparison.verdicts:
        d = v.to_dict()
        d["source"] = "baseline"
        by_test.setdefault(v.nodeid, []).append(d)
    for nodeid, t in tests_doc.items():
        t2 = dict(t)
        t2["verdicts"] = [v for v in (t.get("verdicts") or []) if v.get("source") == "budget"] + by_test.get(nodeid, [])
        out[nodeid] = t2
    return out


def trends(history: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], *,
           max_series: int = 12) -> list[dict[str, Any]]:
    """Trend series over saved runs for a capped number of (test, metric) pairs, notable ones first.

    Each: ``{"nodeid", "metric", "unit", "points": [{"created", "value", "commit"}], "accepted":
    [{"created", "value", "who", "reason"}]}``.
    """
    runs = [h for h in history if h.get("kind", "run") == "run"]
    if not runs:
        return []
    order = sorted((r for r in rows if r.get("value") is not None and r.get("kind") != "info"),
                   key=lambda r: (SEVERITY.index(r["status"]) if r["status"] in SEVERITY else 99,
                                  not r.get("key"), r["nodeid"], r["metric"]))
    series = []
    for r in order:
        if len(series) >= max_series:
            break
        nid, name = r["nodeid"], r["metric"]
        pts = []
        for h in runs:
            m = ((h.get("tests") or {}).get(nid) or {}).get("metrics", {}).get(name)
            if m and _finite(m.get("value")):
                pts.append({"created": h.get("created"), "value": m["value"],
                            "commit": ((h.get("git") or {}).get("commit") or "")[:10] or None,
                            "this_run": bool(h.get("_this_run"))})
        if len(pts) < 2:
            continue
        acc = [{"created": h.get("created"), "value": h.get("value"), "who": h.get("who"),
                "reason": h.get("reason")}
               for h in history if h.get("kind") == "accept" and h.get("nodeid") == nid and h.get("metric") == name]
        series.append({"nodeid": nid, "metric": name, "unit": r.get("unit", ""), "status": r["status"],
                       "points": pts, "accepted": acc})
    return series


def flat_rows(view: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for t in view["tests"] for r in t["rows"]]


def summary_line(view: Mapping[str, Any]) -> str:
    """``2 budgets breached, 1 regression, ... · baseline 'main' (cpu-x, same hardware)``."""
    s = view["summary"]
    c = s["counts"]
    parts = [f"{s['tests']} test{'s' if s['tests'] != 1 else ''}, {s['metrics']} metrics"]
    nb = c["breach"] + c["missing"]
    parts.append(f"{nb} budget{'s' if nb != 1 else ''} breached")
    reg = f"{c['regression']} regression{'s' if c['regression'] != 1 else ''}"
    if c["regression_not_gated"]:
        reg += f" (+{c['regression_not_gated']} not gated)"
    parts.append(reg)
    parts.append(f"{c['inconclusive']} inconclusive" + (f" ({c['warns']} shown worse)" if c.get("warns") else ""))
    parts.append(f"{c['improvement']} improvement{'s' if c['improvement'] != 1 else ''}")
    if c.get("n/a"):
        parts.append(f"{c['n/a']} budget{'s' if c['n/a'] != 1 else ''} n/a on this device")
    text = ", ".join(parts)
    b = s.get("baseline")
    if b and b.get("name"):
        if b.get("found") is False:
            text += f" · baseline {b['name']!r} not found"
        else:
            hw = b.get("hardware_id") or "unknown hardware"
            match = "same hardware" if b.get("matched_hardware") else "OTHER hardware: speed not gated"
            text += f" · baseline {b['name']!r} ({hw}, {match})"
    else:
        text += " · no baseline"
    if s["new_tests"]:
        text += f" · {len(s['new_tests'])} new test{'s' if len(s['new_tests']) != 1 else ''}"
    if s["gone_tests"]:
        text += f" · {len(s['gone_tests'])} not run"
    return text


def median(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if _finite(x)]
    return statistics.median(xs) if xs else None
