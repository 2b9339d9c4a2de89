"""transformers ``generate`` as a backend: greedy, fixed length, timed with a streamer."""
from __future__ import annotations

import time
from typing import Any, Sequence

from ..weights import no_grad_mode
from . import BackendInfo, RunTiming


class _FirstTokenClock:
    """A generate streamer that notes when the first new token exists (after a device sync)."""

    def __init__(self, sync, on_step=None):
        self.sync = sync
        self.on_step = on_step
        self.calls = 0
        self.first: float | None = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:  # call 1 is the prompt
            self.sync()
            self.first = time.perf_counter()
        if self.on_step is not None:
            self.on_step(self.calls - 1)  # 0: the prompt; i: the i-th new token exists

    def end(self) -> None:
        pass


class TransformersBackend:
    name = "transformers"
    #: ``run(..., on_step=f)`` calls ``f(i)`` once the i-th new token exists (windowed kernel time)
    step_hook = True

    def __init__(self, lm: Any):
        self.lm = lm
        import torch

        self.torch = torch
        dev = str(lm.device)
        self._cuda = dev.startswith("cuda")
        self._dev = torch.device(dev if not dev.startswith("cuda") or ":" in dev else "cuda:0")

    def sync(self) -> None:
        if self._cuda:
            self.torch.cuda.synchronize(self._dev)

    def prepare(self, prompts: Sequence[str]) -> Any:
        tok = self.lm.tokenizer
        if getattr(tok, "pad_token_id", None) is None and getattr(tok, "eos_token_id", None) is not None:
            tok.pad_token = tok.eos_token
        if len(prompts) > 1 and hasattr(tok, "padding_side"):
            tok.padding_side = "left"  # decoder-only models generate after the prompt
        enc = tok(list(prompts), return_tensors="pt", padding=len(prompts) > 1)
        first = self.lm.model.get_input_embeddings().weight.device if hasattr(self.lm.model, "get_input_embeddings") else self._dev
        return {k: v.to(first) for k, v in dict(enc).items() if k in ("input_ids", "attention_mask")}

    def prompt_tokens(self, prepared: Any) -> int:
        return int(prepared["input_ids"].shape[1])

    def run(self, prepared: Any, max_new_tokens: int, on_step=None) -> RunTiming:
        torch = self.torch
        clock = _FirstTokenClock(self.sync, on_step)
        tok = self.lm.tokenizer
        pad = getattr(tok, "pad_token_id", None)
        if pad is None:
            pad = 0
        with no_grad_mode(self.lm.model):
            self.sync()
            t0 = time.perf_counter()
            out = self.lm.model.generate(
                **prepared, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, streamer=clock, pad_token_id=pad,
                temperature=None, top_p=None, top_k=None)
            self.sync()
            t1 = time.perf_counter()
        n_prompt = prepared["input_ids"].shape[1]
        new = out[:, n_prompt:]
        first = clock.first if clock.first is not None else t1
        text = ""
        try:
            text = tok.decode(new[0].tolist(), skip_special_tokens=True)
        except Exception:  # a synthetic byte tokenizer has nothing meaningful to say
            text = ""
        return RunTiming(start=t0, first_token=first, end=t1, new_tokens=int(new.shape[1]),
                         batch=int(new.shape[0]), text=text, output_ids=tuple(int(x) for x in new[0].tolist()))


def _unavailable() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("transformers") is not None else "transformers is not installed"


BACKEND = BackendInfo(name="transformers", runner=TransformersBackend, unavailable=_unavailable)
