"""Does the counting run see CUDA's kernels and syncs? One process, no pytest: kineto's raw events by
kind around a matmul, then the work of one generate counted before and after a kernel-time profile.

    python benchmarks/gpu_work_probe.py
"""
from __future__ import annotations

import collections
import json
import time

import torch

from pytest_quantperf import models
from pytest_quantperf.gpu.kernel_time import _raw_api
from pytest_quantperf.measure.generate import SamplingPlan, measure_generate


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


def main() -> int:
    t0 = time.perf_counter()
    print("raw kinds", json.dumps(raw_kinds()), flush=True)
    lm = models.load(models.make_spec("synthetic:qwen2.5-1.5b", "fp16", device="cuda:0"))
    plan = SamplingPlan(repeat=1, warmup=1)
    for gpu_time in (False, True):
        res = measure_generate(lm, ["Who invented the light bulb?"], 32, plan, gpu_time=gpu_time, count_work=True)
        w = res.work or {}
        print(f"gpu_time={gpu_time} totals", json.dumps(w.get("totals")), "note", res.work_note,
              "syncs", json.dumps((w.get("by_name") or {}).get("syncs")),
              "launches top", json.dumps(dict(list(((w.get("by_name") or {}).get("launches") or {}).items())[:3])),
              "detail", json.dumps(w.get("detail")), flush=True)
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
