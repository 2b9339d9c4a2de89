"""Time to a verdict: the anchor's work, from nothing to pass/fail, through pytest itself, twice.

The work is optimum-benchmark's anchor run (../shared/anchors/optimum-benchmark): Mistral-7B shapes
with random weights (``synthetic:mistral-7b``), batch 1, 32 prompt tokens, 128 new tokens, greedy;
fp16, nf4 with double quant (fp16 compute), int8. The script writes that as a three-test suite with
budgets (vram, speed, GPU kernel time, energy), the HTML and JSON reports on, and runs it as two
pytest subprocesses: the first saves a baseline, the second compares with it. For each run it
prints the seconds of every phase (start-up, load, warm-up, profiled, timed, reporting), each
config's figures, the verdicts and the whole wall time from process start to exit.

``--anchor-json ob_summary.json`` (from the anchor's run_gpu.sh, same lease) prints the anchor's
whole script wall and the ratio. ``--real-checkpoint`` writes a fp16 safetensors folder of the
model's shapes once (random weights, ``save_pretrained``, with a byte-level tokenizer) under
/tmp and loads nf4 and int8 from it as a user's model would be; fp16 stays synthetic, as in the
anchor, whose fp16 uses no weights either.

    PYTHONPATH=src python benchmarks/time_to_verdict.py [--anchor-json PATH] [--real-checkpoint] [--out DIR]
    PYTHONPATH=src python benchmarks/time_to_verdict.py --model synthetic:smollm2-135m --device cpu --new-tokens 16
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

SUITE = '''
import json
import os
import time

import pytest

CONFIGS = {configs!r}


@pytest.mark.parametrize("cid, model, quant, dq, cdt", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.quant_budget({budget})
def test_config(quant_model, quantperf, cid, model, quant, dq, cdt):
    t0 = time.time()
    lm = quant_model(model, quant=quant, double_quant=dq, compute_dtype=cdt)
    t1 = time.time()
    res = quantperf.generate(lm, "x" * {prompt}, max_new_tokens={new})
    t2 = time.time()
    with open(os.environ["QP_TTV_PHASES"], "a") as f:
        f.write(json.dumps({{"ev": "test", "config": cid, "fixture_s": t1 - t0, "generate_s": t2 - t1,
                            "load_s": lm.load_s, **res.costs()}}) + "\\n")
'''

CONFTEST = '''
import json
import os
import time


def _note(ev, **kw):
    with open(os.environ["QP_TTV_PHASES"], "a") as f:
        f.write(json.dumps({"ev": ev, "t": time.time(), **kw}) + "\\n")


def pytest_sessionstart(session):
    _note("sessionstart")


def pytest_runtest_logstart(nodeid, location):
    _note("start", nodeid=nodeid)


def pytest_runtest_logfinish(nodeid, location):
    _note("finish", nodeid=nodeid)
'''

WRITE_CKPT = r'''
import sys, time
t0 = time.time()
import torch
from tokenizers import Tokenizer, decoders, models as tm, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from pytest_quantperf.models import synthetic_config
preset, out, device = sys.argv[1:4]
torch.manual_seed(0)
with torch.device(device):
    m = AutoModelForCausalLM.from_config(synthetic_config(preset), dtype=torch.float16)
m.save_pretrained(out, max_shard_size="20GB")
# a byte-level tokenizer: one token per byte, so "x" * 32 is 32 prompt tokens as with synthetic models
alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(alphabet)}}
tok = Tokenizer(tm.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                        pad_token="</s>").save_pretrained(out)
print(f"wrote {out} in {time.time() - t0:.1f} s")
'''


def plugin_args() -> list[str]:
    """``-p pytest_quantperf.plugin`` where the package runs from a checkout (no entry point)."""
    from importlib.metadata import entry_points

    if any(ep.name == "quantperf" for ep in entry_points(group="pytest11")):
        return []
    return ["-p", "pytest_quantperf.plugin"]


def write_checkpoint(preset: str, device: str) -> tuple[str, float | None]:
    """The fp16 folder for ``preset`` under /tmp, written once; (path, seconds it took or None if reused)."""
    name = preset.split(":", 1)[1]
    path = os.path.join(tempfile.gettempdir(), f"qp-ttv-ckpt-{name}")
    if os.path.exists(os.path.join(path, "config.json")) and os.path.exists(os.path.join(path, "tokenizer.json")):
        return path, None
    t0 = time.time()
    subprocess.run([sys.executable, "-c", WRITE_CKPT, preset, path, device], check=True)
    return path, time.time() - t0


def run_suite(suite_dir: str, label: str, extra: list[str], out: str) -> dict:
    phases = os.path.join(out, f"{label}.phases.jsonl")
    js = os.path.join(out, f"{label}.json")
    for p in (phases, js):
        if os.path.exists(p):
            os.remove(p)
    env = dict(os.environ, QP_TTV_PHASES=phases)
    cmd = [sys.executable, "-m", "pytest", suite_dir, "-q", "-p", "no:cacheprovider", "--rootdir", suite_dir,
           *plugin_args(), f"--quantperf-json={js}", f"--quantperf-html={os.path.join(out, label + '.html')}",
           *extra]
    print(f"\n### {label}: {' '.join(cmd[3:])}", flush=True)
    t0 = time.time()
    rc = subprocess.run(cmd, env=env).returncode
    t_exit = time.time()
    evs = []
    if os.path.exists(phases):
        with open(phases) as f:
            evs = [json.loads(line) for line in f if line.strip()]
    doc = json.load(open(js)) if os.path.exists(js) else {}
    return {"label": label, "rc": rc, "t_spawn": t0, "t_exit": t_exit, "events": evs, "doc": doc}


def phase_table(r: dict) -> dict:
    """Seconds per phase of one run, from the run JSON where it has them, else from the suite's notes."""
    evs, doc = r["events"], r["doc"]
    starts = [e["t"] for e in evs if e["ev"] == "start"]
    finishes = [e["t"] for e in evs if e["ev"] == "finish"]
    tests = [e for e in evs if e["ev"] == "test"]
    wall = r["t_exit"] - r["t_spawn"]
    ph = {"wall": wall}
    ph["start-up"] = (min(starts) - r["t_spawn"]) if starts else float("nan")
    ph["reporting"] = (r["t_exit"] - max(finishes)) if finishes else float("nan")
    in_tests = sum(f - s for s, f in zip(sorted(starts), sorted(finishes)))
    # load time: the run JSON's load_s metrics; warm-up/profiled/timed: the metrics' extra when the
    # recorder stores the measurement's bill there, else the suite's own notes (GenerateResult.costs)
    load = 0.0
    from_json = {"warmup_seconds": 0.0, "profiled_seconds": 0.0, "timed_seconds": 0.0}
    have_json = bool(doc.get("tests"))
    for t in (doc.get("tests") or {}).values():
        m = t.get("metrics", {})
        load += sum(v["value"] for k, v in m.items() if k.split("[")[0].endswith("load_s"))
        ex = (m.get("latency_ms") or m.get("ref.latency_ms") or {}).get("extra", {})
        for k in from_json:
            if k in ex:
                from_json[k] += float(ex[k])
            else:
                have_json = False
    if not doc.get("tests"):
        load = sum(t["load_s"] for t in tests)
    src = from_json if have_json else {k: sum(t.get(k, 0.0) for t in tests) for k in from_json}
    ph["load"] = load
    ph["warm-up"] = src["warmup_seconds"]
    ph["profiled"] = src["profiled_seconds"]
    ph["timed"] = src["timed_seconds"]
    ph["other in tests"] = in_tests - load - sum(src.values())
    # of that: the fixture's time outside the model's own load (the first one imports torch and
    # transformers and starts CUDA) and what the test spent outside the fixture and the generate
    ph["fixture outside load"] = sum(t["fixture_s"] - t["load_s"] for t in tests)
    ph["outside fixture and generate"] = in_tests - sum(t["fixture_s"] + t["generate_s"] for t in tests)
    # each profiled run's excess over one timed run of the same config: an upper bound on kernel
    # time's own cost, since the profiled run is also the config's first full-length generate, which
    # a plan without it still pays (H200, fp16 7B: the first full-length run of a process took 10.13 s
    # plain and 9.65 s profiled, later ones 3-5 s; benchmarks/RESULTS-gpu.md)
    ph["profiled excess"] = sum(t["profiled_seconds"] - t["timed_seconds"] / max(t["runs"], 1)
                                for t in tests if t.get("profiled_runs"))
    ph["_source"] = "run JSON" if have_json else "suite notes"
    return ph


def print_run(r: dict) -> None:
    doc = r["doc"]
    env = doc.get("env") or {}
    print(f"\n== {r['label']}: pytest exit code {r['rc']}, on {env.get('gpu') or env.get('cpu') or '?'} ==")
    print(f"{'config':<8} {'load s':>7} {'warm s':>7} {'prof s':>7} {'timed s':>7} {'runs':>4} {'vram MiB':>9} "
          f"{'tok/s':>7} {'gpu ms/tok':>10} {'J/tok':>6} {'n_J':>3}  verdicts")
    notes = {t["config"]: t for t in r["events"] if t["ev"] == "test"}
    for nid, t in (doc.get("tests") or {}).items():
        m = t["metrics"]
        cid = nid.split("[")[-1].rstrip("]") if "[" in nid else nid
        n = notes.get(cid, {})

        def g(k, f="{:.1f}"):
            return f.format(m[k]["value"]) if k in m else "-"
        verdicts = {}
        for v in t.get("verdicts") or []:
            verdicts[v.get("status", "?")] = verdicts.get(v.get("status", "?"), 0) + 1
        nj = len(m.get("energy_j_per_token", {}).get("samples") or []) if "energy_j_per_token" in m else 0
        print(f"{cid:<8} {g('load_s', '{:.2f}'):>7} {n.get('warmup_seconds', float('nan')):>7.2f} "
              f"{n.get('profiled_seconds', float('nan')):>7.2f} {n.get('timed_seconds', float('nan')):>7.2f} "
              f"{n.get('runs', '-'):>4} {g('vram_mb'):>9} {g('tokens_per_s'):>7} {g('gpu_ms_per_token', '{:.3f}'):>10} "
              f"{g('energy_j_per_token', '{:.2f}'):>6} {nj:>3}  "
              + (", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())) or t.get("outcome", "")))
    ph = phase_table(r)
    print("phases (s): " + ", ".join(f"{k} {ph[k]:.1f}" for k in
                                     ("start-up", "load", "warm-up", "profiled", "timed", "other in tests", "reporting"))
          + f"  [measurement split from the {ph['_source']}]")
    print(f"  of other in tests: fixture outside load {ph['fixture outside load']:.1f} (imports, CUDA start), "
          f"outside fixture and generate {ph['outside fixture and generate']:.1f}; "
          f"profiled runs' excess over a timed run {ph['profiled excess']:.1f} "
          f"({100 * ph['profiled excess'] / ph['wall']:.0f}% of the wall; each is also its model's first "
          "full-length generate, cold costs included)")
    print(f"whole wall, process start to exit: {ph['wall']:.1f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="synthetic:mistral-7b")
    ap.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--max-time", default=None, help="--quantperf-max-time for the suite (default: the plugin's)")
    ap.add_argument("--configs", default="fp16,nf4-dq,int8")
    ap.add_argument("--real-checkpoint", action="store_true",
                    help="load nf4 and int8 from a fp16 safetensors folder written once under /tmp")
    ap.add_argument("--anchor-json", default=None, help="optimum-benchmark's ob_summary.json from the same lease")
    ap.add_argument("--runs", default="save,compare", help="save, compare or both (default)")
    ap.add_argument("--out", default=None, help="folder for the JSON and HTML reports and the summary")
    a = ap.parse_args(argv)
    t_script = time.time()
    device = a.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    if not a.model.startswith("synthetic:"):
        print("time_to_verdict: --model must be a synthetic: preset (the suite's prompt is counted in bytes)",
              file=sys.stderr)
        return 2
    ckpt, ckpt_s = (None, None)
    if a.real_checkpoint:
        ckpt, ckpt_s = write_checkpoint(a.model, device)
        print(f"checkpoint {ckpt}: " + (f"written in {ckpt_s:.1f} s" if ckpt_s is not None else "reused"))
    cdt = "float16" if cuda else None
    table = {"fp16": ("fp16" if cuda else "bf16", None, None), "nf4-dq": ("nf4", True, cdt), "int8": ("int8", None, None)}
    configs = []
    for c in [x.strip() for x in a.configs.split(",") if x.strip()]:
        if c not in table:
            print(f"time_to_verdict: unknown config {c!r}; use {', '.join(table)}", file=sys.stderr)
            return 2
        quant, dq, dt = table[c]
        model = ckpt if (ckpt and quant in ("nf4", "int8")) else a.model
        configs.append((c, model, quant, dq, dt))
    budget = ("vram_mb=15000, tokens_per_s=1, gpu_ms_per_token=50, energy_j_per_token=50" if cuda
              else "host_rss_mb=16000, tokens_per_s=0.1")
    out = a.out or tempfile.mkdtemp(prefix="qp-ttv-")
    os.makedirs(out, exist_ok=True)
    suite_dir = tempfile.mkdtemp(prefix="qp-ttv-suite-")
    with open(os.path.join(suite_dir, "test_ttv.py"), "w") as f:
        f.write(textwrap.dedent(SUITE.format(configs=configs, budget=budget, prompt=a.prompt_tokens, new=a.new_tokens)))
    with open(os.path.join(suite_dir, "conftest.py"), "w") as f:
        f.write(CONFTEST)
    common = [f"--quantperf-device={device}", f"--quantperf-storage={os.path.join(out, 'storage')}"]
    if a.max_time:
        common.append(f"--quantperf-max-time={a.max_time}")
    runs = []
    wanted = [x.strip() for x in a.runs.split(",")]
    if "save" in wanted:
        runs.append(run_suite(suite_dir, "save", common + ["--quantperf-save=ttv"], out))
    if "compare" in wanted:
        runs.append(run_suite(suite_dir, "compare", common + ["--quantperf-baseline=ttv"], out))
    print(f"\n======== time to verdict: {a.model}, {', '.join(c[0] for c in configs)}, batch 1, "
          f"{a.prompt_tokens} prompt + {a.new_tokens} new tokens, greedy, on {device}"
          + (f", nf4/int8 from {ckpt}" if ckpt else "") + " ========")
    for r in runs:
        print_run(r)
    anchor = None
    if a.anchor_json:
        anchor = json.load(open(a.anchor_json))
        walls = {w["step"]: w.get("wall_s") for w in anchor.get("walls", [])}
        aw = float(anchor["script_wall_s"])
        print(f"\nanchor (optimum-benchmark): whole script {aw:.1f} s ("
              + ", ".join(f"{k} {v} s" for k, v in walls.items()) + ")")
        for r in runs:
            w = r["t_exit"] - r["t_spawn"]
            extra = f"; with the checkpoint write {aw / (w + ckpt_s):.2f}x" if (ckpt_s and r is runs[0]) else ""
            print(f"  {r['label']}: {w:.1f} s, {aw / w:.2f}x faster than the anchor{extra}")
    summary = {"model": a.model, "device": device, "configs": [c[0] for c in configs], "new_tokens": a.new_tokens,
               "prompt_tokens": a.prompt_tokens, "checkpoint": ckpt, "checkpoint_write_s": ckpt_s,
               "anchor_script_wall_s": anchor and anchor.get("script_wall_s"),
               "runs": [{"label": r["label"], "rc": r["rc"], "phases": phase_table(r)} for r in runs],
               "script_wall_s": time.time() - t_script}
    with open(os.path.join(out, "ttv_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(f"\nreports and ttv_summary.json in {out}; whole script {time.time() - t_script:.1f} s")
    return max((r["rc"] for r in runs), default=0)


if __name__ == "__main__":
    sys.exit(main())
