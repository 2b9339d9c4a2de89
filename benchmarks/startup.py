"""What the installed plugin costs a pytest run that never uses it.

Times whole processes, ``pytest --collect-only -q`` on a throw-away project of five plain tests,
with the plugin (A) and with ``-p no:quantperf`` (B), in pairs whose order alternates (A B, B A,
...), so a machine that speeds up or slows down during the run moves both sides of a pair alike.
Prints the median of each side and the median of the paired differences A - B with a
distribution-free 95% interval, and the import time of ``pytest_quantperf.plugin`` itself
(``python -X importtime``, after ``import pytest``).

Bytecode is cached in a temporary directory (``PYTHONPYCACHEPREFIX``) as it would be in a user's
environment, even where ``PYTHONDONTWRITEBYTECODE`` is set; nothing is written into the source tree.
This checkout's ``src`` comes first on ``PYTHONPATH``, so the figures are of this code.

    python benchmarks/startup.py [--runs 40]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
TARGET_MS = 50.0


def _env(pycache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _plugin_args() -> list[str]:
    """Nothing when the entry point is installed (as users have it); ``-p`` otherwise."""
    names = {e.name for e in importlib.metadata.entry_points(group="pytest11")}
    return [] if "quantperf" in names else ["-p", "pytest_quantperf.plugin"]


def _time(cmd: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the OS's accounting of the finished child).

    CPU time is the steadier figure on a shared machine: waiting for a core does not count.
    """
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}")
    return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def median_interval(xs: list[float], conf: float = 0.95) -> tuple[float, float]:
    """Order statistics around the median that cover it with probability >= ``conf`` (binomial)."""
    s = sorted(xs)
    n = len(s)
    k = 0  # largest k with P(B <= k) <= (1 - conf) / 2, B ~ Binomial(n, 1/2)
    cdf = 0.0
    for j in range(n + 1):
        cdf += math.comb(n, j) / 2 ** n
        if cdf > (1 - conf) / 2:
            break
        k = j + 1
    if k == 0:
        return s[0], s[-1]
    return s[k - 1], s[n - k]


def import_time_ms(env: dict[str, str], runs: int) -> float:
    """Median cumulative import time of pytest_quantperf.plugin, pytest already imported."""
    out = []
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import pytest; import pytest_quantperf.plugin"],
                           env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, check=True)
        m = re.search(r"^import time:\s+\d+ \|\s+(\d+) \| pytest_quantperf\.plugin$", p.stderr, re.M)
        if m:
            out.append(int(m.group(1)) / 1000)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40, help="pairs of runs (default 40)")
    ap.add_argument("--warmup", type=int, default=2, help="unrecorded pairs first (default 2)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quantperf-startup-") as tmp:
        proj = Path(tmp) / "proj"
        proj.mkdir()
        (proj / "test_plain.py").write_text("".join(f"def test_{i}():\n    assert {i} == {i}\n\n" for i in range(5)))
        (proj / "pytest.ini").write_text("[pytest]\n")
        env = _env(str(Path(tmp) / "pycache"))
        base = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        with_plugin = base + _plugin_args()
        without = base + ["-p", "no:quantperf"]
        check = subprocess.run(with_plugin + ["--help"], cwd=proj, env=env, capture_output=True, text=True)
        if "--quantperf-baseline" not in check.stdout:
            raise SystemExit("the plugin did not load in the 'with' runs: install the package (pip install -e .)")
        where = subprocess.run([sys.executable, "-c", "import pytest_quantperf; print(pytest_quantperf.__file__)"],
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        a: list[tuple[float, float]] = []
        b: list[tuple[float, float]] = []
        for i in range(args.warmup + args.runs):
            order = ((with_plugin, a), (without, b)) if i % 2 == 0 else ((without, b), (with_plugin, a))
            pair = {id(lst): _time(cmd, str(proj), env) for cmd, lst in order}
            if i >= args.warmup:
                for _, lst in order:
                    lst.append(pair[id(lst)])
        imp = import_time_ms(env, 15)
    print(f"code measured: {where}")
    print(f"pytest --collect-only -q, 5 plain tests, {args.runs} alternating pairs (whole processes)")
    meds = {}
    for k, what in ((0, "wall"), (1, "cpu")):
        xa = [x[k] * 1000 for x in a]
        xb = [x[k] * 1000 for x in b]
        diffs = [x - y for x, y in zip(xa, xb)]
        lo, hi = median_interval(diffs)
        meds[what] = statistics.median(diffs)
        print(f"  {what:4}  with the plugin  median {statistics.median(xa):7.1f} ms (min {min(xa):.1f}, max {max(xa):.1f})"
              f"; -p no:quantperf median {statistics.median(xb):7.1f} ms (min {min(xb):.1f}, max {max(xb):.1f})")
        print(f"  {what:4}  paired difference median {meds[what]:+7.1f} ms  (95% interval {lo:+.1f} .. {hi:+.1f} ms)")
    print(f"import pytest_quantperf.plugin (after import pytest): median {imp:.1f} ms of 15")
    print(f"target: under {TARGET_MS:g} ms more than -p no:quantperf (wall median): "
          f"{'met' if meds['wall'] < TARGET_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
