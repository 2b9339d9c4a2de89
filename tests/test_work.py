"""The work of a decode, counted: the by-name diff (pure), and the counts through the plugin.

The pure part needs neither torch nor pytest's plugin. The rest drives the plugin as users do,
through pytester subprocesses on the real default model on the CPU, with short generates (8 new
tokens: whole-generate counting) and one timed run, so each run costs seconds.
"""
from __future__ import annotations

import json

import pytest

from pytest_quantperf.measure.work import KINDS, METRIC_OF, NameChange, Work, describe_changes, format_changes, work_changes

# --------------------------------------------------------------------------- pure


def _work(ops: dict[str, float], tokens: int = 4, py: dict[str, float] | None = None) -> Work:
    py = py or {"builtins.isinstance": 40}
    return Work(tokens=tokens, prompt_tokens=7, totals={"ops": sum(ops.values()), "py_calls": sum(py.values()),
                                                         "syncs": ops.get("aten._local_scalar_dense", 0)},
                by_name={"ops": ops, "py_calls": py,
                         "syncs": {k: v for k, v in ops.items() if k == "aten._local_scalar_dense"}})


def test_work_round_trips_through_json():
    w = _work({"aten.select": 10, "aten.mm": 8.5})
    back = Work.from_dict(json.loads(json.dumps(w.to_dict())))
    assert back == Work.from_dict(w.to_dict())
    assert back.per_token("ops") == 18.5 / 4 and back.kinds_counted == ("ops", "py_calls", "syncs")
    assert json.loads(json.dumps(w.to_dict()))["by_name"]["ops"]["aten.select"] == 10  # whole counts stay ints


def test_changes_are_per_token_largest_first_and_unchanged_names_left_out():
    base = _work({"aten.select": 8, "aten.mm": 40, "aten._local_scalar_dense": 4}).to_dict()
    cur = _work({"aten.select": 10, "aten.mm": 40, "aten._local_scalar_dense": 8, "aten.sub_": 1}).to_dict()
    ch = work_changes(base, cur, "ops")
    assert [(c.name, c.delta) for c in ch] == [("aten._local_scalar_dense", 1.0), ("aten.select", 0.5),
                                               ("aten.sub_", 0.25)]
    assert format_changes(ch) == ("+1 aten._local_scalar_dense per token, +0.5 aten.select per token, "
                                  "+0.25 aten.sub_ per token")
    assert work_changes(base, cur, "ops", top=1) == [NameChange("aten._local_scalar_dense", 1.0, 2.0)]


def test_changes_read_metric_extras_of_different_lengths():
    """A metric's extra keeps counts over its own tokens: 16 tokens against 32 compare per token."""
    base = _work({"aten.mm": 64}, tokens=16).metric_extra("ops")
    cur = _work({"aten.mm": 96, "aten.select": 32}, tokens=32).metric_extra("ops")
    assert format_changes(work_changes(base, cur, "ops")) == "-1 aten.mm per token, +1 aten.select per token"
    assert describe_changes(base, base, "ops") == "no change by name"


def test_large_and_small_changes_read_plainly():
    base = {"by_name": {"a": 0}, "tokens": 1}
    cur = {"by_name": {"a": 6720, "b": 1 / 32}, "tokens": 1}
    assert format_changes(work_changes(base, cur, "ops")) == "+6,720 a per token, +0.0312 b per token"
    assert format_changes(work_changes(cur, base, "ops")) == "-6,720 a per token, -0.0312 b per token"


def test_the_verdict_and_the_report_name_the_same_changes_for_every_model_of_a_test():
    """``ops_per_token[nf4]`` and ``ref.ops_per_token`` are work figures too: the report's by-name
    diff and the verdict's message read them through one helper."""
    from dataclasses import replace

    from pytest_quantperf.report.view import _work_diff
    from pytest_quantperf.results import make_metric
    from pytest_quantperf.verdicts.compare import _work_named

    base = _work({"aten.mm": 40}).metric_extra("ops")
    cur = _work({"aten.mm": 40, "aten.item": 4}).metric_extra("ops")
    for name in ("ops_per_token", "ops_per_token[nf4]", "ref.ops_per_token"):
        m = make_metric(name, 10.0, kind="work")
        assert _work_named(name, replace(m, extra=base), replace(m, extra=cur)) == "+1 aten.item per token"
        assert [d["name"] for d in _work_diff(name, {"extra": cur}, {"extra": base})] == ["aten.item"]
    assert _work_diff("latency_ms", {"extra": cur}, {"extra": base}) == []


def test_every_kind_has_its_metric_in_the_catalogue():
    from pytest_quantperf.results import METRICS

    for kind in KINDS:
        info = METRICS[METRIC_OF[kind]]
        assert info.kind == "work" and info.better == "lower"
    assert METRICS["prompt_tokens"].kind == "work" and METRICS["prompt_tokens"].tolerance == "0"


# --------------------------------------------------------------------------- through the plugin

FAST = ("-p", "no:cacheprovider", "--quantperf-device=cpu", "--quantperf-repeat=1", "--quantperf-warmup=0")
WORK = ("ops_per_token", "py_calls_per_token", "syncs_per_token", "prompt_tokens")


def _metrics(pytester: pytest.Pytester, name: str = "out.json") -> dict[str, dict]:
    doc = json.loads((pytester.path / name).read_text())
    out = {}
    for t in doc["tests"].values():
        out.update({f"{t['nodeid'].split('::')[-1]}:{k}": m for k, m in t["metrics"].items()})
    return out


GEN = '''
from transformers import LogitsProcessor, LogitsProcessorList


class Loop(LogitsProcessor):
    """A Python loop over the sequence's tokens, as teams write them."""

    def __call__(self, input_ids, scores):
        for t in input_ids[0]:
            scores[0, int(t)] -= 0.0
        return scores


def test_plain(quant_model, quantperf):
    quantperf.generate(quant_model("default", quant="bf16"), "The capital of France is", max_new_tokens=8)


def test_processor(quant_model, quantperf):
    quantperf.generate(quant_model("default", quant="bf16"), "The capital of France is", max_new_tokens=8,
                       logits_processor=LogitsProcessorList([Loop()]))
'''


def test_separate_processes_count_the_same_work_and_a_logits_processor_adds_ops_by_name(pytester):
    """The second process runs the tests in the other order: what ran before never changes a count."""
    head, plain_test = GEN.split("def test_plain")
    plain_test, processor_test = plain_test.split("def test_processor")
    for out, body in (("a.json", GEN),
                      ("b.json", head + "def test_processor" + processor_test + "\n\ndef test_plain" + plain_test)):
        pytester.makepyfile(test_gen=body)
        r = pytester.runpytest_subprocess(*FAST, f"--quantperf-json={out}")
        r.assert_outcomes(passed=2)
    a, b = _metrics(pytester, "a.json"), _metrics(pytester, "b.json")
    for name in WORK:
        ma, mb = a[f"test_plain:{name}"], b[f"test_plain:{name}"]
        assert ma["kind"] == "work" and ma["value"] > 0
        assert ma["value"] == mb["value"], name
        assert ma["extra"].get("by_name") == mb["extra"].get("by_name"), name
        assert a[f"test_processor:{name}"]["value"] == b[f"test_processor:{name}"]["value"], name
    assert "launches_per_token" not in a  # CUDA only
    plain, proc = a["test_plain:ops_per_token"], a["test_processor:ops_per_token"]
    assert proc["value"] > plain["value"]
    added = {c.name for c in work_changes(plain["extra"], proc["extra"], "ops") if c.delta > 0}
    assert {"aten.select", "aten.item"} <= added  # the loop's indexing and int(t)
    assert a["test_processor:syncs_per_token"]["value"] > a["test_plain:syncs_per_token"]["value"]


def test_count_work_off_records_no_work_figures(pytester):
    pytester.makepyfile(test_gen=GEN.split("def test_processor")[0])
    r = pytester.runpytest_subprocess(*FAST, "--quantperf-count-work=off", "--quantperf-json=out.json")
    r.assert_outcomes(passed=1)
    m = _metrics(pytester)
    assert "test_plain:latency_ms" in m
    assert not [k for k in m if k.split(":")[1] in (*WORK, "launches_per_token")]


def test_count_work_takes_on_or_off_only(pytester):
    pytester.makepyfile(test_gen=GEN.split("def test_processor")[0])
    r = pytester.runpytest_subprocess(*FAST, "--quantperf-count-work=maybe")
    assert r.ret != 0
    r.stderr.fnmatch_lines(["*--quantperf-count-work: 'maybe' is not on or off*"])


def test_messages_apply_the_chat_template(pytester):
    messages = [{"role": "user", "content": "Who invented the light bulb?"}]
    pytester.makepyfile(test_chat=f'''
        def test_chat(quant_model, quantperf):
            lm = quant_model("default", quant="bf16")
            quantperf.generate(lm, messages={messages!r}, max_new_tokens=8)
            ids = lm.tokenizer.apply_chat_template({messages!r}, tokenize=True, add_generation_prompt=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            quantperf.record("template_tokens", len(ids))
    ''')
    r = pytester.runpytest_subprocess(*FAST, "--quantperf-json=out.json")
    r.assert_outcomes(passed=1)
    m = _metrics(pytester)
    assert m["test_chat:prompt_tokens"]["value"] == m["test_chat:template_tokens"]["value"]
    # the template's own tokens come on top of the prompt's
    assert m["test_chat:prompt_tokens"]["value"] > len("Who invented the light bulb?".split())


def test_bad_generate_kwargs_fail_with_one_line(pytester):
    pytester.makepyfile(test_bad='''
        def test_reserved(quant_model, quantperf):
            quantperf.generate(quant_model("default", quant="bf16"), "Hi", max_new_tokens=4, stop_strings=["."])

        def test_unknown(quant_model, quantperf):
            quantperf.generate(quant_model("default", quant="bf16"), "Hi", max_new_tokens=4, no_such_argument=1)
    ''')
    r = pytester.runpytest_subprocess(*FAST)
    r.assert_outcomes(failed=2)
    r.stdout.fnmatch_lines([
        "*MeasurementError: quantperf.generate: stop_strings= is not passed to model.generate: a run that stops "
        "early has no fixed length to compare",
        "*MeasurementError: quantperf.generate: model.generate refused the keyword arguments no_such_argument:*"])


def test_a_window_of_decode_steps_counts_what_the_whole_generate_counts():
    """Greedy decode steps run the same code: prefill + end + the window scaled equals the whole count."""
    pytest.importorskip("torch")
    from pytest_quantperf.backends import backend_for
    from pytest_quantperf.models import load, make_spec
    from pytest_quantperf.measure.work_count import count_work

    lm = load(make_spec("default", "bf16", device="cpu"))
    b = backend_for(lm)
    p = b.prepare(["The capital of France is"])
    b.run(p, 2)
    whole, window = count_work(b, p, 5, window=0), count_work(b, p, 5, window=2)
    assert (whole.scope, window.scope) == ("whole generate", "window")
    assert window.detail["window_after_token"] == 2
    assert window.totals == whole.totals and window.by_name == whole.by_name
    assert set(whole.by_name["syncs"]) == {"aten.is_nonzero"}  # generate's "all sequences finished?"


def wait_for_device() -> None:
    """Stands in for ``torch.cuda.synchronize`` (which needs CUDA) in the test below."""


def test_an_explicit_wait_for_the_device_each_step_counts_as_a_sync_by_name(monkeypatch):
    """Without the CUDA runtime's records a ``torch.cuda.synchronize()`` per step shows in no operator:
    the calls named in SYNC_CALLS are counted among the syncs, once per call."""
    pytest.importorskip("torch")
    from pytest_quantperf.backends import backend_for
    from pytest_quantperf.models import load, make_spec
    from pytest_quantperf.measure import work_count

    assert "torch.cuda.synchronize" in work_count.SYNC_CALLS
    name = f"{wait_for_device.__module__}.{wait_for_device.__qualname__}"
    monkeypatch.setattr(work_count, "SYNC_CALLS", frozenset({name}))
    lm = load(make_spec("default", "bf16", device="cpu"))
    b = backend_for(lm)
    p = b.prepare(["The capital of France is"])
    b.run(p, 2)
    plain = work_count.count_work(b, p, 5, window=0)
    hook = lm.model.register_forward_pre_hook(lambda *a: wait_for_device())
    try:
        waited = work_count.count_work(b, p, 5, window=0)
    finally:
        hook.remove()
    assert name not in plain.by_name["syncs"]
    assert waited.by_name["syncs"][name] == 5  # one forward per generated token
    assert waited.totals["syncs"] == plain.totals["syncs"] + 5


def test_a_saved_baseline_passes_unchanged_work_and_fails_a_logits_processor_naming_it(pytester, monkeypatch):
    """As a user gates: save once, compare an unchanged process (A/A) and one whose generate gained
    a Python logits processor; the second fails, its message and the HTML and Markdown reports name
    the operators."""
    body = GEN.split("def test_plain")[0] + '''
import os


def test_decode(quant_model, quantperf):
    kw = {"logits_processor": LogitsProcessorList([Loop()])} if os.environ.get("ADD_PROCESSOR") else {}
    quantperf.generate(quant_model("default", quant="bf16"), "The capital of France is", max_new_tokens=8, **kw)
'''
    pytester.makepyfile(test_gen=body)
    store = ("--quantperf-storage=store",)
    pytester.runpytest_subprocess(*FAST, *store, "--quantperf-save=main").assert_outcomes(passed=1)
    same = pytester.runpytest_subprocess(*FAST, *store, "--quantperf-baseline=main", "--quantperf-json=aa.json")
    assert same.ret == 0, same.stdout.str()[-3000:]
    aa = json.loads((pytester.path / "aa.json").read_text())
    work_verdicts = [v for t in aa["tests"].values() for v in t["verdicts"] if v.get("kind") == "work"]
    assert work_verdicts and {v["status"] for v in work_verdicts} == {"pass"}

    monkeypatch.setenv("ADD_PROCESSOR", "1")
    changed = pytester.runpytest_subprocess(*FAST, *store, "--quantperf-baseline=main", "--quantperf-html=r.html",
                                            "--quantperf-markdown=r.md")
    assert changed.ret == 1
    out = changed.stdout.str()
    assert "regression" in out and "aten.select" in out, out[-3000:]
    html = (pytester.path / "r.html").read_text()
    assert "ops_per_token</b> by name against the baseline" in html
    assert "<code>aten.select</code>" in html
    md = (pytester.path / "r.md").read_text()  # the pull-request comment's body
    assert "### Work per token by name, against the baseline" in md and "| `aten.select` |" in md


def test_a_backend_without_work_hooks_says_n_a_in_the_model_line():
    from pytest_quantperf.report.view import proof_text, quant_proof

    note = "the llama_cpp backend does not expose its work: n/a"
    (p,) = quant_proof({"default/gguf": {"backend": "llama_cpp", "work": note}})
    assert proof_text(p).endswith(f"work per token: {note}")
