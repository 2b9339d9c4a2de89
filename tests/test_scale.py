"""Scale-out: pytest-xdist workers, GPU pinning, grouping by model, shared storage, device_map."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pytest_quantperf import scale
from pytest_quantperf.store.storage import Storage

FAST = ("--quantperf-repeat=3", "--quantperf-warmup=1", "-p", "no:cacheprovider")
HAS_CUDA = False
try:  # CUDA present changes what pinning must do; the CPU checks below assume its absence
    import torch

    HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover
    pass


# --------------------------------------------------------------------------- choose_gpu, pure

@pytest.mark.parametrize("worker, visible, gpus, expected", [
    ("gw0", 2, (), 0),
    ("gw1", 2, (), 1),
    ("gw2", 2, (), 0),            # more workers than GPUs: wrap around
    ("gw7", 3, (), 1),
    ("gw0", 1, (), 0),
    ("gw5", 1, (), 0),
    ("gw0", 4, (0, 2, 3), 0),     # --quantperf-gpus=0,2,3
    ("gw1", 4, (0, 2, 3), 2),
    ("gw2", 4, (0, 2, 3), 3),
    ("gw3", 4, (0, 2, 3), 0),
    ("gw0", 1, (0, 0), 0),        # two workers sharing one GPU
    ("gw1", 1, (0, 0), 0),
    ("gw1", 2, (1,), 1),
    ("master", 2, (), 0),         # not an xdist worker id: the first GPU
    (None, 2, (), 0),
])
def test_choose_gpu(worker, visible, gpus, expected):
    assert scale.choose_gpu(worker, visible, gpus) == expected


@pytest.mark.parametrize("gpus", [(), (0,), (0, 0), (1, 2)])
def test_choose_gpu_without_gpus_is_none(gpus):
    assert scale.choose_gpu("gw1", 0, gpus) is None


def test_choose_gpu_names_an_invisible_gpu():
    with pytest.raises(ValueError, match=r"GPU 3 is not visible; this machine shows 2 GPU\(s\), indices 0\.\.1"):
        scale.choose_gpu("gw0", 2, (0, 3))


def test_pin_translates_through_visible_devices(monkeypatch):
    monkeypatch.setattr(scale, "cuda_started", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert scale.pin_worker_gpu("gw1", (), "auto") == "cuda:0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"  # physical GPU 5, seen by this worker as cuda:0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa,GPU-bbb,GPU-ccc")
    assert scale.pin_worker_gpu("gw2", (2, 0), "cuda") == "cuda:0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-ccc"


def test_pin_after_cuda_started_keeps_environment(monkeypatch):
    monkeypatch.setattr(scale, "cuda_started", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert scale.pin_worker_gpu("gw1", (), "auto") == "cuda:1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


@pytest.mark.parametrize("cvd, device", [("0,1", "cpu"), ("0,1", "cuda:1"), ("", "auto"), ("-1", "auto"),
                                         ("-1,0", "auto")])
def test_pin_is_a_no_op(monkeypatch, cvd, device):
    """CPU runs, an explicit cuda:N, and no visible GPU leave the environment alone."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cvd)
    assert scale.pin_worker_gpu("gw1", (0, 0), device) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == cvd


def test_group_for_and_plain_nodeid():
    assert scale.group_for({"quant": "nf4"}) == "quant=nf4"
    assert scale.group_for({"x": 1, "quant": "int8", "model": "default"}) == "model=default,quant=int8"
    assert scale.group_for({"x": 1}) is None
    assert scale.group_for({"model": object()}) is None  # an address differs per worker
    nid = "t.py::test_a[nf4]"
    assert scale.plain_nodeid(nid + "@quant=nf4", ["quant=nf4"]) == nid
    assert scale.plain_nodeid(nid + "@a_b", ["b", "a"]) == nid  # xdist joins sorted names with _
    assert scale.plain_nodeid("t.py::test[a@b]", []) == "t.py::test[a@b]"
    assert scale.plain_nodeid("t.py::test[a@b]", ["c"]) == "t.py::test[a@b]"


# --------------------------------------------------------------------------- through pytest -n 2

RECORD_SUITE = """
import pytest

@pytest.mark.parametrize("k", range(6))
def test_record(quantperf, k):
    quantperf.record("work_ms", [1.0 + k, 1.1 + k, 0.9 + k, 1.05 + k])
    quantperf.record("score", float(k), better="higher")
"""

MODEL_SUITE = """
def test_generate(quant_model, quantperf):
    lm = quant_model("default", quant="bf16")
    r = quantperf.generate(lm, "Hello there", max_new_tokens=4)
    assert r.new_tokens == 4
"""


def _shape(doc: dict) -> dict:
    """What must not depend on -n: test ids, metric names and their sample counts."""
    return {nid: {name: len(m.get("samples") or []) for name, m in t["metrics"].items()}
            for nid, t in doc["tests"].items()}


def test_xdist_run_saves_the_same_baseline_as_a_serial_run(pytester):
    pytester.makepyfile(test_rec=RECORD_SUITE, test_model=MODEL_SUITE)
    par = pytester.runpytest_subprocess(*FAST, "-n", "2", "--quantperf-save=x")
    par.assert_outcomes(passed=7)
    ser = pytester.runpytest_subprocess(*FAST, "-n", "0", "--quantperf-save=y")
    ser.assert_outcomes(passed=7)
    st = Storage(str(pytester.path / ".quantperf"))
    x, _ = st.load("x")
    y, _ = st.load("y")
    assert _shape(x) == _shape(y)
    assert len(x["tests"]) == 7
    gen = x["tests"]["test_model.py::test_generate"]["metrics"]
    assert len(gen["latency_ms"]["samples"]) == 3 and gen["tokens_per_s"]["value"] > 0  # real figures
    assert x["tests"]["test_rec.py::test_record[5]"]["metrics"]["work_ms"]["samples"] == [6.0, 6.1, 5.9, 6.05]
    # only the controller writes: one history entry per run, one baseline per name
    assert [h["name"] for h in st.history("x")] == ["x"]
    assert [h["name"] for h in st.history("y")] == ["y"]
    assert sorted(b["name"] for b in st.list()) == ["x", "y"]


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU path: pinning must do nothing without CUDA")
def test_pinning_is_a_no_op_without_cuda(pytester, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makepyfile("""
        import os, json, pytest

        @pytest.mark.parametrize("k", range(4))
        def test_where(request, k):
            from pytest_quantperf.plugin import SESSION_KEY
            qs = request.config.stash[SESSION_KEY]
            with open(f"where-{k}.json", "w") as f:
                json.dump({"worker": os.environ.get("PYTEST_XDIST_WORKER"),
                           "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
                           "device": qs.device, "role": qs.role}, f)
        """)
    # a GPU list too: without CUDA it must not be turned into CUDA_VISIBLE_DEVICES=0
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--quantperf-gpus=0,0")
    r.assert_outcomes(passed=4)
    seen = [json.loads((pytester.path / f"where-{k}.json").read_text()) for k in range(4)]
    assert {s["worker"] for s in seen} <= {"gw0", "gw1"}
    assert all(s["cvd"] is None and s["device"] == "cpu" and s["role"] == "worker" for s in seen)


GROUP_SUITE = """
import os, pytest

@pytest.mark.parametrize("quant", ["nf4", "int8", "fp4"])
def test_speed(quant, quantperf):
    quantperf.record("worker_no", float(os.environ["PYTEST_XDIST_WORKER"][2:]))

@pytest.mark.parametrize("quant", ["nf4", "int8", "fp4"])
def test_quality(quant, quantperf):
    quantperf.record("worker_no", float(os.environ["PYTEST_XDIST_WORKER"][2:]))

@pytest.mark.parametrize("quant", ["nf4", "int8", "fp4"])
def test_memory(quant, quantperf):
    quantperf.record("worker_no", float(os.environ["PYTEST_XDIST_WORKER"][2:]))
"""


def test_loadgroup_keeps_one_quant_on_one_worker(pytester):
    pytester.makepyfile(test_groups=GROUP_SUITE)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
                                      "--quantperf-save=g", "-v")
    r.assert_outcomes(passed=9)
    r.stdout.fnmatch_lines(["*PASSED test_groups.py::test_speed?nf4?@quant=nf4*"])  # xdist saw our group
    doc, _ = Storage(str(pytester.path / ".quantperf")).load("g")
    # stored under the plain ids of a serial run, not xdist's "...@quant=nf4"
    assert sorted(doc["tests"]) == sorted(f"test_groups.py::test_{t}[{q}]" for t in ("speed", "quality", "memory")
                                          for q in ("nf4", "int8", "fp4"))
    worker = {nid: t["metrics"]["worker_no"]["value"] for nid, t in doc["tests"].items()}
    for q in ("nf4", "int8", "fp4"):
        on = {worker[f"test_groups.py::test_{t}[{q}]"] for t in ("speed", "quality", "memory")}
        assert len(on) == 1, f"{q} ran on workers {on}"
    assert len(set(worker.values())) == 2  # and the groups are spread over both workers


# --------------------------------------------------------------------------- two shards, one storage

def test_concurrent_shards_saving_one_name_lose_nothing(pytester, tmp_path):
    shared = tmp_path / "shared-storage"
    for shard in range(2):
        pytester.makepyfile(**{f"test_shard{shard}": f"""
            import pytest

            @pytest.mark.parametrize("k", range(5))
            def test_s{shard}(quantperf, k):
                quantperf.record("work_ms", [1.0, 1.1, 0.9])
            """})
    procs = [subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"test_shard{shard}.py",
                               "--quantperf-save=main", f"--quantperf-storage={shared}"],
                              cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for shard in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    st = Storage(str(shared))
    doc, _ = st.load("main")
    assert sorted(doc["tests"]) == sorted(f"test_shard{s}.py::test_s{s}[{k}]" for s in range(2) for k in range(5))
    hist = st.history("main")
    assert len(hist) == 2
    assert sorted(len(h["tests"]) for h in hist) == [5, 5]


# --------------------------------------------------------------------------- device_map through the plugin

def test_device_map_auto_loads_and_generates_on_cpu(pytester):
    pytester.makepyfile("""
        def test_spread(quant_model, quantperf):
            lm = quant_model("default", quant="fp32", device_map="auto", max_memory={"cpu": "2GiB"})
            assert lm.spec.label == "default/fp32,device_map,max_memory"
            assert {str(p.device) for p in lm.model.parameters()} == {"cpu"}
            r = quantperf.generate(lm, "Hello", max_new_tokens=4)
            assert r.new_tokens == 4 and not r.per_device_peak_mb
            assert "vram_mb" not in quantperf.results      # no GPU memory is claimed on the CPU
            assert 400 < lm.footprint_mb < 700              # 135M params in fp32
        """)
    r = pytester.runpytest_subprocess(*FAST, "--quantperf-json=out.json")
    r.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "out.json").read_text())
    t = doc["tests"]["test_device_map_auto_loads_and_generates_on_cpu.py::test_spread"]
    assert t["metrics"]["tokens_per_s"]["value"] > 0
    assert "vram_mb" not in t["metrics"]
