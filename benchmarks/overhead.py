"""The plugin's own bookkeeping per test: 100 tests with the plugin's fixtures, records, budget checks,
reports and a baseline comparison, against the same 100 tests with the plugin switched off.

Both suites do the same work per test (a small matrix product timed with perf_counter, standing in
for a cached tiny model). Target: under 5 ms of bookkeeping per test.

    python benchmarks/overhead.py [--tests 100] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

WITH = '''
import time, pytest, torch
X = torch.randn(64, 64)

@pytest.mark.parametrize("i", range({n}))
@pytest.mark.quant_budget(tolerance={{"step_ms": "50%"}})
def test_step(i, quantperf):
    s = []
    for _ in range(5):
        t = time.perf_counter(); X @ X; s.append((time.perf_counter() - t) * 1e3)
    quantperf.record("step_ms", s, unit="ms")
'''

WITHOUT = '''
import time, pytest, torch
X = torch.randn(64, 64)

@pytest.mark.parametrize("i", range({n}))
def test_step(i):
    s = []
    for _ in range(5):
        t = time.perf_counter(); X @ X; s.append((time.perf_counter() - t) * 1e3)
'''


def run(d: str, args: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=d,
                       capture_output=True, text=True)
    if r.returncode not in (0,):
        print(r.stdout[-2000:], r.stderr[-2000:])
        raise SystemExit(f"suite failed: {args}")
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tests", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    d = tempfile.mkdtemp(prefix="qp-overhead-")
    with open(os.path.join(d, "test_with.py"), "w") as f:
        f.write(textwrap.dedent(WITH.format(n=a.tests)))
    d2 = tempfile.mkdtemp(prefix="qp-overhead-off-")
    with open(os.path.join(d2, "test_without.py"), "w") as f:
        f.write(textwrap.dedent(WITHOUT.format(n=a.tests)))
    run(d, ["--quantperf-save=base"])  # a baseline to compare against
    w, wo = [], []
    for _ in range(a.rounds):
        wo.append(run(d2, ["-p", "no:quantperf"]))
        w.append(run(d, ["--quantperf-baseline=base", f"--quantperf-json={d}/run.json",
                         f"--quantperf-markdown={d}/run.md"]))
    per = (statistics.median(w) - statistics.median(wo)) / a.tests * 1e3
    print(f"{a.tests} tests: with the plugin (records, budgets, baseline comparison, JSON+Markdown) "
          f"{statistics.median(w):.2f} s, plugin off {statistics.median(wo):.2f} s (medians of {a.rounds})")
    print(f"bookkeeping per test: {per:.2f} ms (target < 5 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
