"""Work per token through the plugin: one saved baseline, separate pytest processes, changes named.

One small suite on the default model (nf4, bf16 compute, CPU), one generate of ``--new-tokens``.
One saving run (``--quantperf-save=main``), then, each in a fresh pytest process comparing with
``--quantperf-baseline=main``, interleaved trial by trial:

* ``aa``: unchanged, the host as it is;
* ``busy``: unchanged, beside one process spinning on a core (``python -c "while True: pass"``);
* ``sync``: an extra host sync per decode step (a forward pre-hook reading ``input_ids[0, -1].item()``);
* ``processor``: a Python logits processor (a loop over the sequence's tokens) passed to
  ``quantperf.generate(..., logits_processor=...)``;
* ``fp32``: the nf4 compute dtype switched to fp32 (``compute_dtype="fp32"``) from the bf16 every
  other run names (fp32 is the CPU's default, so the unchanged runs name bf16);
* ``prompt``: a tokenizer change that makes the same prompt longer (its post-processor now puts
  the BOS token in front, as a tokenizer update that starts adding one does);
* ``bnb``: the unchanged suite under another bitsandbytes (``--bnb-python``: an interpreter whose
  environment differs only there, e.g. a venv made with ``--system-site-packages`` holding
  ``bitsandbytes==0.48.2``).

Per trial it prints the exit status, each work figure's change against the baseline, whether it
is beyond the figure's default tolerance (the catalogue's, read from the plugin), and the largest
changes by name. A change is caught when at least one work figure moves beyond its tolerance; an
unchanged run must move none. Then the counting run's cost: one plain generate, one counted
whole and one counted in a window (``work_count``), median of 3 each, interleaved, in this process::

    python benchmarks/work_counts.py --trials 2
    python benchmarks/work_counts.py --trials 0 --cost-only     # only the cost
    python benchmarks/work_counts.py --trials 10 --kinds bnb --bnb-python /tmp/venv-bnb048/bin/python
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
import os

from transformers import LogitsProcessor, LogitsProcessorList

CHANGE = os.environ.get("QP_CHANGE", "")


class Loop(LogitsProcessor):
    """A Python loop over the sequence's tokens, as teams write them."""

    def __call__(self, input_ids, scores):
        for t in input_ids[0]:
            scores[0, int(t) % scores.shape[-1]] -= 0.0
        return scores


def test_generate(quant_model, quantperf):
    # bf16 compute named: fp32 is the CPU's default compute dtype, so the change must move away from it
    lm = quant_model("default", quant={quant!r}, compute_dtype="fp32" if CHANGE == "fp32" else "bf16")
    if CHANGE == "sync":
        def read_back(module, args, kwargs):
            ids = kwargs.get("input_ids")
            if ids is not None:
                ids[0, -1].item()
        lm.model.register_forward_pre_hook(read_back, with_kwargs=True)
    if CHANGE == "prompt":
        from tokenizers import processors
        tok = lm.tokenizer
        bos = tok.bos_token or tok.eos_token
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{{bos}} $A", pair=f"{{bos}} $A $B", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))])
    kw = {{"logits_processor": LogitsProcessorList([Loop()])}} if CHANGE == "processor" else {{}}
    quantperf.generate(lm, "The capital of France is", max_new_tokens={new}, **kw)
'''

FIGURES = ("ops_per_token", "py_calls_per_token", "syncs_per_token", "launches_per_token", "prompt_tokens")
CHANGES = ("sync", "processor", "fp32", "prompt")


def work_of(doc: dict) -> dict[str, dict]:
    t = next(iter(doc["tests"].values()))
    return {k: m for k, m in t["metrics"].items() if k in FIGURES}


def run_pytest(suite: str, args: list[str], env: dict[str, str], out_json: str,
               python: str = sys.executable) -> dict:
    t0 = time.time()
    p = subprocess.run([python, "-m", "pytest", suite, "-q", "-p", "no:cacheprovider",
                        f"--quantperf-json={out_json}", *args], env=env, capture_output=True, text=True)
    res: dict = {"rc": p.returncode, "wall_s": time.time() - t0}
    try:
        doc = json.load(open(out_json))
        res["work"] = work_of(doc)
        t = next(iter(doc["tests"].values()))
        res["latency_ms"] = (t["metrics"].get("latency_ms") or {}).get("value")
        # what this process' counting run cost, beside its timed run (warm only with --warmup 1 or more)
        res["count_s"] = (((t["metrics"].get("ops_per_token") or {}).get("extra") or {}).get("cost") or {}).get("seconds")
        res["verdicts"] = {v["metric"]: v["status"] for v in t.get("verdicts", [])
                           if v.get("source") == "baseline" and v["metric"] in FIGURES}
    except Exception as e:  # noqa: BLE001 - a trial that wrote no report is reported as such
        res["error"] = f"{type(e).__name__}: {e}; {p.stdout[-600:]}"
    return res


def diff(base: dict[str, dict], cur: dict[str, dict]) -> tuple[bool, list[str]]:
    """(beyond a tolerance on some figure, one line per figure that moved)."""
    from pytest_quantperf.results import METRICS
    from pytest_quantperf.verdicts.tolerance import parse_tolerance
    from pytest_quantperf.measure.work import describe_changes

    caught = False
    lines = []
    for name in FIGURES:
        b, c = base.get(name), cur.get(name)
        if b is None and c is None:
            continue
        if b is None or c is None:
            lines.append(f"  {name}: {'new' if b is None else 'gone'}")
            caught = True
            continue
        tol = parse_tolerance(METRICS[name].tolerance)
        beyond = tol.exceeded(b["value"], c["value"])
        caught |= beyond
        if b["value"] == c["value"] and b["extra"].get("by_name") == c["extra"].get("by_name"):
            continue
        rel = (c["value"] - b["value"]) / b["value"] * 100 if b["value"] else float("inf")
        by = describe_changes(b["extra"], c["extra"], name) if "by_name" in b["extra"] else ""
        lines.append(f"  {name}: {b['value']:.6g} -> {c['value']:.6g} ({c['value'] - b['value']:+.6g}, {rel:+.3f}%; "
                     f"tolerance {tol}: {'BEYOND' if beyond else 'within'}){'; ' + by if by else ''}")
    return caught, lines


def cost(quant: str, new_tokens: int, reps: int = 3) -> None:
    """The counting run against one plain generate of the same length, interleaved, median of ``reps``."""
    from pytest_quantperf.backends import backend_for
    from pytest_quantperf.models import load, make_spec
    from pytest_quantperf.measure.work_count import count_work

    lm = load(make_spec("default", quant, device="cpu"))
    b = backend_for(lm)
    p = b.prepare(["The capital of France is"])
    b.run(p, 4)
    b.run(p, new_tokens)
    t: dict[str, list[float]] = {"plain": [], "whole": [], "window": []}
    for _ in range(reps):
        for k in t:
            t0 = time.perf_counter()
            if k == "plain":
                b.run(p, new_tokens)
            else:
                count_work(b, p, new_tokens, window=0 if k == "whole" else 8)
            t[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"\n== cost, {quant}, {new_tokens} new tokens, median of {reps} interleaved, this process ==")
    for k in t:
        print(f"{k:6}: {med[k]:.3f} s ({med[k] / med['plain']:.2f}x plain)  runs {[round(x, 3) for x in t[k]]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quant", default="nf4")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--trials", type=int, default=2, help="trials per kind")
    ap.add_argument("--aa-trials", type=int, default=0,
                    help="trials of the unchanged kinds (aa, busy) when more than --trials")
    ap.add_argument("--warmup", type=int, default=1, help="--quantperf-warmup of every run (0: shortest runs)")
    ap.add_argument("--kinds", default="aa,busy," + ",".join(CHANGES))
    ap.add_argument("--cost-only", action="store_true")
    ap.add_argument("--no-cost", action="store_true", help="skip the cost measurement at the end")
    ap.add_argument("--json", default=None)
    ap.add_argument("--bnb-python", default=None,
                    help="the interpreter of the 'bnb' kind (another bitsandbytes, all else the same)")
    ap.add_argument("--budget-s", type=float, default=None, help="start no further trial round after this many seconds")
    a = ap.parse_args()
    if not a.cost_only:
        root = tempfile.mkdtemp(prefix="qp-work-")
        suite = os.path.join(root, "test_work_suite.py")
        with open(suite, "w") as f:
            f.write(textwrap.dedent(SUITE.format(quant=a.quant, new=a.new_tokens)))
        # speed is not what is measured here: one timed run (and --warmup warm-ups) keeps each process short
        common = ["--quantperf-device=cpu", f"--quantperf-storage={os.path.join(root, 'store')}",
                  "--quantperf-repeat=1", f"--quantperf-warmup={a.warmup}"]
        env = dict(os.environ, QP_CHANGE="")
        print(f"suite {suite}: default {a.quant} on the CPU, {a.new_tokens} new tokens")
        t_start = time.time()
        r = run_pytest(suite, common + ["--quantperf-save=main"], env, os.path.join(root, "save.json"))
        print(f"save: rc={r['rc']} {r['wall_s']:.0f} s; work {({k: m['value'] for k, m in r.get('work', {}).items()})}"
              + (f"; {r['error']}" if "error" in r else ""), flush=True)
        base = r.get("work") or {}
        table: dict[str, list[dict]] = {}
        kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
        if "bnb" in kinds and not a.bnb_python:
            ap.error("the bnb kind needs --bnb-python")
        for trial in range(max(a.trials, a.aa_trials)):
            if a.budget_s and time.time() - t_start > a.budget_s:
                print(f"budget of {a.budget_s:.0f} s spent: {trial} trials per kind run", flush=True)
                break
            for kind in kinds:  # interleaved: the host's drift hits every kind alike
                if trial >= a.trials and kind not in ("aa", "busy"):
                    continue
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if kind == "busy" else None
                try:
                    r = run_pytest(suite, common + ["--quantperf-baseline=main"],
                                   dict(env, QP_CHANGE=kind if kind in CHANGES else ""),
                                   os.path.join(root, f"{kind}{trial}.json"),
                                   python=a.bnb_python if kind == "bnb" else sys.executable)
                finally:
                    if spinner is not None:
                        spinner.kill()
                        spinner.wait()
                caught, lines = diff(base, r.get("work") or {})
                r["beyond_tolerance"] = caught
                table.setdefault(kind, []).append({k: v for k, v in r.items() if k != "work"})
                print(f"{kind:9} {trial}: rc={r['rc']} {r['wall_s']:.0f} s latency {r.get('latency_ms')} ms, "
                      f"counting run {r.get('count_s')} s; "
                      f"work beyond tolerance: {caught}; verdicts {r.get('verdicts')}"
                      + (f"; {r['error']}" if "error" in r else ""), flush=True)
                for line in lines:
                    print(line, flush=True)
        print("\n== separate pytest processes, one saved baseline ==")
        for kind, rows in table.items():
            what = "caught (work beyond tolerance)" if kind in (*CHANGES, "bnb") else "work differences beyond tolerance"
            print(f"{kind:9}: {what} {sum(r['beyond_tolerance'] for r in rows)} of {len(rows)}; "
                  f"exit codes {[r['rc'] for r in rows]}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"args": vars(a), "trials": table}, f, indent=1)
    if not a.no_cost:
        cost(a.quant, a.new_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
