"""What a GPU kernel-time figure costs: a plain generate against the two profiled paths.

For each config (``synthetic:mistral-7b`` fp16, and nf4 with double quant and fp16 compute), batch 1,
32 prompt + 128 new tokens, greedy, after one cold generate:

(a) plain generates (no profiler), seconds each;
(b) the old path: ``torch.profiler`` with CUDA activity and ``prof.events()`` (``FunctionEvent``s);
(c) the whole generate under kineto, its raw events summed (``gpu.profile_kernels``);
(d) the windowed path the plugin uses (``gpu.profile_generate``): setup + prefill and
    ``--window`` decode steps profiled, the rest of the generate plain;
(e) plain generates again after (d): whether the process runs slower once CUPTI was attached
    (run it with ``TEARDOWN_CUPTI=0`` and without to see what the plugin's detaching buys).

(d) and (e) run before (b) and (c).

Prints the seconds of each, the ratios (c)/(a) and (d)/(a) against the 1.2x target, the kernel-time
figures, the window's difference from the whole-run figure and its spread over ``--window-runs``
runs, and writes all of it as JSON to ``--out``. About 1.5 min on an H200 without the old path
(``--old-runs 1`` adds ~25 s per config)::

    PYTHONPATH=src python benchmarks/kernel_time_cost.py --out /tmp/kernel_time_cost.json

On a machine without CUDA, ``--device cpu --model synthetic:smollm2-135m`` runs the same steps with
CPU activity in place of CUDA (a smoke test of the script: no GPU figure comes out of it).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

CONFIGS = {"fp16": dict(quant="fp16"),
           "nf4-dq": dict(quant="nf4", double_quant=True, compute_dtype="float16"),
           "int8": dict(quant="int8")}


def _pct(a: float, b: float) -> float:
    return (a - b) / b * 100.0 if b else float("nan")


def run_config(name: str, kw: dict, a: argparse.Namespace) -> dict:
    import torch

    from pytest_quantperf import gpu, models
    from pytest_quantperf.backends import backend_for

    cuda = a.device.startswith("cuda")
    t0 = time.perf_counter()
    lm = models.load(models.make_spec(a.model, device=a.device, **kw))
    load_s = time.perf_counter() - t0
    backend = backend_for(lm)
    prepared = backend.prepare(["x" * a.prompt_tokens])

    def gen():
        return backend.run(prepared, a.new_tokens)

    def gen_s() -> float:
        t = gen()
        return t.end - t.start

    out: dict = {"config": name, "load_s": load_s, "new_tokens": a.new_tokens,
                 "prompt_tokens": backend.prompt_tokens(prepared)}

    def profiled(path: str) -> dict:
        t1 = time.perf_counter()
        if cuda:
            p = gpu.profile_kernels(gen, lm.device, path=path)
        else:  # smoke test: CPU ops stand in for kernels
            p = gpu.kernel_time._profile_raw(gen, gpu.kernel_time._raw_api(), activity="cpu")
        total = time.perf_counter() - t1
        return {"path": p.path, "seconds": total, "run_s": p.wall_ms / 1e3, "collect_s": p.collect_ms / 1e3,
                "gpu_ms": p.gpu_ms, "gpu_ms_per_token": p.gpu_ms / a.new_tokens, "n_events": p.n_events}

    def windowed() -> dict:
        from pytest_quantperf.gpu import profile_generate, profile_window

        t1 = time.perf_counter()
        if cuda:
            p = profile_generate(backend, prepared, a.new_tokens, lm.device, window=a.window)
        else:
            p = profile_window(lambda f: backend.run(prepared, a.new_tokens, on_step=f), a.new_tokens,
                               api=gpu.kernel_time._raw_api(), activity="cpu", window=a.window)
        total = time.perf_counter() - t1
        return {"path": p.path, "seconds": total, "run_s": p.wall_ms / 1e3, "collect_s": p.collect_ms / 1e3,
                "gpu_ms": p.gpu_ms, "gpu_ms_per_token": p.gpu_ms / a.new_tokens, "n_events": p.n_events,
                "prefill_ms": getattr(p, "prefill_ms", None), "decode_ms_per_step": getattr(p, "decode_ms_per_step", None),
                "switch_s": getattr(p, "switch_ms", 0.0) / 1e3}

    if a.short_warmup:  # as the plugin warms up: short generates, then the first full-length run
        for _ in range(a.short_warmup):
            backend.run(prepared, 4)
        t1 = time.perf_counter()
        if a.first_full == "window":
            out["first_full"] = {"kind": "window", **windowed()}
        else:
            out["first_full"] = {"kind": "plain", "seconds": gen_s()}
        out["first_full"]["total_s"] = time.perf_counter() - t1
        out["cold_s"] = None
    else:
        out["cold_s"] = gen_s()  # cold: allocator, kernels, CUPTI-free
    plain = [gen_s() for _ in range(a.plain_runs)]
    out["plain_s"] = plain
    if a.attach_first:  # does a profiled short generate first take the first window run's extra cost?
        from pytest_quantperf.gpu import kernel_time

        if cuda:
            kernel_time._require_cuda()
        t1 = time.perf_counter()
        gpu.kernel_time._profile_raw(lambda: backend.run(prepared, 4), gpu.kernel_time._raw_api(), activity="cuda" if cuda else "cpu")
        out["attach_first_s"] = time.perf_counter() - t1
    # the window (what measurements use) first, then plain runs again: does the process run slower
    # once CUPTI has been attached (TEARDOWN_CUPTI decides whether kineto detaches it)? The whole-run
    # and old paths last, so their heavier profiling touches no figure but their own.
    out["window"] = [windowed() for _ in range(a.window_runs)]
    out["teardown_cupti"] = os.environ.get("TEARDOWN_CUPTI")  # as the profiling left it
    after = [gen_s() for _ in range(a.plain_after)]
    out["plain_after_s"] = after
    out["new"] = [profiled(gpu.PATH_RAW) for _ in range(a.new_runs)]
    out["old"] = [profiled(gpu.PATH_PROFILER) for _ in range(a.old_runs)] if cuda else []
    plain_med = statistics.median(plain)
    out["summary"] = {"plain_s": plain_med}
    new_g = [r["gpu_ms"] for r in out["new"]]
    if out["new"]:
        new_s = statistics.median(r["seconds"] for r in out["new"])
        out["summary"].update(
            new_s=new_s, new_over_plain=new_s / plain_med,
            new_gpu_ms_per_token=statistics.median(new_g) / a.new_tokens,
            new_spread_pct=(max(new_g) - min(new_g)) / statistics.median(new_g) * 100 if len(new_g) > 1 else None)
    if after:
        out["summary"].update(plain_after_s=statistics.median(after),
                              after_over_before=statistics.median(after) / plain_med)
    if out["window"]:
        win_g = [r["gpu_ms"] for r in out["window"]]
        win_s = statistics.median(r["seconds"] for r in out["window"])
        out["summary"].update(
            window_s=win_s, window_over_plain=win_s / plain_med,
            window_gpu_ms_per_token=statistics.median(win_g) / a.new_tokens,
            window_vs_full_pct=_pct(statistics.median(win_g), statistics.median(new_g)) if new_g else None,
            window_cv_pct=(statistics.stdev(win_g) / statistics.mean(win_g) * 100) if len(win_g) > 1 else None)
    if out["old"]:
        old_s = statistics.median(r["seconds"] for r in out["old"])
        old_g = statistics.median(r["gpu_ms"] for r in out["old"])
        out["summary"].update(old_s=old_s, old_over_plain=old_s / plain_med,
                              old_gpu_ms_per_token=old_g / a.new_tokens,
                              new_vs_old_pct=_pct(statistics.median(new_g), old_g))
    del lm, backend, prepared
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="synthetic:mistral-7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--configs", default="fp16,nf4-dq", help="comma list of: " + ", ".join(CONFIGS))
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--plain-runs", type=int, default=2)
    ap.add_argument("--old-runs", type=int, default=0, help="runs of the old torch.profiler path (0 = skip)")
    ap.add_argument("--window", type=int, default=8, help="decode steps profiled by the windowed path")
    ap.add_argument("--window-runs", type=int, default=5)
    ap.add_argument("--new-runs", type=int, default=2, help="runs of the whole generate profiled (0 = skip)")
    ap.add_argument("--plain-after", type=int, default=2, help="plain generates after the windowed runs")
    ap.add_argument("--attach-first", action="store_true",
                    help="profile a 4-token generate before the windowed runs (CUPTI's first attach paid there)")
    ap.add_argument("--short-warmup", type=int, default=0,
                    help="N 4-token generates instead of the cold full-length one (the plugin's warm-up)")
    ap.add_argument("--first-full", choices=("plain", "window"), default="plain",
                    help="with --short-warmup: the first full-length run of the process, plain or profiled")
    ap.add_argument("--out", default=None, help="write the figures here as JSON")
    a = ap.parse_args(argv)
    import torch

    from pytest_quantperf import gpu

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("kernel_time_cost: no CUDA device here; use --device cpu --model synthetic:smollm2-135m "
              "for a smoke test of the script", file=sys.stderr)
        return 2
    t_all = time.perf_counter()
    results = []
    for name in [c.strip() for c in a.configs.split(",") if c.strip()]:
        kw = dict(CONFIGS[name])
        if not a.device.startswith("cuda"):
            kw.pop("compute_dtype", None)
            if kw["quant"] == "fp16":
                kw["quant"] = "bf16"
        results.append(run_config(name, kw, a))
    wall = time.perf_counter() - t_all
    dev = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "CPU (smoke test: CPU ops, not kernels)"
    print(f"\n== kernel-time cost: {a.model}, {a.prompt_tokens} prompt + {a.new_tokens} new tokens, on {dev}, "
          f"torch {torch.__version__}, raw kineto API {'present' if gpu.kernel_time._raw_api() else 'MISSING (fallback)'} ==")
    print(f"{'config':<8} {'plain s':>8} {'old s':>7} {'new s':>7} {'new/plain':>9} {'collect s':>9} "
          f"{'old ms/tok':>10} {'new ms/tok':>10} {'new-old':>8} {'new spread':>10} {'events':>7} {'path':>12}")
    for r in results:
        s = r["summary"]

        def f(k, fmt):
            v = s.get(k)
            return fmt.format(v) if v is not None else "-"
        print(f"{r['config']:<8} {f('plain_s', '{:.2f}'):>8} {f('old_s', '{:.2f}'):>7} {f('new_s', '{:.2f}'):>7} "
              f"{f('new_over_plain', '{:.2f}x'):>9} {statistics.median([x['collect_s'] for x in r['new']] or [0]):>9.2f} "
              f"{f('old_gpu_ms_per_token', '{:.3f}'):>10} {f('new_gpu_ms_per_token', '{:.3f}'):>10} "
              f"{f('new_vs_old_pct', '{:+.2f}%'):>8} {f('new_spread_pct', '{:.2f}%'):>10} "
              f"{r['new'][0]['n_events'] if r['new'] else '-':>7} {r['new'][0]['path'] if r['new'] else '-':>12}")
        if r["window"]:
            print(f"{'':<8} window ({a.window} decode steps): {f('window_s', '{:.2f}')} s, "
                  f"{f('window_over_plain', '{:.2f}x')} plain, {f('window_gpu_ms_per_token', '{:.4f}')} ms/token, "
                  f"{f('window_vs_full_pct', '{:+.3f}%')} vs whole run, CV {f('window_cv_pct', '{:.3f}%')} "
                  f"over {len(r['window'])} runs, collect {statistics.median(x['collect_s'] for x in r['window']):.2f} s, "
                  f"{r['window'][0]['n_events']} events, profiler on/off {statistics.median(x['switch_s'] for x in r['window']):.2f} s")
        if r.get("first_full"):
            ff = r["first_full"]
            print(f"{'':<8} after {a.short_warmup} 4-token warm-ups, the first full-length run ({ff['kind']}): "
                  f"{ff['seconds']:.2f} s ({ff['seconds'] / s['plain_s']:.2f}x a later plain run)")
        cold = f"{r['cold_s']:.1f} s" if r["cold_s"] is not None else "-"
        print(f"{'':<8} load {r['load_s']:.1f} s, cold generate {cold}, plain runs "
              + ", ".join(f"{x:.2f}" for x in r["plain_s"]) + " s; after the windowed runs "
              + ", ".join(f"{x:.2f}" for x in r["plain_after_s"])
              + f" s ({f('after_over_before', '{:.2f}x')}); TEARDOWN_CUPTI={r['teardown_cupti']}")
        if r["window"]:
            first = r["window"][0]["seconds"]
            print(f"{'':<8} first window run {first:.2f} s ({first / s['plain_s']:.2f}x plain)"
                  + (f", after a profiled 4-token generate of {r['attach_first_s']:.2f} s" if "attach_first_s" in r else ""))
    ok = all(r["summary"].get("window_over_plain", r["summary"].get("new_over_plain", 9.9)) <= 1.2 for r in results)
    print(f"target: profiled run at most 1.2x a plain generate: {'met' if ok else 'NOT met'}; "
          f"whole script {wall:.1f} s")
    if a.out:
        doc = {"model": a.model, "device": dev, "torch": torch.__version__, "wall_s": wall,
               "target_met": ok, "configs": results}
        with open(a.out, "w") as fh:
            json.dump(doc, fh, indent=1)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
