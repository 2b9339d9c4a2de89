"""``quantperf ab`` as a PR gate, counted: an unchanged head (A/A) and a host-side slowdown.

A throwaway git repository holds one small suite on the default model (CPU) and a file
``slow.txt`` read by the suite: each forward pass sleeps that fraction of its own time afterwards
(a host-side slowdown, the kind kernel time cannot see). The base commit has ``0``; for each trial
the working tree gets ``0`` (``aa``) or ``--slowdown`` (``slow``, 0.15 = 15%, 1.5x the default
wall-clock tolerance) and ``quantperf ab --base HEAD --rounds N`` judges it. ``busy`` is an A/A
trial beside one spinning process, ``busyslow`` the slowdown beside one. A trial fails when ``quantperf ab`` exits 1 (a regression).
Thresholds are the plugin's defaults: this script reports their rates, it never tunes them. ::

    python benchmarks/ab_trials.py --trials 2 --kinds aa,slow      # about 6 min a trial on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aa_runs import SUITE as _AA_SUITE  # noqa: E402 - the same suite and slowdown as the baseline-gate trials

# the slowdown comes from a file in the tree, so the base commit and the working tree can differ
SUITE = _AA_SUITE.replace('SLOW = float(os.environ.get("QP_SLOW", "0"))',
                          'SLOW = float(open(os.path.join(os.path.dirname(__file__), "slow.txt")).read().strip() or 0)')
assert "slow.txt" in SUITE


def git(cwd: str, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
                   cwd=cwd, check=True, capture_output=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--quant", default="bf16")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=None, help="quantperf ab's --rounds (default: its own)")
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--kinds", default="aa,slow")
    ap.add_argument("--slowdown", type=float, default=0.15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-time", type=float, default=None, help="--quantperf-max-time of every run")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="qp-ab-")
    with open(os.path.join(root, "test_ab_suite.py"), "w") as f:
        f.write(textwrap.dedent(SUITE.format(model=a.model, quant=a.quant, new=a.new_tokens)))
    with open(os.path.join(root, "slow.txt"), "w") as f:
        f.write("0\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    for trial in range(a.trials):
        for kind in [k.strip() for k in a.kinds.split(",") if k.strip()]:
            with open(os.path.join(root, "slow.txt"), "w") as f:
                f.write(f"{a.slowdown if kind in ('slow', 'busyslow') else 0}\n")
            out = os.path.join(root, f"{kind}{trial}.json")
            cmd = [sys.executable, "-m", "pytest_quantperf.cli", "ab", "--base", "HEAD", "--json", out]
            if a.rounds:
                cmd += ["--rounds", str(a.rounds)]
            cmd += ["--", "test_ab_suite.py", "-q", "-p", "no:cacheprovider", f"--quantperf-device={a.device}"]
            if a.max_time:
                cmd.append(f"--quantperf-max-time={a.max_time}")
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if kind in ("busy", "busyslow") else None
            t0 = time.time()
            try:
                # quantperf ab's progress (stderr) passes through, so a trial cut by a time limit shows its rounds
                p = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, text=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
            verdicts, per_round, ran = {}, {}, None
            try:
                doc = json.load(open(out))
                ran = doc.get("rounds")
                for v in doc.get("verdicts", []):
                    if v.get("metric") in ("latency_ms", "tpot_ms", "tokens_per_s", "ttft_ms"):
                        verdicts[v["metric"]] = (v.get("status"), v.get("change"))
                        per_round[v["metric"]] = {"p": v.get("p_value"), "round_changes": v.get("round_changes")}
            except Exception as e:  # noqa: BLE001 - a trial without its JSON is reported as such
                verdicts = {"error": f"{type(e).__name__}: {e}; {p.stdout[-300:]} (its progress is above)"}
            rows.append({"kind": kind, "trial": trial, "rc": p.returncode, "wall_s": time.time() - t0,
                         "rounds": ran, "verdicts": verdicts, "per_round": per_round})
            print(f"{kind:5} {trial}: rc={p.returncode} {time.time() - t0:.0f} s, {ran} rounds; "
                  + ", ".join(f"{m} {s}" + (f" {c * 100:+.1f}%" if isinstance(c, float) else "")
                              for m, (s, c) in verdicts.items() if m != "error")
                  + (f" {verdicts['error']}" if "error" in verdicts else ""), flush=True)
            lat = per_round.get("latency_ms") or {}
            if lat.get("round_changes"):
                print("        latency_ms by round: " + " ".join(f"{c * 100:+.0f}%" for c in lat["round_changes"])
                      + (f"; p={lat['p']:.3g}" if isinstance(lat.get("p"), float) else ""), flush=True)
    print("\n== quantperf ab, base HEAD against the working tree ==")
    for kind in sorted({r["kind"] for r in rows}):
        rs = [r for r in rows if r["kind"] == kind]
        what = "caught (exit 1)" if kind in ("slow", "busyslow") else "false failures (exit 1)"
        print(f"{kind:5}: {what} {sum(r['rc'] == 1 for r in rs)} of {len(rs)}; "
              f"other exit codes {[r['rc'] for r in rs if r['rc'] not in (0, 1)]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "trials": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
