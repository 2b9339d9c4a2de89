"""Does the counting run see CUDA's kernels and syncs? One process, no pytest, each step timed and
printed as it ends (a faulthandler dump if one hangs):

A. kineto's raw events by kind around a matmul;
B. the launch counter alone (``_Cuda``) around one whole generate;
C. the full counting run with CUDA, whole generate (``window=0``);
D. the same with a window of 8 decode steps;
E. D again after a kernel-time profile (CUPTI detached and attached again).

    python benchmarks/gpu_work_probe.py [MODEL]
"""
from __future__ import annotations

import collections
import faulthandler
import json
import sys
import time

import torch

from pytest_quantperf import models
from pytest_quantperf.backends import backend_for
from pytest_quantperf.gpu.kernel_time import _raw_api
from pytest_quantperf.gpu.window import profile_generate
from pytest_quantperf.measure.work_count import _Cuda, count_work

N = 32


def raw_kinds() -> dict[str, int]:
    config, acts_api, _, prepare, enable, disable = _raw_api()
    acts = {acts_api.CUDA}
    prepare(config, acts)
    enable(config, acts)
    a = torch.randn(512, 512, device="cuda")
    (a @ a).sum().item()
    torch.cuda.synchronize()
    raw = disable()
    kinds = collections.Counter()
    for e in raw.events():
        at = getattr(e, "activity_type", None)
        kinds[f"{str(at()).lower() if at else '?'}:{e.name()[:40]}"] += 1
    return dict(kinds.most_common(12))


def summary(w) -> str:
    d = w.to_dict()
    by = d.get("by_name") or {}
    top = dict(sorted((by.get("launches") or {}).items(), key=lambda kv: -kv[1])[:3])
    return json.dumps({"totals": d.get("totals"), "syncs": by.get("syncs"), "launches_top": top,
                       "detail": d.get("detail")})


def step(name: str, fn) -> None:
    t = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - the probe reports every failure and goes on
        out = f"FAILED {type(e).__name__}: {e}"
    print(f"{name} ({time.perf_counter() - t:.2f} s): {out}", flush=True)


def main() -> int:
    faulthandler.dump_traceback_later(150, repeat=True)
    model = sys.argv[1] if len(sys.argv) > 1 else "synthetic:qwen2.5-1.5b"
    t0 = time.perf_counter()
    print("torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
    step("A raw kinds", lambda: json.dumps(raw_kinds()))
    lm = models.load(models.make_spec(model, "fp16", device="cuda:0"))
    backend = backend_for(lm)
    prepared = backend.prepare(["Who invented the light bulb?"])
    backend.run(prepared, 4)
    backend.run(prepared, N)
    dev = torch.device("cuda:0")

    def cuda_alone() -> str:
        c = _Cuda(dev)
        c.start()
        backend.run(prepared, N)
        c.stop()
        got = c.take()
        return json.dumps({k: {"total": sum(v.values()), "names": len(v)} for k, v in got.items()})

    step("B _Cuda alone, whole generate", cuda_alone)
    step("C count_work cuda window=0", lambda: summary(count_work(backend, prepared, N, cuda_device=dev, window=0)))
    step("D count_work cuda window=8", lambda: summary(count_work(backend, prepared, N, cuda_device=dev, window=8)))
    step("D' count_work no cuda window=8", lambda: summary(count_work(backend, prepared, N, window=8)))
    step("kernel-time profile", lambda: f"{profile_generate(backend, prepared, N, dev).gpu_ms:.2f} ms")
    step("E count_work cuda window=8 after profile",
         lambda: summary(count_work(backend, prepared, N, cuda_device=dev, window=8)))
    step("B' _Cuda alone after profile", cuda_alone)
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)
    faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
