"""Wall time per token against host CPU time per token, quiet and beside a busy process.

Is the CPU time a process spends per generated token steadier than its wall time per token
when the host is shared?  This loads the default model through the project's loader, runs one
greedy generate per measurement wrapped in ``host.HostMeter``, and alternates blocks of runs
between conditions:

* ``quiet``: nothing started by this script (other users of the machine may still be there: the
  contention column says how much they took);
* ``busy``: one other process spinning (``python -c "while True: pass"``) beside the run;
* ``busyN`` (e.g. ``busy2``): N such processes;
* ``dutyP`` (e.g. ``duty10``): one neighbour spinning P% of every 10 ms: how far a light
  neighbour moves the run, and what contention it reads.

Prints, per condition: runs, median and CV of wall ms/token and of CPU ms/token, the median
contention and own CPU share, the states seen, and the load average; then the ratio of each
median to the quiet one (how far a busy neighbour moves each figure).  Usage::

    python benchmarks/host_noise.py                                # nf4, fp32 compute, 16 tokens
    python benchmarks/host_noise.py --quant bf16 --runs 12 --json host_noise.json
    python benchmarks/host_noise.py --threads 1                    # torch.set_num_threads(1) first
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from pytest_quantperf.measure import host
from pytest_quantperf import models
from pytest_quantperf.backends import backend_for

PROMPT = "The capital of France is"


def cv(xs: list[float]) -> float:
    return statistics.stdev(xs) / statistics.fmean(xs) if len(xs) > 1 and statistics.fmean(xs) else float("nan")


DUTY = """
import time
on = {duty} / 100 * 0.01
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < on:
        pass
    time.sleep(0.01 - on)
"""


def start_spinners(n: int, duty: int = 100) -> list[subprocess.Popen]:
    """``n`` neighbours, each spinning ``duty`` percent of every 10 ms (100: all the time)."""
    import psutil

    code = "while True: pass" if duty >= 100 else DUTY.format(duty=duty)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    if duty < 100:
        time.sleep(0.5)
        return procs
    deadline = time.monotonic() + 20
    for p in procs:
        while psutil.Process(p.pid).cpu_times().user < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--quant", default="nf4")
    ap.add_argument("--compute-dtype", default="float32", help="bitsandbytes compute dtype (nf4/fp4); '' for none")
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per run")
    ap.add_argument("--runs", type=int, default=12, help="measured runs per condition")
    ap.add_argument("--block", type=int, default=4, help="runs per block; conditions alternate block by block")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs at the start of every block")
    ap.add_argument("--conditions", default="quiet,busy", help="comma list of quiet, busy, busyN, dutyP")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) before measuring")
    ap.add_argument("--json", metavar="OUT", help="write every run's host figures here")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    quant_kw = {"compute_dtype": args.compute_dtype} if args.compute_dtype and args.quant in ("nf4", "fp4") else {}
    spec = models.make_spec(args.model, args.quant, device="cpu", **quant_kw)
    t0 = time.perf_counter()
    lm = models.load(spec)
    print(f"loaded {spec.label if hasattr(spec, 'label') else spec} in {time.perf_counter() - t0:.1f} s; "
          f"torch {torch.__version__}, {threads} intra-op threads, cores {host.available_cores()}", flush=True)
    backend = backend_for(lm)
    prepared = backend.prepare([PROMPT])

    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    for c in conditions:
        if c != "quiet" and not (c.startswith("busy") and (c == "busy" or c[4:].isdigit())) \
                and not (c.startswith("duty") and c[4:].isdigit() and 0 < int(c[4:]) < 100):
            ap.error(f"unknown condition {c!r}: quiet, busy, busyN or dutyP (one neighbour busy P% of the time)")
    runs: dict[str, list[host.HostSample]] = {c: [] for c in conditions}
    loads: dict[str, list[float]] = {c: [] for c in conditions}
    while any(len(runs[c]) < args.runs for c in conditions):
        for c in conditions:
            todo = min(args.block, args.runs - len(runs[c]))
            if todo <= 0:
                continue
            duty = int(c[4:]) if c.startswith("duty") else 100
            n_spin = 0 if c == "quiet" else (1 if c.startswith("duty") else int(c[4:] or 1))
            procs = start_spinners(n_spin, duty)
            try:
                for _ in range(args.warmup):
                    backend.run(prepared, args.tokens)
                for _ in range(todo):
                    with host.HostMeter(threads=threads, tokens=args.tokens) as hm:
                        t = backend.run(prepared, args.tokens)
                    assert t.new_tokens == args.tokens, (t.new_tokens, args.tokens)
                    runs[c].append(hm.result)
                    loads[c].append(os.getloadavg()[0])
            finally:
                stop(procs)
            s = runs[c][-1]
            print(f"  {c:<6} {len(runs[c]):>3}/{args.runs}: wall {s.wall_ms_per_token:.1f} ms/tok, cpu "
                  f"{s.cpu_ms_per_token:.1f} ms/tok, contention {s.contention}, load {loads[c][-1]:.2f}", flush=True)

    head = ("condition", "runs", "wall ms/tok", "CV wall", "cpu ms/tok", "CV cpu", "cpu share", "contention",
            "states q/c/t", "load avg")
    rows = [head]
    med: dict[str, tuple[float, float]] = {}
    for c in conditions:
        rs = runs[c]
        w = [r.wall_ms_per_token for r in rs]
        u = [r.cpu_ms_per_token for r in rs]
        con = [r.contention for r in rs if r.contention is not None]
        sm = host.summarize(rs)
        med[c] = (statistics.median(w), statistics.median(u))
        rows.append((c, str(len(rs)), f"{med[c][0]:.1f}", f"{cv(w):.1%}", f"{med[c][1]:.1f}", f"{cv(u):.1%}",
                     f"{sm['cpu_share_median']:.2f}",
                     f"{statistics.median(con):.2f} [{min(con):.2f}-{max(con):.2f}]" if con else "n/a",
                     "/".join(str(sm["counts"][k]) for k in host.STATES),
                     f"{statistics.median(loads[c]):.2f} [{min(loads[c]):.2f}-{max(loads[c]):.2f}]"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    print()
    print(f"{spec.model} {spec.quant}{' ' + args.compute_dtype if quant_kw else ''}, {args.tokens} new tokens, "
          f"{threads} threads, {len(host.available_cores())} cores")
    for r in rows:
        print("  ".join(x.ljust(wd) for x, wd in zip(r, widths)))
    if "quiet" in med:
        for c in conditions:
            if c != "quiet":
                print(f"{c} / quiet medians: wall x{med[c][0] / med['quiet'][0]:.2f}, "
                      f"cpu x{med[c][1] / med['quiet'][1]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": spec.model, "quant": spec.quant, "tokens": args.tokens, "threads": threads,
                       "runs": {c: [r.to_dict() for r in runs[c]] for c in conditions},
                       "loadavg": loads}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
