"""Helpers for suites of one's own (the example suites use them): the model a suite measures by
default, and the one-table summary many suites print at the end of a run. pytest-free.
"""
from __future__ import annotations

from typing import Any, Mapping


def on_gpu(config: Any) -> bool:
    """True when models will land on CUDA: a GPU is present and --quantperf-device is not cpu."""
    import torch

    return torch.cuda.is_available() and config.getoption("quantperf_device", None) != "cpu"


def default_suite_model(config: Any, gpu_model: str = "synthetic:mistral-7b") -> str:
    """A 7B-class synthetic model on a GPU, the small real default model on the CPU.

    ``--quantperf-model`` wins everywhere: then the suite asks for ``"default"``, which resolves to it.
    """
    # a default, so a suite still collects under ``-p no:quantperf`` (the options are then unknown)
    if config.getoption("quantperf_model", None):
        return "default"
    return gpu_model if on_gpu(config) else "default"


def markdown_table(rows: Mapping[str, Mapping[str, Any]], first: str) -> str:
    """``{row: {column: value}}`` as a Markdown table, floats to 4 significant digits."""
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    from ._util.text import text_table

    return text_table([[first, *cols], *([k, *(fmt(r.get(c, "")) for c in cols)] for k, r in rows.items())],
                      markdown=True)
