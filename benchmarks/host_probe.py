"""Does a fixed workload in the same process track how fast this host runs a generate?

Wall time of identical code moves ±10-25% between pytest processes on a shared CPU runner, with
no other process visible to it. If a fixed probe slowed by the same factor, the verdict could
judge wall time relative to it. Each of ``--procs`` fresh processes loads the default model
(bf16), then alternates, ``--runs`` times: three probes (a bf16 matrix-vector product of the
model's hidden size, a 256 MiB bf16 read, a pure-Python loop) and one greedy 16-token generate.
Prints each probe's spread between processes, its correlation with the generate's median and the
spread of generate/probe. ``--busy`` runs every process beside one spinning process. ::

    python benchmarks/host_probe.py --procs 10
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r'''
import json, statistics, time, torch
from pytest_quantperf import models
from pytest_quantperf.backends import backend_for
lm = models.load(models.make_spec("default", "bf16", device="cpu"))
be = backend_for(lm); prep = be.prepare(["The capital of France is"])
W = torch.randn(8192, 576, dtype=torch.bfloat16); x = torch.randn(1, 576, dtype=torch.bfloat16)
B = torch.ones(128 * 2**20, dtype=torch.bfloat16)
def t(f):
    a = time.perf_counter(); f(); return (time.perf_counter() - a) * 1e3
def gemv():
    for _ in range(30): torch.nn.functional.linear(x, W)
def mem():
    for _ in range(2): B.sum()
def py():
    s = 0
    for i in range(200000): s += i
for _ in range(2): be.run(prep, 16); gemv(); mem(); py()
r = {"gen": [], "gemv": [], "mem": [], "py": []}
for _ in range(RUNS):
    r["gemv"].append(t(gemv)); r["mem"].append(t(mem)); r["py"].append(t(py))
    r["gen"].append(t(lambda: be.run(prep, 16)))
print(json.dumps({k: statistics.median(v) for k, v in r.items()}))
'''


def cv(xs: list[float]) -> float:
    return statistics.stdev(xs) / statistics.fmean(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--busy", action="store_true")
    a = ap.parse_args()
    rows = []
    for i in range(a.procs):
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.busy else None
        try:
            p = subprocess.run([sys.executable, "-c", CHILD.replace("RUNS", str(a.runs))],
                               capture_output=True, text=True)
        finally:
            if spin is not None:
                spin.kill()
                spin.wait()
        line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("{")), None)
        if line is None:
            print(f"process {i}: no figures; {p.stderr[-300:]}")
            continue
        rows.append(json.loads(line))
        print(f"process {i}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in rows[-1].items()), flush=True)
    if len(rows) < 3:
        return 1
    g = [r["gen"] for r in rows]
    print(f"\n{len(rows)} processes{' beside a spinner' if a.busy else ''}: generate median CV {cv(g):.3f}")
    for k in ("gemv", "mem", "py"):
        p = [r[k] for r in rows]
        print(f"{k:5}: CV {cv(p):.3f}, correlation with the generate {statistics.correlation(g, p):+.2f}, "
              f"CV of generate/{k} {cv([x / y for x, y in zip(g, p)]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
