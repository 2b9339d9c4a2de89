"""transformers ``generate`` as a backend: greedy, fixed length, timed with a streamer.

The user's own generation path rides on the same runs: keyword arguments for ``model.generate``
(logits processors, repetition penalty, cache implementation, ...) given once with
:meth:`TransformersBackend.set_generate_kwargs` reach every run (warm-up, timed, profiled,
counted), and a prompt given as chat messages goes through the tokenizer's chat template.
What decides the measurement's length stays quantperf's: every run generates exactly
``max_new_tokens`` tokens, and a run that stops earlier fails with the reason.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from ..errors import MeasurementError
from ..models.weights import no_grad_mode

#: generate arguments quantperf sets itself: the length and the streamer that times the first token,
#: and the prompt (given as ``prompt`` or ``messages``); anything that can end a run early
RESERVED_KWARGS: dict[str, str] = {
    "max_new_tokens": "pass it as quantperf.generate's own max_new_tokens",
    "min_new_tokens": "every run generates exactly max_new_tokens tokens",
    "max_length": "use max_new_tokens",
    "min_length": "every run generates exactly max_new_tokens tokens",
    "max_time": "a run that stops on time has no fixed length to compare",
    "stop_strings": "a run that stops early has no fixed length to compare",
    "stopping_criteria": "a run that stops early has no fixed length to compare",
    "streamer": "quantperf's streamer times the first token",
    "input_ids": "give the prompt as prompt= or messages=",
    "inputs": "give the prompt as prompt= or messages=",
    "attention_mask": "give the prompt as prompt= or messages=",
    "inputs_embeds": "give the prompt as prompt= or messages=",
}

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
    #: torch runs under it: operators, Python calls and syncs can be counted (work_count)
    counts_work = True
    #: ``set_generate_kwargs`` takes the user's keyword arguments for ``model.generate``
    takes_generate_kwargs = True

    def __init__(self, lm: Any):
        self.lm = lm
        import torch

        self.torch = torch
        dev = str(lm.device)
        self._cuda = dev.startswith("cuda")
        self._dev = torch.device(dev if not dev.startswith("cuda") or ":" in dev else "cuda:0")
        self.generate_kwargs: dict[str, Any] = {}

    def set_generate_kwargs(self, kwargs: Mapping[str, Any]) -> None:
        """Keyword arguments every later run passes to ``model.generate``; MeasurementError names a
        reserved one (see :data:`RESERVED_KWARGS`) with what to do instead."""
        for k in kwargs:
            if k in RESERVED_KWARGS:
                raise MeasurementError(f"quantperf.generate: {k}= is not passed to model.generate: "
                                       f"{RESERVED_KWARGS[k]}")
        self.generate_kwargs = dict(kwargs)

    def sync(self) -> None:
        if self._cuda:
            self.torch.cuda.synchronize(self._dev)

    def prepare(self, prompts: Sequence[Any]) -> Any:
        """Tokenize once; a prompt given as chat messages (a list of ``{"role", "content"}``) goes
        through the tokenizer's chat template with the generation prompt, whose text already holds
        the special tokens it needs (so none are added again)."""
        tok = self.lm.tokenizer
        if getattr(tok, "pad_token_id", None) is None and getattr(tok, "eos_token_id", None) is not None:
            tok.pad_token = tok.eos_token
        if len(prompts) > 1 and hasattr(tok, "padding_side"):
            tok.padding_side = "left"  # decoder-only models generate after the prompt
        chat = [not isinstance(p, str) for p in prompts]
        if any(chat) and not all(chat):
            raise MeasurementError("quantperf.generate: a batch is all prompts or all message lists, not both")
        if all(chat):
            texts = [chat_text(tok, p) for p in prompts]
            enc = tok(texts, return_tensors="pt", padding=len(prompts) > 1, add_special_tokens=False)
        else:
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
        kw: dict[str, Any] = {"do_sample": False, "num_beams": 1, "pad_token_id": pad,
                              "temperature": None, "top_p": None, "top_k": None}
        if self.generate_kwargs.get("do_sample"):  # sampling asked: the model's own settings apply
            for k in ("temperature", "top_p", "top_k"):
                kw.pop(k)
        kw.update(self.generate_kwargs)
        with no_grad_mode(self.lm.model):
            self.sync()
            t0 = time.perf_counter()
            try:
                out = self.lm.model.generate(**prepared, **kw, max_new_tokens=max_new_tokens,
                                             min_new_tokens=max_new_tokens, streamer=clock)
            except (TypeError, ValueError) as e:
                if not self.generate_kwargs:
                    raise
                raise MeasurementError(
                    f"quantperf.generate: model.generate refused the keyword arguments "
                    f"{', '.join(sorted(self.generate_kwargs))}: {' '.join(str(e).split())}") from None
            self.sync()
            t1 = time.perf_counter()
        n_prompt = prepared["input_ids"].shape[1]
        new = out[:, n_prompt:]
        if int(new.shape[1]) != max_new_tokens:
            given = f" (keyword arguments: {', '.join(sorted(self.generate_kwargs))})" if self.generate_kwargs else ""
            raise MeasurementError(f"quantperf.generate: generate stopped after {int(new.shape[1])} of "
                                   f"{max_new_tokens} new tokens{given}: runs of unequal length cannot be compared")
        first = clock.first if clock.first is not None else t1
        text = ""
        try:
            text = tok.decode(new[0].tolist(), skip_special_tokens=True)
        except Exception:  # a synthetic byte tokenizer has nothing meaningful to say
            text = ""
        return RunTiming(start=t0, first_token=first, end=t1, new_tokens=int(new.shape[1]),
                         batch=int(new.shape[0]), text=text, output_ids=tuple(int(x) for x in new[0].tolist()))


def chat_text(tok: Any, messages: Any) -> str:
    """The prompt text of chat ``messages`` through ``tok``'s chat template, generation prompt added."""
    if not isinstance(messages, (list, tuple)) or not messages or not all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise MeasurementError("quantperf.generate: messages= must be a non-empty list of "
                               "{'role': str, 'content': str} dicts (or a list of such lists for a batch)")
    if not getattr(tok, "chat_template", None):
        raise MeasurementError("quantperf.generate: this tokenizer has no chat template; pass the prompt "
                               "as prompt= instead of messages=")
    return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def _unavailable() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("transformers") is not None else "transformers is not installed"


BACKEND = BackendInfo(name="transformers", runner=TransformersBackend, unavailable=_unavailable)
