"""quantperf.lm_eval: lm-evaluation-harness tasks on the loaded model, checked against lm-eval itself.

One suite runs once, as a user runs it, offline, on the real default model: lm-eval's own
``simple_evaluate`` beside the plugin on the same model object, the reference against FP4 under a
paired drop budget, and a hub task whose data is not there. The tests below read that run.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_quantperf.verdicts import budgets
from pytest_quantperf.accuracy import lm_eval as le
from pytest_quantperf.results import metric_info

lm_eval_missing = pytest.mark.skipif(
    __import__("importlib").util.find_spec("lm_eval") is None, reason="lm-eval is not installed")

TASK = "quantperf_builtin"
LIMIT = 30

SUITE = textwrap.dedent(f"""
    import json

    import pytest

    from pytest_quantperf.accuracy.lm_eval import builtin_task

    LIMIT, BS = {LIMIT}, 16


    def test_same_as_lm_eval(fp16_model, quantperf):
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        ref = fp16_model()
        quantperf.lm_eval(ref, builtin_task(), limit=LIMIT, batch_size=BS)
        out = lm_eval.simple_evaluate(model=HFLM(pretrained=ref.model, tokenizer=ref.tokenizer, batch_size=BS),
                                      tasks=[builtin_task()], limit=LIMIT, num_fewshot=0)
        theirs = out["results"]["{TASK}"]
        samples = sorted(out["samples"]["{TASK}"], key=lambda s: s["doc_id"])
        print("LMEVAL " + json.dumps({{"acc": theirs["acc,none"], "acc_norm": theirs["acc_norm,none"],
                                       "items": [s["acc"] for s in samples],
                                       "items_norm": [s["acc_norm"] for s in samples]}}))


    @pytest.mark.quant_budget(lm_eval={{"{TASK}": 0.3}}, lm_eval_drop_vs_ref={{"{TASK}": 0.0}})
    def test_fp4_against_the_reference(quant_model, fp16_model, quantperf):
        ref = fp16_model()
        fp4 = quant_model("default", quant="fp4")
        quantperf.lm_eval(ref, builtin_task(), limit=LIMIT, batch_size=BS)
        quantperf.lm_eval(fp4, builtin_task(), limit=LIMIT, batch_size=BS)


    def test_hub_task_offline(fp16_model, quantperf):
        quantperf.lm_eval(fp16_model(), "arc_easy", limit=5)
""")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory):
    """The suite run once, offline, with an empty datasets cache: (stdout, JSON report)."""
    pytest.importorskip("lm_eval")
    from pytest_quantperf.models import cache_root

    d = tmp_path_factory.mktemp("lm_eval_suite")
    (d / "test_suite.py").write_text(SUITE)
    env = {**os.environ, "QUANTPERF_CACHE": str(cache_root()), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(d / "hf-datasets"), "HF_HOME": str(d / "hf-home")}
    src = str(Path(le.__file__).resolve().parents[2])  # this checkout's package in the subprocess too
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-rA",
                           "--quantperf-repeat=1", "--quantperf-warmup=0", "--quantperf-json=out.json",
                           "--rootdir", str(d), "test_suite.py"],
                          cwd=d, env=env, capture_output=True, text=True, timeout=900)
    doc = json.loads((d / "out.json").read_text()) if (d / "out.json").is_file() else {}
    return proc.stdout + proc.stderr, doc.get("tests", {})


def _section(out: str, test: str) -> str:
    """The failure section of one test in pytest's output."""
    start = out.index(f"_ {test} _")
    rest = out[start + 1:]
    ends = [i for i in (rest.find("\n___"), rest.find("\n==="), rest.find("\n---")) if i >= 0]
    return rest[: min(ends)] if ends else rest


@lm_eval_missing
def test_lm_eval_gives_lm_evals_own_acc_on_the_same_model(suite):
    out, tests = suite
    t = tests["test_suite.py::test_same_as_lm_eval"]
    assert t["outcome"] == "passed", out[-3000:]
    theirs = json.loads(next(line for line in out.splitlines() if line.startswith("LMEVAL "))[7:])
    acc, acc_norm = t["metrics"][f"lm_eval.{TASK}.acc"], t["metrics"][f"lm_eval.{TASK}.acc_norm"]
    assert acc["value"] == theirs["acc"] and acc_norm["value"] == theirs["acc_norm"]
    assert acc["items"] == [float(x) for x in theirs["items"]] and len(acc["items"]) == LIMIT
    assert acc_norm["items"] == [float(x) for x in theirs["items_norm"]]
    assert acc["kind"] == "accuracy" and acc["better"] == "higher"
    extra = acc["extra"]
    assert (extra["limit"], extra["num_fewshot"], extra["batch_size"]) == (LIMIT, 0, 16)
    assert extra["lm_eval_version"] == le.version() and len(extra["config_hash"]) == 16


@lm_eval_missing
def test_fp4_drop_budget_is_the_paired_rule_on_each_question(suite):
    from pytest_quantperf import stats

    out, tests = suite
    t = tests["test_suite.py::test_fp4_against_the_reference"]
    cand, ref = t["metrics"][f"lm_eval.{TASK}.acc"], t["metrics"][f"ref.lm_eval.{TASK}.acc"]
    assert len(cand["items"]) == len(ref["items"]) == LIMIT
    drop = statistics.fmean(ref["items"]) - statistics.fmean(cand["items"])
    n10 = sum(1 for c, r in zip(cand["items"], ref["items"]) if r == 1 and c == 0)
    n01 = sum(1 for c, r in zip(cand["items"], ref["items"]) if r == 0 and c == 1)
    p = stats.mcnemar_exact(n10, n01)
    assert cand["extra"]["paired_vs_ref"]["p_value"] == pytest.approx(p)
    # the one rule with the limit (a drop of 0.0) as the band's edge: the paired 98% interval of the drop
    lo, hi = stats.paired_bootstrap_diff_ci(cand["items"], ref["items"], 0.98)
    want_drop = "breach" if lo > 0.0 else ("pass" if hi <= 0.0 else "inconclusive")
    want_min = "pass" if cand["value"] >= 0.3 else "breach"
    got = {v["metric"]: v for v in t["verdicts"] if v.get("source") == "budget"}
    assert got[f"lm_eval.{TASK}.acc_drop_vs_ref"]["status"] == want_drop
    assert got[f"lm_eval.{TASK}.acc_drop_vs_ref"]["current"] == pytest.approx(drop)
    assert got[f"lm_eval.{TASK}.acc"]["status"] == want_min
    assert t["outcome"] == ("failed" if "breach" in (want_drop, want_min) else "passed")


@lm_eval_missing
def test_hub_task_offline_fails_with_one_line_naming_task_and_remedy(suite):
    out, tests = suite
    sec = _section(out, "test_hub_task_offline")
    lines = [ln for ln in sec.splitlines()[1:] if ln.strip()]
    assert len(lines) == 1, sec
    assert lines[0].startswith("lm-eval task 'arc_easy': its data could not be loaded, offline")
    assert "dataset_path': 'json'" in lines[0] and "data_files" in lines[0]
    assert "Traceback" not in sec and "raise " not in sec


def test_budget_keys_per_task_are_checked_at_collection(pytester: pytest.Pytester):
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.quant_budget(lm_eval=0.5)
        def test_not_a_dict():
            pass

        @pytest.mark.quant_budget(lm_eval_drop_vs_ref={1: 0.02})
        def test_task_not_text():
            pass

        @pytest.mark.quant_budget(lm_eval={"arc_easy": "high"})
        def test_value_not_a_number():
            pass

        @pytest.mark.quant_budget(lm_eval={"arc_easy": 1.5})
        def test_value_not_an_accuracy():
            pass
    """)
    r = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    assert r.ret != 0
    r.stderr.fnmatch_lines([
        "*test_bad.py::test_not_a_dict: quant_budget lm_eval must be a non-empty dict of lm-eval task name -> number*",
        "*test_bad.py::test_task_not_text: quant_budget lm_eval_drop_vs_ref: task names are lm-eval task names*1 (int)*",
        "*test_bad.py::test_value_not_a_number: quant_budget lm_eval?'arc_easy'? must be a number, got 'high'*",
        "*test_bad.py::test_value_not_an_accuracy: quant_budget lm_eval?'arc_easy'? is an accuracy between 0 and 1*",
    ])


def test_per_task_budgets_become_one_limit_per_task_closest_marker_winning():
    b = budgets.merge_markers("t.py::test", [
        ((), {"lm_eval": {"arc_easy": 0.6}, "lm_eval_drop_vs_ref": {"mmlu": 0.02}}),   # the test's own
        ((), {"lm_eval": {"arc_easy": 0.4, "arc_challenge": 0.3}}),                    # the module's
    ])
    assert b.limits == {"lm_eval.arc_easy.acc": 0.6, "lm_eval.arc_challenge.acc": 0.3,
                        "lm_eval.mmlu.acc_drop_vs_ref": 0.02}
    assert budgets.absolute_limit("lm_eval.arc_easy.acc") == ("lm_eval.arc_easy.acc", "min")
    assert budgets.relative_limit("lm_eval.mmlu.acc_drop_vs_ref") == ("lm_eval.mmlu.acc", "max", "drop")
    assert budgets.absolute_limit("lm_eval.mmlu.acc_drop_vs_ref") is None
    assert "lm_eval" in budgets.VALID_KEYS and "lm_eval_drop_vs_ref" in budgets.VALID_KEYS


def test_lm_eval_figures_are_judged_as_accuracy():
    for name in (f"lm_eval.{TASK}.acc", "ref.lm_eval.arc_easy.acc_norm", "lm_eval.mmlu.acc[nf4]"):
        info = metric_info(name)
        assert (info.kind, info.better, info.tolerance) == ("accuracy", "higher", "0.02"), name
    assert metric_info("lm_eval.acc").kind == "timing"  # no task: a user's own figure


def test_missing_lm_eval_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what an environment without lm-eval imports
    with pytest.raises(le.LmEvalError) as e:
        le.evaluate(object(), object(), le.builtin_task())
    assert str(e.value) == le.MISSING and "pip install lm-eval" in str(e.value)


@lm_eval_missing
def test_builtin_task_as_dict_and_as_yaml_is_one_task(tmp_path):
    """The dict and the YAML written for lm-eval's command build the same task: same questions
    (the data file hashed by content, wherever it lies), same config."""
    le._lm_eval()
    manager = le._task_manager()
    (from_dict,) = le._load(manager, le.builtin_task())
    (from_yaml,) = le._load(manager, str(le.write_builtin_task(tmp_path)))
    assert from_dict.task_name == from_yaml.task_name == TASK
    assert len(from_dict.test_docs()) == len(from_yaml.test_docs()) == 118
    assert le._config_hash(from_dict.dump_config()) == le._config_hash(from_yaml.dump_config())
