"""llama.cpp (``llama-cpp-python``) as a backend: greedy, fixed length, on a GGUF file.

The loop is the low-level one (``Llama.eval`` and the argmax of the last logits) rather than
``create_completion``: greedy by construction, no sampler state, and EOS cannot end a run early,
so every run yields exactly ``max_new_tokens`` tokens like the transformers backend does. The
prompt is evaluated afresh in each run (``reset`` drops the KV cache), so time to first token
includes the prompt, as it does there.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from ..errors import MeasurementError
from . import BackendInfo, RunTiming


class LlamaCppBackend:
    name = "llama_cpp"

    def __init__(self, lm: Any):
        import numpy as np

        import llama_cpp

        self.lm = lm
        self.handle = lm.model
        self.llama = lm.model.llama
        self._np = np
        self._get_logits = llama_cpp.llama_get_logits_ith
        self._n_vocab = int(self.llama.n_vocab())

    def prepare(self, prompts: Sequence[str]) -> Any:
        if len(prompts) != 1:
            raise MeasurementError(
                f"the llama_cpp backend generates one sequence at a time; got a batch of {len(prompts)} prompts. "
                "Pass one prompt (or measure each prompt in its own generate call)")
        ids = self.lm.tokenizer.encode(prompts[0])
        if not ids:
            raise MeasurementError("the prompt is empty after tokenization: give at least one token of text")
        return list(ids)

    def prompt_tokens(self, prepared: Any) -> int:
        return len(prepared)

    def _argmax(self) -> int:
        ptr = self._get_logits(self.llama.ctx, -1)
        logits = self._np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        return int(logits.argmax())

    def run(self, prepared: Any, max_new_tokens: int) -> RunTiming:
        need = len(prepared) + max_new_tokens
        if need > self.handle.n_ctx:
            raise MeasurementError(
                f"prompt ({len(prepared)} tokens) + max_new_tokens ({max_new_tokens}) = {need} exceeds the "
                f"llama.cpp context n_ctx={self.handle.n_ctx}: load with a larger n_ctx or generate fewer tokens")
        llama = self.llama
        out: list[int] = []
        t0 = time.perf_counter()
        llama.reset()
        llama.eval(prepared)
        tok = self._argmax()
        out.append(tok)
        t_first = time.perf_counter()
        while len(out) < max_new_tokens:  # EOS does not stop the loop: fixed-length runs
            llama.eval([tok])
            tok = self._argmax()
            out.append(tok)
        t1 = time.perf_counter()
        text = self.lm.tokenizer.decode(out, skip_special_tokens=True)
        return RunTiming(start=t0, first_token=t_first, end=t1, new_tokens=len(out), batch=1, text=text,
                         output_ids=tuple(out))


def _load(model: str = "default", **kw: Any) -> Any:
    from ..loaders import load_gguf

    return load_gguf(model, **{k: v for k, v in kw.items() if k != "progress"})


def _unavailable() -> str | None:
    from ..loaders import unavailable_reason

    return unavailable_reason("llama_cpp")


BACKEND = BackendInfo(name="llama_cpp", runner=LlamaCppBackend, load=_load, unavailable=_unavailable)
