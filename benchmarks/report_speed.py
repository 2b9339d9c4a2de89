"""How long the HTML report takes for a big suite: 200 tests × 10 metrics, a history of 50 runs.

Builds the documents in a temporary storage (baseline + 50 saved runs), then times what the
plugin does at the end of a session with ``--quantperf-html``: read the history, build the
view, draw the charts, render the page. Prints the figure; the target is under 5 s on a 2-core CPU.

    python benchmarks/report_speed.py [--tests 200] [--metrics 10] [--history 50] [--out report.html]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

from pytest_quantperf.verdicts.compare import compare_runs
from pytest_quantperf.report import build_view, json_report, load_history
from pytest_quantperf.report.html import render_html
from pytest_quantperf.results import SCHEMA, make_metric
from pytest_quantperf.store.storage import Storage

CONFIGS = ("default/nf4", "default/fp4", "default/int8", "default/bf16", "default/fp32")
NAMES = ("latency_ms", "ttft_ms", "tpot_ms", "tokens_per_s", "host_rss_mb", "footprint_mb", "load_s",
         "perplexity", "accuracy", "disk_mb", "kl_div", "top1_agreement")


def run_doc(n_tests: int, n_metrics: int, seed: int, drift: float = 0.0, samples: int = 20) -> dict:
    rng = random.Random(seed)
    tests = {}
    for i in range(n_tests):
        cfg = CONFIGS[i % len(CONFIGS)]
        nid = f"tests/perf/models/test_generate.py::test_generate[{cfg}-prompt{i // len(CONFIGS)}]"
        metrics = {}
        for k in range(n_metrics):
            name = NAMES[k % len(NAMES)] if k < len(NAMES) else f"user_metric_{k}"
            centre = 10.0 + (i % 7) + k * 3
            if name in ("latency_ms", "ttft_ms", "tpot_ms", "tokens_per_s", "load_s") or name.startswith("user"):
                vals = [centre * (1 + drift) * (1 + rng.gauss(0, 0.03)) for _ in range(samples)]
            else:
                vals = centre * (1 + drift)
            metrics[name] = make_metric(name, vals, model=cfg).to_dict()
        tests[nid] = {"nodeid": nid, "outcome": "passed", "budgets": {"tokens_per_s": 5.0},
                      "models": {cfg: {"label": cfg, "footprint_mb": 100.0, "quant_summary": None}},
                      "metrics": metrics, "verdicts": []}
    return {"schema": SCHEMA, "name": "main", "created": f"2026-11-{1 + seed % 28:02d}T03:00:{seed % 60:02d}Z",
            "env": {"hardware_id": "cpu-bench-2c", "cpu": "bench", "python": "3.11"},
            "git": {"commit": f"{seed:040x}", "branch": "main", "dirty": False},
            "options": {"repeat": 20, "warmup": 1}, "tests": tests}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tests", type=int, default=200)
    p.add_argument("--metrics", type=int, default=10)
    p.add_argument("--history", type=int, default=50)
    p.add_argument("--out", default=None, help="keep the HTML here (default: a temporary file)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        st = Storage(os.path.join(tmp, "store"))
        t0 = time.perf_counter()
        for h in range(a.history):
            st.save("main", run_doc(a.tests, a.metrics, seed=h, drift=0.002 * h))
        base = st.load("main", "cpu-bench-2c")[0]
        cur = run_doc(a.tests, a.metrics, seed=999, drift=0.12)
        comp = compare_runs(base, cur)
        for v in comp.verdicts:  # what the plugin stores per test
            cur["tests"][v.nodeid]["verdicts"].append({**v.to_dict(), "source": "baseline"})
        cur["baseline"] = {"name": "main", "hardware_id": "cpu-bench-2c", "matched_hardware": True,
                           "created": base.get("created")}
        setup = time.perf_counter() - t0

        c0 = time.process_time()
        t0 = time.perf_counter()
        history = load_history(st, "main", cur, saved=False)
        t_hist = time.perf_counter() - t0
        t0 = time.perf_counter()
        view = build_view(cur, baseline_doc=base, history=history)
        t_view = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = json_report(cur, view)
        html = render_html(view, data, baseline_doc=base)
        t_html = time.perf_counter() - t0
        cpu = time.process_time() - c0
        out = a.out or os.path.join(tmp, "report.html")
        with open(out, "w", encoding="utf-8") as f:
            f.write(html)
        total = t_hist + t_view + t_html
        print(f"{a.tests} tests x {a.metrics} metrics, history of {a.history} runs "
              f"(setup {setup:.1f} s, not counted)")
        print(f"  read history {t_hist:.2f} s · build view {t_view:.2f} s · charts + HTML {t_html:.2f} s")
        print(f"  HTML report: {total:.2f} s wall ({cpu:.2f} s CPU of this process; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores), {len(html) / 1e6:.1f} MB, "
              f"{html.count('<svg')} charts, {sum(1 for _ in view['tests'])} tests")
        print("  target: < 5 s -> " + ("OK" if total < 5 else "TOO SLOW"))
    return 0 if total < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
