"""False alarms and detection power of the baseline verdict, measured for real.

Each trial measures one model three or four times with the plugin's own measurement and comparison
code (``measure_generate`` + ``compare_metric``, the same path a test takes):

* A/A: baseline vs an unchanged second run: every metric must come out not-regressed;
* host-side slowdown: a ``time.sleep`` per generated token (a forward hook) adding about 10% of wall time;
* GPU-side slowdown (CUDA only): extra matrix products per token sized to about 5% of the GPU kernel time.

Prints the false-alarm rate and the detection rate per metric. Usage::

    python benchmarks/noise.py                        # CPU, default model in bf16
    python benchmarks/noise.py --device cuda --model synthetic:qwen2.5-1.5b --quant fp16
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time

from pytest_quantperf import models
from pytest_quantperf.verdicts.compare import DEFAULT_TOLERANCES, compare_metric
from pytest_quantperf.measure.generate import SamplingPlan, measure_generate
from pytest_quantperf.results import make_metric

WALL = ("latency_ms", "tpot_ms", "tokens_per_s")


def metrics_of(res) -> dict:
    return {k: make_metric(k, v) for k, v in res.samples.items()}


def verdicts(base: dict, cur: dict, names) -> dict[str, str]:
    """The verdicts a test would get: compare_metric per metric (the one rule)."""
    vs = [compare_metric("noise", n, base[n], cur[n], DEFAULT_TOLERANCES[n], same_hardware=True)
          for n in names if n in base and n in cur]
    return {v.metric: v.status for v in vs}


class PerTokenHook:
    """A forward hook on the LM head: runs once per generated token (and once for the prompt)."""

    def __init__(self, lm, fn):
        head = lm.model.get_output_embeddings()
        def hook(*_):  # returns None: the output stays untouched
            fn()

        self.handle = head.register_forward_hook(hook)

    def remove(self) -> None:
        self.handle.remove()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--quant", default="bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--max-time", type=float, default=6.0)
    ap.add_argument("--host-slowdown", type=float, default=0.10)
    ap.add_argument("--gpu-slowdown", type=float, default=0.05)
    ap.add_argument("--json", help="write the raw verdicts here")
    a = ap.parse_args(argv)

    device = models.resolve_device(a.device)
    spec = models.make_spec(a.model, a.quant, device=device)
    t0 = time.perf_counter()
    lm = models.load(spec)
    print(f"loaded {lm.label} on {device} in {time.perf_counter() - t0:.1f}s", flush=True)
    plan = SamplingPlan(max_time_s=a.max_time)
    cuda = device.startswith("cuda")
    prompt = ["Who invented the light bulb? Tell me about the history of electric light."]

    def measure():
        return measure_generate(lm, prompt, a.new_tokens, plan, gpu_time=cuda)

    gpu_names = ("gpu_ms_per_token",) if cuda else ()
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    raw = []
    t_start = time.perf_counter()
    for trial in range(a.trials):
        base = measure()
        bm = metrics_of(base)
        aa = metrics_of(measure())
        v_aa = verdicts(bm, aa, WALL + gpu_names)
        # host-side: sleep per token, sized to about host_slowdown of the baseline time per token
        per_token_s = statistics.median(base.samples["tpot_ms"]) / 1e3 * a.host_slowdown
        hook = PerTokenHook(lm, lambda: time.sleep(per_token_s))
        try:
            host = metrics_of(measure())
        finally:
            hook.remove()
        v_host = verdicts(bm, host, WALL + gpu_names)
        v_gpu = {}
        if cuda:
            import torch

            x = torch.randn(2048, 2048, device=device, dtype=torch.float16)
            torch.cuda.synchronize()
            from pytest_quantperf import gpu

            one = gpu.gpu_kernel_time_ms(lambda: x @ x)
            want = statistics.median(base.samples["gpu_ms_per_token"]) * a.gpu_slowdown
            k = max(1, round(want / max(one, 1e-6)))
            def extra_kernels() -> None:
                for _ in range(k):
                    x @ x

            hook = PerTokenHook(lm, extra_kernels)
            try:
                gres = metrics_of(measure())
            finally:
                hook.remove()
            v_gpu = verdicts(bm, gres, WALL + gpu_names)
        row = {"trial": trial, "aa": v_aa, "host": v_host, "gpu": v_gpu,
               "n": len(base.samples["latency_ms"]), "cv_latency": bm["latency_ms"].cv,
               "cv_gpu": bm["gpu_ms_per_token"].cv if cuda else None}
        raw.append(row)
        for kind, v in (("aa", v_aa), ("host", v_host), ("gpu", v_gpu)):
            for n, s in v.items():
                counts[f"{kind}:{n}"][s] += 1
        print(json.dumps(row), flush=True)

    T = a.trials
    print(f"\n{lm.label} on {device}: {T} trials in {time.perf_counter() - t_start:.0f}s, "
          f"{a.new_tokens} new tokens, max {a.max_time}s of runs per measurement")
    aa_alarms = sum(1 for r in raw if any(s == "regression" for s in r["aa"].values()))
    print(f"A/A false alarms: {aa_alarms}/{T} trials (any metric flagged as regression)")
    for kind, label in (("host", f"host-side sleep per token (+{a.host_slowdown:.0%})"),
                        ("gpu", f"GPU-side extra kernels per token (+{a.gpu_slowdown:.0%})")):
        if kind == "gpu" and not cuda:
            continue
        print(f"{label}:")
        for n in WALL + gpu_names:
            c = counts[f"{kind}:{n}"]
            print(f"  {n:<18} regression {c['regression']}/{T}  inconclusive {c['inconclusive']}/{T}  "
                  f"too_noisy {c['too_noisy']}/{T}  pass {c['pass']}/{T}")
    print("A/A verdicts:")
    for n in WALL + gpu_names:
        c = counts[f"aa:{n}"]
        print(f"  {n:<18} " + "  ".join(f"{k} {v}/{T}" for k, v in sorted(c.items())))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(raw, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
