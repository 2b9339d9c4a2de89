#!/usr/bin/env bash
# The GPU checks recorded in benchmarks/RESULTS-gpu.md, as run on an H100 through a bare machine with
# torch/transformers/accelerate preinstalled and bitsandbytes + gguf carried as wheels in .whl/.
# Usage: bash benchmarks/gpu_session.sh PART OUTDIR   (PART = 1-3; 4: kernel-time cost + time to verdict; 5: the same from a checkpoint + GPU tests;
#   6: time to verdict, synthetic and from a checkpoint, then the windowed kernel time's cost (ANCHOR_JSON=the anchor's ob_summary.json);
#   7: issue 20's baseline-gate trials on the GPU (A/A and +5% GPU-side work, separate processes), storage kept in OUTDIR/store.tgz;
#   8: the A/A across calls against part 7's storage (STORE_TGZ=its store.tgz), then quantperf ab with +15% host-side;
#   9: the anchor, then the plugin's verdict from a real checkpoint and from synthetic weights, same lease
#      (QP_WHEELS=".obwhl/bitsandbytes-*.whl .obwhl/gguf-*.whl", .obwhl and .anchors carried);
#   10: what CUPTI left attached costs (TEARDOWN_CUPTI=0 against the plugin's default), then part 7;
#   11: the plugin's verdict from a real checkpoint first, then the anchor with the rest of the call (.obwhl, .anchors);
#   12: three saves, then GPU-side slowdowns only (--kinds gpuslow), storage kept in OUTDIR/store.tgz;
#   13: quantperf ab with +15% host-side work, one trial, on the GPU;
#   14: CUPTI's first attach: kernel_time_cost on fp16 in two fresh processes, without and with --attach-first, then part 13;
#   15: part 13, then the plugin's verdict on synthetic weights (save only), one call;
#   16: the first full-length run of a process after the plugin's short warm-up, plain against profiled (two processes);
#   17: does the core driving a CUDA decode set its wall clock (benchmarks/core_speed.py), then part 16;
#   18: --quantperf-pin-core=auto against unpinned: the spread between pytest processes (three saves and four
#       A/A compares each); for quantperf ab pinned, part 13 with PYTEST_ADDOPTS=--quantperf-pin-core=auto;
#   19: benchmarks/core_speed.py alone (per-core decode latency, the probe's pick against it);
#   each part fits one 600 s call)
set -uo pipefail
PART=${1:-1}; OUT=${2:-${OUT:-/tmp/qp-out}}; mkdir -p "$OUT"
WHEELS=${QP_WHEELS:-.whl/*.whl}  # part 9 carries .obwhl (the anchor's wheels, bitsandbytes and gguf among them) instead
if ls $WHEELS >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $WHEELS || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTEST_PLUGINS=pytest_quantperf.plugin QUANTPERF_CACHE=/tmp/qp-cache
export TRANSFORMERS_VERBOSITY=error
run() { local name=$1 limit=$2; shift 2; echo "### $name: $*" | tee -a "$OUT/summary.txt";
        local t=$(date +%s); timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; local rc=$?
        echo "### $name rc=$rc in $(( $(date +%s) - t ))s" | tee -a "$OUT/summary.txt"; tail -n 40 "$OUT/$name.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
python3 -c "import torch, transformers, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'bnb', bitsandbytes.__version__)" | tee -a "$OUT/summary.txt"
if [ "$PART" = 4 ]; then
  # issue 19: what a kernel-time figure costs, then the anchor's work saved and compared (and from a checkpoint)
  run kernel_time_cost 200 python3 benchmarks/kernel_time_cost.py --out "$OUT/kernel_time_cost.json"
  ANCHOR=""; [ -f "$OUT/ob_summary.json" ] && ANCHOR="--anchor-json $OUT/ob_summary.json"
  run ttv 380 python3 benchmarks/time_to_verdict.py $ANCHOR --out "$OUT/ttv"
fi
if [ "$PART" = 6 ]; then
  # issue 19 after the windowed kernel time: its cost on fp16, then the anchor's work (synthetic and from a checkpoint)
  ANCHOR=""; [ -f "${ANCHOR_JSON:-}" ] && ANCHOR="--anchor-json $ANCHOR_JSON"
  run ttv 300 python3 benchmarks/time_to_verdict.py $ANCHOR --out "$OUT/ttv"
  run ttv_ckpt 300 python3 benchmarks/time_to_verdict.py --real-checkpoint $ANCHOR --out "$OUT/ttv_ckpt"
  run kernel_time_cost 90 python3 benchmarks/kernel_time_cost.py --configs fp16 --new-runs 1 --window-runs 3 --out "$OUT/kernel_time_cost.json"
fi
if [ "$PART" = 9 ]; then
  # issue 19: the anchor, then the same work through the plugin while the machine is the same one
  run anchor 345 env OUT="$OUT/ob" OB_BUDGET_S=335 bash .anchors/optimum-benchmark/run_gpu.sh
  rm -rf /tmp/site && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $WHEELS
  run ttv_ckpt 150 python3 benchmarks/time_to_verdict.py --real-checkpoint --runs save --anchor-json "$OUT/ob/ob_summary.json" --out "$OUT/ttv_ckpt"
  run ttv 90 python3 benchmarks/time_to_verdict.py --runs save --anchor-json "$OUT/ob/ob_summary.json" --out "$OUT/ttv"
fi
if [ "$PART" = 11 ]; then
  # issue 19, real checkpoint: ours first so that it always completes; the anchor gets what is left of the call
  T0=$(date +%s)
  run ttv_ckpt 170 python3 benchmarks/time_to_verdict.py --real-checkpoint --runs save --out "$OUT/ttv_ckpt"
  LEFT=$(( ${CALL_S:-585} - ($(date +%s) - T0) ))
  run anchor "$LEFT" env OUT="$OUT/ob" OB_BUDGET_S=$((LEFT - 10)) bash .anchors/optimum-benchmark/run_gpu.sh
fi
if [ "$PART" = 12 ]; then
  run aa_gpuslow $(( ${AA_BUDGET_S:-400} + 60 )) python3 benchmarks/aa_runs.py --device cuda --model synthetic:qwen2.5-1.5b \
      --quant fp16 --new-tokens 16 --max-time 2 --history 3 --trials 10 --kinds gpuslow --budget-s "${AA_BUDGET_S:-400}" \
      --gpu-slowdown ${GPU_SLOWDOWN:-0.175} \
      --store /tmp/qp-store --json "$OUT/aa_gpuslow.json"
  tar czf "$OUT/store.tgz" -C /tmp/qp-store .
fi
if [ "$PART" = 14 ]; then
  run kct_plain 110 python3 benchmarks/kernel_time_cost.py --configs fp16 --plain-runs 2 --window-runs 3 \
      --plain-after 1 --new-runs 0 --out "$OUT/kct_plain.json"
  run kct_attach 110 python3 benchmarks/kernel_time_cost.py --configs fp16 --plain-runs 2 --window-runs 3 \
      --plain-after 1 --new-runs 0 --attach-first --out "$OUT/kct_attach.json"
fi
if [ "$PART" = 13 ] || [ "$PART" = 14 ] || [ "$PART" = 15 ]; then
  run ab_gpu ${AB_LIMIT_S:-560} python3 benchmarks/ab_trials.py --device cuda --model synthetic:qwen2.5-1.5b --quant fp16 \
      --new-tokens 16 --max-time 2 --trials 1 --kinds ${AB_KINDS:-slow} --slowdown ${AB_SLOWDOWN:-0.15} --json "$OUT/ab_gpu.json"
fi
if [ "$PART" = 17 ] || [ "$PART" = 19 ]; then
  run core_speed ${CORE_LIMIT_S:-80} python3 benchmarks/core_speed.py --out "$OUT/core_speed.json"
fi
if [ "$PART" = 16 ] || [ "$PART" = 17 ]; then
  for first in plain window; do
    run kct_first_$first ${KCT_LIMIT_S:-100} python3 benchmarks/kernel_time_cost.py --configs fp16 --short-warmup 2 --first-full $first \
        --plain-runs 2 --window-runs 2 --plain-after 0 --new-runs 0 --out "$OUT/kct_first_$first.json"
  done
fi
if [ "$PART" = 18 ]; then
  for pin in off auto; do
    run aa_pin_$pin 200 env PYTEST_ADDOPTS="--quantperf-pin-core=$pin" python3 benchmarks/aa_runs.py --device cuda \
        --model synthetic:qwen2.5-1.5b --quant fp16 --new-tokens 16 --max-time 2 --history 3 --trials 4 --kinds aa \
        --budget-s 150 --store /tmp/qp-store-$pin --json "$OUT/aa_pin_$pin.json"
  done
fi
if [ "$PART" = 15 ]; then
  run ttv ${TTV_LIMIT_S:-110} python3 benchmarks/time_to_verdict.py --runs save --out "$OUT/ttv"
fi
if [ "$PART" = 10 ]; then
  # issue 19: does the process run slower once CUPTI was attached, kept (TEARDOWN_CUPTI=0) or detached (the plugin's default)?
  run kct_keep 80 env TEARDOWN_CUPTI=0 python3 benchmarks/kernel_time_cost.py --configs fp16 --plain-runs 2 --window-runs 2 \
      --plain-after 2 --new-runs 0 --out "$OUT/kct_keep.json"
  run kct_detach 80 python3 benchmarks/kernel_time_cost.py --configs fp16 --plain-runs 2 --window-runs 2 \
      --plain-after 2 --new-runs 0 --out "$OUT/kct_detach.json"
fi
if [ "$PART" = 7 ] || [ "$PART" = 10 ]; then
  # issue 20 on the GPU: separate pytest processes, 3 saving runs, then A/A and +5% GPU-side trials interleaved
  B=${AA_BUDGET_S:-470}; [ "$PART" = 10 ] && B=${AA_BUDGET_S:-330}
  run aa_gpu $((B + 50)) python3 benchmarks/aa_runs.py --device cuda --model synthetic:qwen2.5-1.5b --quant fp16 \
      --new-tokens 16 --max-time 2 --history 3 --trials 10 --kinds gpuslow,aa --budget-s "$B" --store /tmp/qp-store --json "$OUT/aa_gpu.json"
  tar czf "$OUT/store.tgz" -C /tmp/qp-store .
fi
if [ "$PART" = 8 ]; then
  # the A/A across two calls (part 7 saved the baseline on another machine of this kind), then quantperf ab
  mkdir -p /tmp/qp-store && tar xzf "$STORE_TGZ" -C /tmp/qp-store
  run aa_calls 240 python3 benchmarks/aa_runs.py --device cuda --model synthetic:qwen2.5-1.5b --quant fp16 \
      --new-tokens 16 --max-time 2 --history 0 --trials 10 --kinds aa --budget-s 200 --store /tmp/qp-store --json "$OUT/aa_calls.json"
  run ab_gpu 300 python3 benchmarks/ab_trials.py --device cuda --model synthetic:qwen2.5-1.5b --quant fp16 \
      --new-tokens 16 --max-time 2 --trials 1 --kinds ${AB_KINDS:-slow} --json "$OUT/ab_gpu.json"
fi
if [ "$PART" = 5 ]; then
  ANCHOR=""; [ -f "$OUT/ob_summary.json" ] && ANCHOR="--anchor-json $OUT/ob_summary.json"
  run ttv_ckpt 420 python3 benchmarks/time_to_verdict.py --real-checkpoint $ANCHOR --out "$OUT/ttv_ckpt"
  run gpu_tests 160 python3 -m pytest tests/test_gpu.py tests/test_measure.py -m gpu -q -p no:cacheprovider
fi
if [ "$PART" = 1 ]; then
  run ttv 400 python3 benchmarks/time_to_verdict.py --out "$OUT/ttv"
  run noise_gpu 330 python3 benchmarks/noise.py --device cuda --model synthetic:qwen2.5-1.5b --quant fp16 --trials 10 --new-tokens 8 --max-time 2 --json "$OUT/noise_gpu.json"
elif [ "$PART" = 3 ]; then
  run ttv16 300 python3 benchmarks/time_to_verdict.py --new-tokens 16 --out "$OUT/ttv16"
  run gpu_tests 100 python3 -m pytest tests/test_gpu.py tests/test_fit.py -m gpu -q -p no:cacheprovider
fi
if [ "$PART" = 3 ]; then
  run xdist_shared_gpu 150 python3 -m pytest benchmarks/gpu_scale_suite.py -q -s -p no:cacheprovider -n 2 --quantperf-gpus=0,0 --quantperf-max-time=3 --quantperf-json="$OUT/xdist.json"
  run serial 150 python3 -m pytest benchmarks/gpu_scale_suite.py -q -s -p no:cacheprovider --quantperf-max-time=3 --quantperf-json="$OUT/serial.json"
  run device_map 150 python3 benchmarks/device_map_check.py
fi
if [ "$PART" = 2 ]; then
  QP_PER_GPU=6GiB run device_map 150 python3 benchmarks/device_map_check.py
  run xdist_shared_gpu 110 python3 -m pytest benchmarks/gpu_scale_suite.py -q -s -p no:cacheprovider -n 2 --quantperf-gpus=0,0 -k "fp16 or nf4-dq" --quantperf-max-time=2 --quantperf-json="$OUT/xdist.json"
  run fp16_vs_4bit 110 python3 -m pytest example_suites/fp16_vs_4bit -q -s -p no:cacheprovider --quantperf-max-time=2 --quantperf-json="$OUT/fp16_vs_4bit.json"
  run nf4_options 120 python3 -m pytest example_suites/nf4_options -q -s -p no:cacheprovider --quantperf-max-time=2
  run quant_matrix 90 python3 -m pytest example_suites/quant_matrix -q -s -p no:cacheprovider --quantperf-max-time=2 -x --matrix-csv="$OUT/quant_matrix.csv"
fi
