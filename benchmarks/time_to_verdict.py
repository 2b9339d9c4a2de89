"""Time to a verdict: three 7B-class configs, from nothing to pass/fail, through pytest itself.

Writes a small suite (fp16, nf4 with double quant, int8 of ``synthetic:mistral-7b`` on a GPU; the
default model on the CPU), runs it with pytest in this process with budgets and GPU kernel time,
then prints the total wall time, the seconds spent loading and measuring, each figure's CV, and
the footprints. Target on an H100: under 90 s in all, ``gpu_ms_per_token`` CV at most 0.5%.

    python benchmarks/time_to_verdict.py [--model synthetic:mistral-7b] [--new-tokens 32] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time

T0 = time.perf_counter()

SUITE = '''
import pytest

CONFIGS = [("fp16", None), ("nf4", True), ("nf4", False), ("int8", None)]

@pytest.mark.parametrize("quant, dq", CONFIGS, ids=["fp16", "nf4-dq", "nf4", "int8"])
@pytest.mark.quant_budget({budget})
def test_config(quant_model, quantperf, quant, dq):
    if quant == "fp16" and {cpu}:
        quant = "bf16"
    lm = quant_model({model!r}, quant=quant, double_quant=dq)
    quantperf.generate(lm, "x" * {prompt}, max_new_tokens={new})
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--max-time", default="8")
    ap.add_argument("--out", default=None, help="folder for the JSON and HTML reports")
    ap.add_argument("--skip-nf4-plain", action="store_true")
    a = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    model = a.model or ("synthetic:mistral-7b" if cuda else "default")
    budget = "vram_mb=15000, tokens_per_s=1, gpu_ms_per_token=50" if cuda else "host_rss_mb=16000, tokens_per_s=0.5"
    out = a.out or tempfile.mkdtemp(prefix="qp-ttv-")
    os.makedirs(out, exist_ok=True)
    d = tempfile.mkdtemp(prefix="qp-ttv-suite-")
    suite = SUITE.format(budget=budget, cpu=not cuda, model=model, prompt=a.prompt_tokens if model.startswith("synthetic:") else 8,
                         new=a.new_tokens)
    if a.skip_nf4_plain:
        suite = suite.replace(', ("nf4", False)', "").replace(', "nf4", "int8"]', ', "int8"]')
    with open(os.path.join(d, "test_ttv.py"), "w") as f:
        f.write(textwrap.dedent(suite))
    js = os.path.join(out, "time_to_verdict.json")
    import pytest

    t_run = time.perf_counter()
    rc = pytest.main([d, "-q", "-p", "no:cacheprovider", f"--quantperf-json={js}",
                      f"--quantperf-html={os.path.join(out, 'time_to_verdict.html')}",
                      f"--quantperf-max-time={a.max_time}", "--rootdir", d, "--durations=0"])
    t_end = time.perf_counter()
    doc = json.load(open(js))
    load = meas = 0.0
    print(f"\n== time to verdict: {model} on {doc['env'].get('gpu') or doc['env'].get('cpu')} ==")
    print(f"{'config':<10} {'load_s':>7} {'footprint MiB':>14} {'vram MiB':>9} {'tok/s':>7} {'CV':>6} "
          f"{'tpot ms':>8} {'gpu ms/tok':>10} {'CV':>7} {'busy':>5} {'bw_gpu':>6} {'bw_wall':>7} {'n':>3} {'J/tok':>6}")
    for nid, t in doc["tests"].items():
        m = t["metrics"]
        cfg = nid.split("[")[-1].rstrip("]")
        load += m["load_s"]["value"]

        def g(k, f="{:.1f}", key="value"):
            return f.format(m[k][key]) if k in m else "-"
        print(f"{cfg:<10} {g('load_s', '{:.2f}'):>7} {g('footprint_mb'):>14} {g('vram_mb'):>9} {g('tokens_per_s'):>7} "
              f"{g('tokens_per_s', '{:.1%}', 'cv'):>6} {g('tpot_ms', '{:.2f}'):>8} {g('gpu_ms_per_token', '{:.3f}'):>10} "
              f"{g('gpu_ms_per_token', '{:.2%}', 'cv'):>7} {g('gpu_busy_share', '{:.0%}'):>5} "
              f"{g('bw_util_gpu', '{:.0%}'):>6} {g('bw_util_wall', '{:.0%}'):>7} {len(m['latency_ms']['samples']):>3} "
              f"{g('energy_j_per_token', '{:.2f}'):>6}")
    meas = (t_end - t_run) - load
    print(f"\ntotal wall time {t_end - T0:.1f} s (imports and pytest start {t_run - T0:.1f} s), "
          f"loading {load:.1f} s, measuring and reporting {meas:.1f} s, pytest exit code {int(rc)}")
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
