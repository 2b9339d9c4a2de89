"""Four quant configs of synthetic:mistral-7b, for scale-out runs (-n 0 vs -n 2, --quantperf-gpus).

Each test records which process and which GPU it ran on (read from NVML), so a run shows the spread.
"""
import os

import pytest


@pytest.mark.parametrize("quant, dq", [("fp16", None), ("nf4", False), ("nf4", True), ("int8", None)],
                         ids=["fp16", "nf4", "nf4-dq", "int8"])
@pytest.mark.quant_budget(vram_mb=20000)
def test_config(quant_model, quantperf, quant, dq):
    lm = quant_model("synthetic:mistral-7b", quant=quant, double_quant=dq)
    quantperf.generate(lm, "x" * 32, max_new_tokens=32)
    quantperf.record("pid", os.getpid(), better="lower")
    import pynvml

    pynvml.nvmlInit()
    used = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
            if p.pid == os.getpid():
                used.append(i)
    print(f"\n{quant}{'+dq' if dq else ''}: pid {os.getpid()} worker {os.environ.get('PYTEST_XDIST_WORKER')} "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')} NVML GPUs in use: {used}")
