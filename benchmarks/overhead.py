"""The plugin's own bookkeeping per test: 100 tests with the plugin's fixtures, records, budget checks,
reports and a baseline comparison, against the same 100 tests with the plugin switched off.

Both suites do the same work per test (a small matrix product timed with perf_counter, standing in
for a cached tiny model). The suites run at N and 2N tests, so the per-test cost is separated from the
once-per-session cost. Target: under 5 ms of bookkeeping per test.

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


def suite_times(n: int, rounds: int) -> tuple[float, float]:
    d = tempfile.mkdtemp(prefix="qp-overhead-")
    with open(os.path.join(d, "test_with.py"), "w") as f:
        f.write(textwrap.dedent(WITH.format(n=n)))
    d2 = tempfile.mkdtemp(prefix="qp-overhead-off-")
    with open(os.path.join(d2, "test_without.py"), "w") as f:
        f.write(textwrap.dedent(WITHOUT.format(n=n)))
    run(d, ["--quantperf-save=base"])  # a baseline to compare against
    w, wo = [], []
    for _ in range(rounds):
        wo.append(run(d2, ["-p", "no:quantperf"]))
        w.append(run(d, ["--quantperf-baseline=base", "--quantperf-warn-only", f"--quantperf-json={d}/run.json",
                         f"--quantperf-markdown={d}/run.md"]))
    return statistics.median(w), statistics.median(wo)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tests", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    n = a.tests
    w1, o1 = suite_times(n, a.rounds)
    w2, o2 = suite_times(2 * n, a.rounds)
    per = ((w2 - o2) - (w1 - o1)) / n * 1e3
    fixed = (w1 - o1) - per * n / 1e3
    print(f"{n} tests: plugin on {w1:.2f} s, off {o1:.2f} s; {2 * n} tests: on {w2:.2f} s, off {o2:.2f} s "
          f"(medians of {a.rounds}; records, budget check, baseline comparison, JSON + Markdown reports)")
    print(f"bookkeeping per test: {per:.2f} ms (target < 5 ms); once per session: {fixed:.2f} s "
          f"(importing scipy for the statistics, the environment fingerprint, reports); "
          f"all of it spread over {n} tests: {(w1 - o1) / n * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
