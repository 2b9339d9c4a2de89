"""Charts for the HTML report: matplotlib (Agg/SVG, no pyplot state) rendered to inline SVG text.

One :class:`Figure` is reused for every chart (cleared between charts) and the number of charts
is capped, so a report of hundreds of tests renders in seconds. Text stays text in the SVG
(``svg.fonttype: none``): smaller files, and matplotlib escapes it, so a test id is never markup.
"""
from __future__ import annotations

import io
import math
import re
from typing import Any, Mapping, Sequence

from .view import fmt_num, median

STATUS_COLOUR = {"breach": "#c62828", "missing": "#c62828", "regression": "#c62828", "inconclusive": "#ef8f00",
                 "too_noisy": "#ef8f00", "accepted": "#00838f", "improvement": "#2e7d32"}
CURRENT = "#3566b0"
BASELINE = "#a8a8a8"

#: the side-by-side comparison users of quantized models draw by hand
CONFIG_METRICS = (("latency_ms", "latency (ms, lower is better)"),
                  ("tokens_per_s", "decode tokens/s (higher is better)"),
                  ("vram_mb", "peak VRAM (MiB)"),
                  ("host_rss_mb", "peak host RSS (MiB)"),
                  ("footprint_mb", "weights footprint (MiB)"))

_RC = {"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 8.5,
       "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8, "axes.spines.top": False,
       "axes.spines.right": False, "svg.image_inline": True}


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n // 2 - 1] + "…" + text[-(n - n // 2):]


class Charts:
    """Renders each chart into one reused figure; ``svg()`` returns the markup of the last one."""

    def __init__(self) -> None:
        import matplotlib
        from matplotlib.backends.backend_svg import FigureCanvasSVG
        from matplotlib.figure import Figure

        self._mpl = matplotlib
        self.fig = Figure()
        FigureCanvasSVG(self.fig)
        self.count = 0

    def _new(self, w: float, h: float) -> Any:
        self.fig.clear()
        self.fig.set_size_inches(w, h)
        return self.fig

    def _svg(self) -> str:
        buf = io.StringIO()
        with self._mpl.rc_context(_RC):
            self.fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
        self.count += 1
        text = buf.getvalue()
        i = text.find("<svg")
        text = text[i:] if i >= 0 else text
        # fixed sizes in pt become responsive
        return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 width="100%" height="auto"', text,
                      count=1)

    # ----------------------------------------------------------------- configs side by side
    def config_bars(self, data: Sequence[tuple[str, str, Sequence[tuple[str, float | None, float | None]]]]) -> str:
        """Horizontal bars per model/quant config, one panel per metric, baseline beside the run.

        ``data``: ``[(metric, title, [(config label, value, baseline value or None)])]``.
        """
        with self._mpl.rc_context(_RC):
            n = len(data)
            nconf = max(len(d[2]) for d in data)
            fig = self._new(min(12.0, 3.1 * n + 1.2), 1.1 + 0.36 * nconf)
            axes = fig.subplots(1, n, squeeze=False)[0]
            for k, (ax, (metric, title, items)) in enumerate(zip(axes, data)):
                labels = [_short(lbl, 26) for lbl, _, _ in items]
                ys = list(range(len(items)))
                has_base = any(b is not None for _, _, b in items)
                h = 0.38 if has_base else 0.6
                cur = [v if v is not None else 0 for _, v, _ in items]
                ax.barh([y - (h / 2 if has_base else 0) for y in ys], cur, height=h, color=CURRENT, label="this run")
                if has_base:
                    ax.barh([y + h / 2 for y in ys], [b if b is not None else 0 for _, _, b in items], height=h,
                            color=BASELINE, label="baseline")
                for y, v in zip(ys, cur):
                    if v:
                        ax.text(v, y - (h / 2 if has_base else 0), " " + fmt_num(v), va="center", fontsize=7)
                ax.set_yticks(ys)
                ax.set_yticklabels(labels if k == 0 else [""] * len(labels))
                ax.invert_yaxis()
                ax.set_title(title)
                ax.margins(x=0.22)
                ax.tick_params(axis="y", length=0)
                if k == 0 and has_base:
                    fig.legend(loc="upper right", ncols=2, frameon=False)
            longest = max(len(_short(lbl, 26)) for lbl, _, _ in data[0][2])
            fig.subplots_adjust(left=min(0.4, (0.065 * longest + 0.25) / fig.get_figwidth()), right=0.98,
                                top=1 - 0.6 / fig.get_figheight(), bottom=0.35 / fig.get_figheight(), wspace=0.12)
            return self._svg()

    # ----------------------------------------------------------------- samples vs baseline
    def samples(self, rows: Sequence[Mapping[str, Any]]) -> str:
        """Each metric's samples against the baseline's, as change from the baseline median (%).

        Boxes (quartiles), whiskers (range), a median tick and every sample as a dot; the grey row
        above each metric is the baseline, the coloured one this run, the green band the tolerance.
        Drawn with a handful of vectorised artists per chart: boxplot() per metric is far slower.
        """
        with self._mpl.rc_context(_RC):
            fig = self._new(8.5, 0.8 + 0.55 * len(rows))
            ax = fig.add_subplot(1, 1, 1)
            labels = []
            boxes: list[tuple[float, float, float, float, float, float, str]] = []  # y, lo, q1, med, q3, hi, colour
            px: list[float] = []
            py: list[float] = []
            pc: list[str] = []
            bands: list[tuple[float, float]] = []
            for y, r in enumerate(rows):
                base = r.get("baseline_samples") or []
                ref = median(base) if base else (median(r["samples"]) or r.get("value"))
                if not ref:
                    labels.append(r["metric"])
                    continue
                colour = STATUS_COLOUR.get(r["status"], CURRENT)
                tol = str(r.get("tolerance") or "")
                if tol.endswith("%"):
                    try:
                        bands.append((y, float(tol[:-1])))
                    except ValueError:
                        pass
                sides = [(r["samples"], y - 0.2 if base else y, colour)]
                if base:
                    sides.append((base, y + 0.2, BASELINE))
                for xs_raw, yy, col in sides:
                    xs = sorted((x / ref - 1) * 100 for x in xs_raw if math.isfinite(x))
                    if not xs:
                        continue
                    q1, med, q3 = _quantile(xs, 0.25), _quantile(xs, 0.5), _quantile(xs, 0.75)
                    if len(xs) < 4:  # too few for quartiles: a median tick and the range only
                        q1 = q3 = med
                    boxes.append((yy, xs[0], q1, med, q3, xs[-1], col))
                    n = len(xs)
                    px.extend(xs)
                    py.extend(yy + ((i * 0.618) % 1 - 0.5) * 0.22 for i in range(n))
                    pc.extend([col] * n)
                unit = f" {r['unit']}" if r.get("unit") else ""
                labels.append(f"{_short(r['metric'], 28)}\n{fmt_num(r.get('value'))}{unit}"
                              + (f" vs {fmt_num(median(base))}" if base else ""))
            if bands:
                ax.barh([y for y, _ in bands], [2 * t for _, t in bands], left=[-t for _, t in bands], height=0.84,
                        color="#e6f2e6", zorder=0, linewidth=0)
            if boxes:
                ax.hlines([b[0] for b in boxes], [b[1] for b in boxes], [b[5] for b in boxes],
                          colors=[b[6] for b in boxes], linewidth=0.9, zorder=1)
                ax.barh([b[0] for b in boxes], [b[4] - b[2] for b in boxes], left=[b[2] for b in boxes],
                        height=0.3, color="white", edgecolor=[b[6] for b in boxes], linewidth=1.0, zorder=2)
                ax.vlines([b[3] for b in boxes], [b[0] - 0.15 for b in boxes], [b[0] + 0.15 for b in boxes],
                          colors=[b[6] for b in boxes], linewidth=2.0, zorder=3)
            if px:
                ax.scatter(px, py, s=14, c=pc, alpha=0.8, linewidths=0, zorder=4)
            ax.axvline(0, color="#555", linewidth=0.8)
            ax.set_yticks(range(len(rows)))
            ax.set_yticklabels(labels)
            ax.set_ylim(len(rows) - 0.5, -0.5)
            ax.set_xlabel("% from the baseline median (grey: baseline, colour: this run; green band: tolerance)")
            fig.subplots_adjust(left=0.25, right=0.98, top=1 - 0.15 / fig.get_figheight(),
                                bottom=0.6 / fig.get_figheight())
            return self._svg()

    # ----------------------------------------------------------------- trends
    def trends(self, series: Sequence[Mapping[str, Any]], cols: int = 3) -> str:
        """Small multiples: each (test, metric) value over the saved runs; acceptances marked."""
        with self._mpl.rc_context(_RC):
            n = len(series)
            cols = min(cols, n)
            rows = math.ceil(n / cols)
            fig = self._new(11.5 if cols > 1 else 6.0, 2.3 * rows + 0.3)
            axes = fig.subplots(rows, cols, squeeze=False)
            for i, s in enumerate(series):
                ax = axes[i // cols][i % cols]
                pts = s["points"]
                xs = list(range(len(pts)))
                ys = [p["value"] for p in pts]
                colour = STATUS_COLOUR.get(s.get("status", ""), CURRENT)
                ax.plot(xs, ys, marker="o", markersize=3, color=colour, linewidth=1.2)
                this = [j for j, p in enumerate(pts) if p.get("this_run")]
                if this:
                    ax.scatter([this[-1]], [ys[this[-1]]], s=40, facecolors="none", edgecolors="black", zorder=4)
                for a in s.get("accepted") or []:
                    when = a.get("created") or ""
                    idx = next((j for j, p in enumerate(pts) if (p.get("created") or "") > when), len(pts))
                    if isinstance(a.get("value"), (int, float)):
                        ax.scatter([idx - 0.5], [a["value"]], marker="*", s=70, color=STATUS_COLOUR["accepted"],
                                   zorder=5)
                        ax.annotate("accepted", (idx - 0.5, a["value"]), fontsize=7,
                                    color=STATUS_COLOUR["accepted"], xytext=(3, 4), textcoords="offset points")
                step = max(1, math.ceil(len(pts) / 4))
                ticks = xs[::step]
                ax.set_xticks(ticks)
                days = {(p.get("created") or "")[:10] for p in pts}
                cut = slice(11, 16) if len(days) == 1 else slice(5, 10)  # HH:MM within one day, else MM-DD
                ax.set_xticklabels([(pts[j].get("created") or "")[cut] for j in ticks])
                unit = f" ({s['unit']})" if s.get("unit") else ""
                ax.set_title(_short(s["nodeid"].split("::")[-1], 34) + "\n" + _short(s["metric"], 30) + unit)
                ax.grid(axis="y", color="#eee")
            for j in range(n, rows * cols):
                axes[j // cols][j % cols].set_visible(False)
            fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.55 / fig.get_figheight(),
                                bottom=0.35 / fig.get_figheight(), hspace=0.75, wspace=0.28)
            return self._svg()


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted ``xs``."""
    pos = (len(xs) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def config_data(view: Mapping[str, Any], baseline_doc: Mapping[str, Any] | None,
                max_configs: int = 16) -> list[tuple[str, str, list[tuple[str, float | None, float | None]]]]:
    """Per quant config (``Metric.model`` label), the median over tests of each config metric."""
    cur: dict[tuple[str, str], list[float]] = {}
    base: dict[tuple[str, str], list[float]] = {}
    wanted = {m for m, _ in CONFIG_METRICS}

    def collect(tests: Mapping[str, Any], into: dict[tuple[str, str], list[float]]) -> None:
        for t in tests.values():
            for name, m in (t.get("metrics") or {}).items():
                b = name.split("[", 1)[0]
                b = b[4:] if b.startswith("ref.") else b
                label = m.get("model")
                v = m.get("value")
                if b in wanted and label and isinstance(v, (int, float)) and math.isfinite(v):
                    into.setdefault((b, str(label)), []).append(float(v))

    collect({t["nodeid"]: {"metrics": {r["metric"]: {"model": r.get("model"), "value": r.get("value")}
                                       for r in t["rows"]}} for t in view["tests"]}, cur)
    if baseline_doc:
        collect(baseline_doc.get("tests") or {}, base)
    configs: dict[str, int] = {}
    for (_, label), vs in cur.items():
        configs[label] = configs.get(label, 0) + len(vs)
    labels = sorted(configs, key=lambda lb: (-configs[lb], lb))[:max_configs]
    labels.sort()
    out = []
    have_vram = any(k[0] == "vram_mb" for k in cur)
    for metric, title in CONFIG_METRICS:
        if metric == "host_rss_mb" and have_vram:
            continue
        items = [(lb, median(cur.get((metric, lb), [])), median(base.get((metric, lb), []))) for lb in labels]
        if any(v is not None for _, v, _ in items):
            out.append((metric, title, items))
    return out
