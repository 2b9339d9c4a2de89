"""One model spread with accelerate's device_map: part on GPU 0, the rest on the CPU (or a second GPU).

Prints per-device weight bytes, the per-GPU peaks the plugin reports, their sum against the footprint,
and tokens/s against the same model on one GPU.
"""
import json
import os
import sys
import tempfile
import textwrap

import pytest

SUITE = '''
import json, os, pytest

@pytest.mark.parametrize("placement", ["one_gpu", "spread"])
def test_spread(quant_model, quantperf, placement):
    import torch
    kw = {{}}
    if placement == "spread":
        n = torch.cuda.device_count()
        mm = {{i: "{per_gpu}" for i in range(n)}}
        mm["cpu"] = "100GiB"
        kw = dict(device_map="auto", max_memory=mm)
    lm = quant_model("{model}", quant="{quant}", **kw)
    quantperf.generate(lm, "x" * 32, max_new_tokens=16)
    print("\\nSUMMARY", placement, json.dumps(lm.summary()["per_device_mb"]), lm.footprint_mb)
'''

if __name__ == "__main__":
    d = tempfile.mkdtemp()
    per_gpu = os.environ.get("QP_PER_GPU", "8GiB")
    model = os.environ.get("QP_MODEL", "synthetic:mistral-7b")
    quant = os.environ.get("QP_QUANT", "fp16")
    open(os.path.join(d, "test_dm.py"), "w").write(textwrap.dedent(SUITE.format(per_gpu=per_gpu, model=model, quant=quant)))
    js = os.path.join(d, "out.json")
    rc = pytest.main([d, "-q", "-s", "-p", "no:cacheprovider", "--quantperf-max-time=4", f"--quantperf-json={js}"])
    doc = json.load(open(js))
    for nid, t in doc["tests"].items():
        m = t["metrics"]
        per = m.get("vram_mb", {}).get("extra", {}).get("per_device_peak_mb")
        print(nid, "footprint", round(m["footprint_mb"]["value"]), "MiB; vram peak total",
              round(m.get("vram_mb", {}).get("value", 0)), "per device", per,
              "tok/s", round(m["tokens_per_s"]["value"], 1), "split", [v.get("per_device_mb") for v in t["models"].values()])
    sys.exit(int(rc))
