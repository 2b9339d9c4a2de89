"""FP16 (the reference) against NF4, FP4 and INT8 on MMLU, ARC-Easy and ARC-Challenge, with the
memory and the latency each costs: the table published comparisons of quantized models quote.

Accuracy is lm-evaluation-harness's own ``acc`` on the loaded model (``quantperf.lm_eval``), every
question kept, so each quantized model is held to at most a given drop against the reference
question by question (``lm_eval_drop_vs_ref``, McNemar): a drop the questions cannot tell from
chance is reported, not failed.
"""
import pytest

PROMPT = "Who invented the light bulb?"
MAX_NEW = 12
BATCH = 16  # lm-eval's batch size; int8 results depend on it, so it is recorded with every figure
QUANTS = ("nf4", "fp4", "int8")
TASKS = ("mmlu", "arc_easy", "arc_challenge", "quantperf_builtin")
# the largest drop in accuracy against the reference each quantization may show, per task: the
# published NF4 rows lose 0.3 to 2.5 points of MMLU; FP4 loses more
MAX_DROP = {"nf4": 0.03, "fp4": 0.10, "int8": 0.02}


def _row(lm) -> str:
    return "reference (" + lm.spec.quant + ")" if lm.reference else lm.spec.quant


def _speed_and_memory(quantperf, lm, table):
    quantperf.generate(lm, PROMPT, max_new_tokens=MAX_NEW)
    res = quantperf.results
    prefix = "ref." if lm.reference else ""
    mem = next((n for n in ("vram_mb", "host_rss_mb") if prefix + n in res), None)
    table.setdefault(_row(lm), {}).update({
        "footprint_mb": round(res[prefix + "footprint_mb"].value, 1),
        "tpot_ms": round(res[prefix + "tpot_ms"].value, 1),
        "memory_mb": round(res[prefix + mem].value) if mem else ""})


def test_reference_speed_and_memory(fp16_model, quantperf, suite_model, table):
    _speed_and_memory(quantperf, fp16_model(suite_model), table)


@pytest.mark.parametrize("quant", QUANTS)
def test_speed_and_memory(quant, quant_model, quantperf, suite_model, table):
    _speed_and_memory(quantperf, quant_model(suite_model, quant=quant), table)


@pytest.mark.parametrize("task", TASKS)
def test_reference_accuracy(task, fp16_model, quantperf, suite_model, task_spec, limit, table):
    ref = fp16_model(suite_model)
    res = quantperf.lm_eval(ref, task_spec(task), limit=limit, batch_size=BATCH)
    table.setdefault(_row(ref), {})[task] = round(res[task].acc, 3)


@pytest.mark.parametrize("quant,task", [
    pytest.param(q, t, id=f"{q}-{t}", marks=pytest.mark.quant_budget(lm_eval_drop_vs_ref={t: MAX_DROP[q]}))
    for q in QUANTS for t in TASKS])
def test_accuracy_against_the_reference(quant, task, quant_model, fp16_model, quantperf, suite_model, task_spec,
                                        limit, table):
    spec = task_spec(task)
    ref = fp16_model(suite_model)
    lm = quant_model(suite_model, quant=quant)
    quantperf.lm_eval(ref, spec, limit=limit, batch_size=BATCH)  # measured once per session, then reused
    res = quantperf.lm_eval(lm, spec, limit=limit, batch_size=BATCH)
    table.setdefault(_row(lm), {})[task] = round(res[task].acc, 3)
