"""The plugin's own bookkeeping per test, on real model tests (the default model, nf4, on the CPU).

Each of ``--tests`` tests loads the default model through ``quant_model`` (cached after the first),
generates through ``quantperf.generate`` under a budget, and the run is saved, then compared with
a baseline with the HTML and JSON reports on. A conftest in the suite adds up, per test, the wall
time spent inside the generation backend's ``prepare`` and ``run`` (the model's own work:
tokenizing the prompt, warm-up and timed generates);
pytest's setup + call + teardown durations minus that time is what the plugin costs the test:
fixtures, the sampling loop's own code, host and memory meters, records, the budget check, the
baseline verdicts, the result's trip to the controller. The first test (it loads the model) is left
out. Target: under 5 ms per test.

    python benchmarks/bookkeeping.py [--tests 20] [--new-tokens 4]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

CONFTEST = '''
import json, os, time
import pytest
from pytest_quantperf.backends import transformers as _tb

_SPENT = {"now": None, "s": {}}


def _timed(real):
    def wrapper(self, *a, **k):
        t = time.perf_counter()
        try:
            return real(self, *a, **k)
        finally:
            nid = _SPENT["now"]
            _SPENT["s"][nid] = _SPENT["s"].get(nid, 0.0) + time.perf_counter() - t
    return wrapper


# the model's own work: tokenizing the prompt once, and every generate
_tb.TransformersBackend.run = _timed(_tb.TransformersBackend.run)
_tb.TransformersBackend.prepare = _timed(_tb.TransformersBackend.prepare)
_DUR = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    _SPENT["now"] = item.nodeid


def pytest_runtest_logreport(report):
    _DUR[report.nodeid] = _DUR.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    with open(os.environ["QP_BOOKKEEPING_OUT"], "w") as f:
        json.dump({"durations": _DUR, "model_s": _SPENT["s"]}, f)
'''

TESTS = '''
import pytest


@pytest.mark.parametrize("i", range({n}))
@pytest.mark.quant_budget(tokens_per_s=0.01, footprint_mb=400)
def test_generate(i, quant_model, quantperf):
    lm = quant_model("default", quant="nf4")
    quantperf.generate(lm, "Who invented the light bulb?", max_new_tokens={tokens}, repeat=2, warmup=1)
'''


def run_suite(d: str, args: list[str], out: str) -> dict:
    env = {**os.environ, "QP_BOOKKEEPING_OUT": out}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=d,
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-2000:])
        raise SystemExit(f"suite failed: {args}")
    with open(out) as f:
        doc = json.load(f)
    per = []
    for i, (nid, dur) in enumerate(doc["durations"].items()):
        if i == 0:
            continue  # loads the model
        per.append((dur - doc["model_s"].get(nid, 0.0)) * 1e3)
    return {"wall_s": wall, "per_test_ms": per}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=4)
    a = ap.parse_args(argv)
    d = tempfile.mkdtemp(prefix="qp-bookkeeping-")
    with open(os.path.join(d, "conftest.py"), "w") as f:
        f.write(textwrap.dedent(CONFTEST))
    with open(os.path.join(d, "test_real.py"), "w") as f:
        f.write(textwrap.dedent(TESTS.format(n=a.tests, tokens=a.new_tokens)))
    out = os.path.join(d, "bk.json")
    save = run_suite(d, ["--quantperf-save=bk", "--quantperf-device=cpu"], out)
    comp = run_suite(d, ["--quantperf-baseline=bk", "--quantperf-device=cpu", "--quantperf-html=r.html",
                         "--quantperf-json=r.json"], out)
    print(f"== plugin bookkeeping per real-model test (default model, nf4, CPU, {a.tests} tests, "
          f"{a.new_tokens} new tokens; first test left out) ==")
    for label, r in (("save", save), ("compare + HTML + JSON", comp)):
        p = r["per_test_ms"]
        print(f"{label:<22} median {statistics.median(p):7.2f} ms  min {min(p):7.2f}  max {max(p):7.2f}  "
              f"(pytest wall {r['wall_s']:.1f} s)")
    worst = max(statistics.median(save["per_test_ms"]), statistics.median(comp["per_test_ms"]))
    print(f"target: under 5 ms per test: {'met' if worst < 5 else 'NOT met'} ({worst:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
