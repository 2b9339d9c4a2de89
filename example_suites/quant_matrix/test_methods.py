"""Every quantization method this machine can run, side by side on one model: "which 4-bit
method should we ship?" answered with figures.

Needs no conftest: only the plugin's fixtures. Per method: speed (tokens/s, time per output
token), the weights' real footprint, agreement with the unquantized reference (KL divergence
and top-1 of the next-token distributions, ``quantperf.compare``), perplexity and
multiple-choice accuracy. Methods the machine cannot run (a CUDA-only kernel on a CPU, a package
not installed, HQQ in transformers 5.2x) are skipped with the one-line reason. The table is
printed at the end (``-s`` shows it) and written as Markdown to ``$QUANT_METHODS_MD`` if set.
"""
import os

import pytest
import torch

from pytest_quantperf.models import unavailable_reason

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
PROMPT = "Who invented the light bulb?"
MAX_NEW = 32 if ON_GPU else 8
MC_LIMIT = None if ON_GPU else 8
PPL_CHARS = None if ON_GPU else 2000
COMPARE_CHARS = 4000 if ON_GPU else 1000
MODEL = os.environ.get("QUANT_METHODS_MODEL", "default")

METHODS = ["bf16", "int8", "nf4", "torchao-int8", "torchao-int8-dyn", "torchao-int4",
           "quanto-int8", "quanto-int4", "gptq-int4", "hqq-4bit", "fp8"]
COLUMNS = ("footprint_mb", "load_s", "tokens_per_s", "tpot_ms", "kl_div", "top1_agreement", "perplexity",
           "accuracy")
ROWS: dict[str, dict[str, float]] = {}


def _text(chars):
    from pytest_quantperf.accuracy import default_text

    t = default_text()
    return t[:chars] if chars else t


@pytest.mark.parametrize("quant", ["reference"] + METHODS)
def test_method(quant, quant_model, fp16_model, quantperf):
    if quant == "reference":
        lm = fp16_model(MODEL)
    else:
        why = unavailable_reason(quant, DEVICE)
        if why:
            pytest.skip(why)
        lm = quant_model(MODEL, quant=quant)
    quantperf.generate(lm, PROMPT, max_new_tokens=MAX_NEW)
    if quant != "reference":
        quantperf.compare(lm, fp16_model(MODEL), [_text(COMPARE_CHARS)])
    quantperf.perplexity(lm, _text(PPL_CHARS))
    quantperf.multiple_choice(lm, "builtin", limit=MC_LIMIT)
    res = quantperf.results
    name = "ref." if quant == "reference" else ""
    row = {c: res[name + c].value if name + c in res else float("nan") for c in COLUMNS}
    row["footprint_mb"], row["load_s"] = lm.footprint_mb, lm.load_s
    ROWS[lm.label] = row
    assert row["tokens_per_s"] > 0


def test_table():
    """The side-by-side table; the footprints must follow the bit widths."""
    if not ROWS:
        pytest.skip("no method ran")
    head = "| model | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for label, row in ROWS.items():
        lines.append(f"| {label} | " + " | ".join("" if v != v else f"{v:.4g}" for v in row.values()) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    if os.environ.get("QUANT_METHODS_MD"):
        with open(os.environ["QUANT_METHODS_MD"], "w", encoding="utf-8") as f:
            f.write(table + "\n")
    fp = {label.split("/", 1)[1]: r["footprint_mb"] for label, r in ROWS.items()}
    for four in ("quanto-int4", "nf4", "torchao-int4"):
        for eight in ("quanto-int8", "torchao-int8", "int8"):
            if four in fp and eight in fp:
                assert fp[four] < fp[eight], (four, eight)
