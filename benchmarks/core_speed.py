"""Does the wall clock of a batch-1 CUDA decode depend on which CPU core drives it?

On the H200 runner, whole pytest processes of one unchanged suite read 337, 470 and 671 ms latency
(synthetic:qwen2.5-1.5b fp16, 16 new tokens: GPU kernels are about 3 ms of each ~25 ms token, so
the host's launch loop sets the pace), and `quantperf ab` could not tell a 15% host-side slowdown
from that. If the core the launching thread lands on decides its speed (another NUMA node than the
GPU's, a hyperthread sibling that is busy), pinning both sides of a comparison to the same cores, or
to the GPU's own (NVML's CPU affinity), would remove most of it.

One process, one model: the main thread is pinned to each allowed CPU in turn (``host.pinned_thread``,
the calling thread only: CUDA's and torch's other threads keep theirs) and times ``--runs``
generates there; then unpinned runs, then runs pinned as ``--quantperf-pin-core=auto`` pins (the
core fastest by ``host.core_probe`` each time). Prints per CPU its NUMA node, whether NVML names it
near the GPU, the median latency and the probe's time before and after, their correlation, and the
spread between cores against the spread of unpinned and of auto-pinned runs::

    PYTHONPATH=src python benchmarks/core_speed.py --out /tmp/core_speed.json
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time


def _numa_node(cpu: int) -> int | None:
    nodes = glob.glob(f"/sys/devices/system/cpu/cpu{cpu}/node*")
    return int(nodes[0].rsplit("node", 1)[1]) if nodes else None


def _gpu_cpus() -> set[int] | None:
    """The CPUs NVML calls ideal for GPU 0 (its ``nvmlDeviceGetCpuAffinity`` bit mask), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        words = pynvml.nvmlDeviceGetCpuAffinity(pynvml.nvmlDeviceGetHandleByIndex(0), 4)
        return {w * 64 + b for w, word in enumerate(words) for b in range(64) if word >> b & 1}
    except Exception:  # noqa: BLE001 - no NVML, no answer
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="synthetic:qwen2.5-1.5b")
    ap.add_argument("--quant", default="fp16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3, help="generates per core")
    ap.add_argument("--unpinned", type=int, default=8, help="generates with the thread unpinned")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    from pytest_quantperf import models
    from pytest_quantperf.backends import backend_for

    allowed = sorted(os.sched_getaffinity(0))
    lm = models.load(models.make_spec(a.model, device=a.device, quant=a.quant))
    backend = backend_for(lm)
    prepared = backend.prepare(["The capital of France is"])

    def latency_ms() -> float:
        t = backend.run(prepared, a.new_tokens)
        return (t.end - t.start) * 1e3

    for _ in range(3):  # warm: allocator, kernels
        latency_ms()
    from pytest_quantperf.measure.host import core_probe, pinned_thread

    near = _gpu_cpus()
    per_cpu = {}
    t0 = time.perf_counter()
    probe_before = core_probe(allowed)  # what --quantperf-pin-core=auto ranks the cores by
    for cpu in allowed:
        with pinned_thread(cpu):
            per_cpu[cpu] = [latency_ms() for _ in range(a.runs)]
    probe_after = core_probe(allowed)
    unpinned = [latency_ms() for _ in range(a.unpinned)]
    auto = []  # as the plugin pins: the fastest core by the probe at the start of each measurement
    for _ in range(a.unpinned):
        with pinned_thread("auto") as pin:
            auto.append((pin.info["pinned_core"], latency_ms()))
    wall = time.perf_counter() - t0

    print(f"== {a.model} {a.quant}, {a.new_tokens} new tokens, on {a.device}; {len(allowed)} CPUs allowed; "
          f"NVML's CPUs near GPU 0: {sorted(near) if near is not None else 'unknown'} ==")
    print(f"{'cpu':>4} {'node':>4} {'near':>5} {'median ms':>10} {'probe us':>15}  runs")
    meds = {}
    for cpu, xs in per_cpu.items():
        meds[cpu] = statistics.median(xs)
        print(f"{cpu:>4} {str(_numa_node(cpu)):>4} {('yes' if near and cpu in near else '-'):>5} "
              f"{meds[cpu]:>10.1f} {probe_before[cpu]:>7.0f}/{probe_after[cpu]:<7.0f}  "
              + ", ".join(f"{x:.1f}" for x in xs))
    if len(allowed) > 2:
        r = statistics.correlation([meds[c] for c in allowed], [(probe_before[c] + probe_after[c]) / 2 for c in allowed])
        print(f"correlation of a core's decode latency with its probe time: {r:+.2f}")
    vals = sorted(meds.values())
    print(f"between cores: fastest {vals[0]:.1f} ms, slowest {vals[-1]:.1f} ms ({vals[-1] / vals[0]:.2f}x), "
          f"median {statistics.median(vals):.1f}")
    if near:
        nm = [m for c, m in meds.items() if c in near]
        fm = [m for c, m in meds.items() if c not in near]
        if nm and fm:
            print(f"near the GPU: median {statistics.median(nm):.1f} ms over {len(nm)} CPUs; "
                  f"the others {statistics.median(fm):.1f} ms over {len(fm)}")
    print(f"unpinned: " + ", ".join(f"{x:.1f}" for x in unpinned)
          + f" ms (median {statistics.median(unpinned):.1f}, {max(unpinned) / min(unpinned):.2f}x max/min); "
          f"{wall:.1f} s in all")
    al = [x for _, x in auto]
    print("pinned to the probe's fastest core: " + ", ".join(f"{x:.1f} (CPU {c})" for c, x in auto)
          + f" ms (median {statistics.median(al):.1f}, {max(al) / min(al):.2f}x max/min)")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"model": a.model, "quant": a.quant, "new_tokens": a.new_tokens, "near_gpu": sorted(near or []),
                       "nodes": {c: _numa_node(c) for c in allowed}, "per_cpu_ms": per_cpu,
                       "unpinned_ms": unpinned, "probe_us": [probe_before, probe_after],
                       "auto_pinned": auto}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
