#!/usr/bin/env bash
# Work per token on CUDA (issue "Count the work"): separate pytest processes on a synthetic model in fp16,
# one saved baseline, two unchanged compares and one with torch.cuda.synchronize() added per decode step
# (a logits processor). Prints each run's work figures and the work verdicts; JSON reports into OUTDIR.
# Usage: bash benchmarks/gpu_work.sh OUTDIR   (bitsandbytes and gguf carried as wheels in .whl/)
set -uo pipefail
OUT=${1:-${OUT:-/tmp/qp-out}}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTEST_PLUGINS=pytest_quantperf.plugin QUANTPERF_CACHE=/tmp/qp-cache TRANSFORMERS_VERBOSITY=error
MODEL=${QP_MODEL:-synthetic:qwen2.5-1.5b}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/summary.txt"
S=/tmp/qp-suite; rm -rf $S; mkdir -p $S
cat > $S/test_gpu_work.py <<PY
import os

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class SyncEachStep(LogitsProcessor):
    def __call__(self, input_ids, scores):
        torch.cuda.synchronize()
        return scores


def test_decode(quant_model, quantperf):
    lm = quant_model("$MODEL", quant="fp16")
    kw = {"logits_processor": LogitsProcessorList([SyncEachStep()])} if os.environ.get("INJECT_SYNC") else {}
    quantperf.generate(lm, "Who invented the light bulb?", max_new_tokens=32, **kw)
PY
cd $S
P="python3 -m pytest -q -p no:cacheprovider --quantperf-repeat=5 --quantperf-warmup=1"
t=$(date +%s); $P --quantperf-save=main --quantperf-json=$OUT/save.json > $OUT/save.txt 2>&1; echo "save rc=$? $(( $(date +%s)-t ))s" | tee -a $OUT/summary.txt
for i in 1 2; do
  t=$(date +%s); $P --quantperf-baseline=main --quantperf-json=$OUT/aa$i.json > $OUT/aa$i.txt 2>&1; echo "aa$i rc=$? $(( $(date +%s)-t ))s" | tee -a $OUT/summary.txt
done
t=$(date +%s); INJECT_SYNC=1 $P --quantperf-baseline=main --quantperf-json=$OUT/sync.json > $OUT/sync.txt 2>&1; echo "sync rc=$? $(( $(date +%s)-t ))s" | tee -a $OUT/summary.txt
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, os
out = sys.argv[1]
for name in ("save", "aa1", "aa2", "sync"):
    p = os.path.join(out, name + ".json")
    if not os.path.exists(p):
        print(name, "no report"); continue
    d = json.load(open(p))
    t = next(iter(d["tests"].values()))
    m = t["metrics"]
    figs = {k: m[k]["value"] for k in ("ops_per_token", "py_calls_per_token", "syncs_per_token", "launches_per_token",
                                       "prompt_tokens", "latency_ms", "gpu_ms_per_token") if k in m}
    print(name, json.dumps(figs))
    for v in t.get("verdicts", []):
        if v.get("source") != "budget" and v.get("kind") in ("work", "gpu_timing", "timing") and v["metric"] in (
                "ops_per_token", "py_calls_per_token", "syncs_per_token", "launches_per_token", "prompt_tokens",
                "latency_ms", "gpu_ms_per_token"):
            print("   ", v["status"], "gating" if v["gating"] else "-", v["message"][:400])
    note = (t.get("models") or {})
    for lab, mm in note.items():
        if mm.get("work"):
            print("   work note:", lab, mm["work"])
PY
tail -n 30 $OUT/sync.txt
