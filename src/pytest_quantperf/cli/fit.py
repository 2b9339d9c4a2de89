"""``quantperf fit MODEL --quant Q --gpu-mb N``: will it fit? The prediction itself is :mod:`pytest_quantperf.models.fit`."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from ..models.fit import GIB, MIB, QUANTS, FitError, FitPrediction, predict

DESCRIPTION = ("Predict weight and peak GPU memory of a model from its config, before any load. "
               "Exit 0 if it fits, 1 if not, 2 on bad input.")


def _fmt_bytes(n: float) -> str:
    return f"{n / MIB:,.1f} MiB" if n < GIB else f"{n / GIB:,.2f} GiB"


def format_prediction(pred: FitPrediction, gpu_mb: float | None = None) -> str:
    """A readable table of a prediction, and the verdict when ``gpu_mb`` is given."""
    q = pred.quant + (" (double quant)" if pred.double_quant else "")
    rows = [
        ("model", pred.model),
        ("quant", q + (f", compute {pred.compute_dtype}" if pred.compute_dtype else "")),
        ("device", f"{pred.device} (unquantized weights in {pred.param_dtype})"),
        ("parameters", f"{pred.params_total:,} ({pred.params_quantized:,} quantized)"),
        ("weights", f"{_fmt_bytes(pred.weight_bytes)} ({pred.bits_per_param:.2f} bits/param)"),
        ("  quantization state", _fmt_bytes(pred.quant_state_bytes)),
        ("  per quantized weight", f"{pred.bits_per_weight:.3f} bits (scales, zero points and codes included)"
         if pred.params_quantized else "-"),
        ("  unquantized", _fmt_bytes(pred.unquantized_bytes)),
        (f"KV cache ({pred.batch} x {pred.context_len} tokens)", _fmt_bytes(pred.kv_cache_bytes)),
        ("activations (estimate)", _fmt_bytes(pred.activation_bytes)),
        ("peak", _fmt_bytes(pred.peak_bytes)),
    ]
    if pred.overhead_bytes:
        rows.append(("CUDA context (estimate)", _fmt_bytes(pred.overhead_bytes)))
        rows.append(("needed on the device", f"{pred.required_mb:,.0f} MiB"))
    from .._util.text import text_table

    lines = [text_table(rows, header=False)]
    if gpu_mb is not None:
        spare = gpu_mb - pred.required_mb
        verdict = "FITS" if pred.fits(gpu_mb) else "DOES NOT FIT"
        lines.append(f"{verdict} in {gpu_mb:,.0f} MiB: needs {pred.required_mb:,.0f} MiB, "
                     f"{'spare' if spare >= 0 else 'short by'} {abs(spare):,.0f} MiB")
    return "\n".join(lines)


def add_arguments(p: Any) -> None:
    """The options of ``quantperf fit``, on its subparser or on a parser of its own."""
    p.add_argument("model", help="local directory, .gguf file, 'default', cached hub id or synthetic:<preset>")
    p.add_argument("--quant", required=True, choices=QUANTS)
    p.add_argument("--gpu-mb", type=float, required=True, help="memory of the target GPU, MiB")
    p.add_argument("--context", type=int, default=2048, help="tokens of context (prompt + generated), default 2048")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--double-quant", action="store_true", help="bitsandbytes double quantization (nf4/fp4)")
    p.add_argument("--compute-dtype", default=None, help="fp16, bf16 or fp32 (default fp16 on CUDA)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")


def build_parser(prog: str = "quantperf fit") -> argparse.ArgumentParser:
    """``quantperf fit``'s options on a parser of its own (what :func:`fit_main` parses)."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_arguments(p)
    return p


def cmd_fit(args: argparse.Namespace) -> int:
    """Predict, print, and say whether it fits: 0 if it fits, 1 if not, 2 on bad input."""
    if args.gpu_mb <= 0 or args.context < 0 or args.batch < 1:
        print("quantperf fit: --gpu-mb and --batch must be positive and --context non-negative", file=sys.stderr)
        return 2
    try:
        pred = predict(args.model, args.quant, context_len=args.context, batch=args.batch,
                       compute_dtype=args.compute_dtype, double_quant=args.double_quant, device=args.device)
    except FitError as e:
        print(f"quantperf fit: {e}", file=sys.stderr)
        return 2
    if args.json:
        d = pred.to_dict()
        d.update(gpu_mb=args.gpu_mb, fits=pred.fits(args.gpu_mb))
        print(json.dumps(d, indent=2))
    else:
        print(format_prediction(pred, args.gpu_mb))
    return 0 if pred.fits(args.gpu_mb) else 1


def fit_main(argv: Sequence[str] | None = None) -> int:
    """``quantperf fit MODEL --quant Q --gpu-mb N``, given the arguments after ``fit``.

    0 if it fits, 1 if not, 2 on bad input (also for a usage error: no SystemExit).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    return cmd_fit(args)
