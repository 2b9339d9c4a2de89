"""MLX (``mlx-lm``) as a backend: greedy, fixed length, with an explicit KV cache.

MLX is lazy: nothing runs until an array is evaluated, so every step ends with ``mx.eval`` of
the chosen token; the first-token timestamp is taken after the prompt's token really exists.
Runs on Apple Silicon (Metal) and, with ``mlx[cpu]``, on a Linux CPU.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from ..errors import MeasurementError
from . import BackendInfo, RunTiming


class MlxBackend:
    name = "mlx"

    def __init__(self, lm: Any):
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        self.lm = lm
        self.handle = lm.model
        self.mx = mx
        self._make_cache = make_prompt_cache

    def sync(self) -> None:
        self.mx.synchronize()

    def prepare(self, prompts: Sequence[str]) -> Any:
        if len(prompts) != 1:
            raise MeasurementError(
                f"the mlx backend generates one sequence at a time; got a batch of {len(prompts)} prompts. "
                "Pass one prompt (or measure each prompt in its own generate call)")
        ids = list(self.lm.tokenizer.encode(prompts[0]))
        if not ids:
            raise MeasurementError("the prompt is empty after tokenization: give at least one token of text")
        return self.mx.array([ids])

    def prompt_tokens(self, prepared: Any) -> int:
        return int(prepared.shape[1])

    def run(self, prepared: Any, max_new_tokens: int) -> RunTiming:
        mx = self.mx
        model = self.handle.model
        t0 = time.perf_counter()
        cache = self._make_cache(model)
        logits = model(prepared, cache=cache)
        y = mx.argmax(logits[:, -1, :], axis=-1)
        mx.eval(y)
        t_first = time.perf_counter()
        out = [int(y.item())]
        while len(out) < max_new_tokens:  # EOS does not stop the loop: fixed-length runs
            logits = model(y[:, None], cache=cache)
            y = mx.argmax(logits[:, -1, :], axis=-1)
            mx.eval(y)
            out.append(int(y.item()))
        t1 = time.perf_counter()
        text = self.lm.tokenizer.decode(out)
        return RunTiming(start=t0, first_token=t_first, end=t1, new_tokens=len(out), batch=1, text=text,
                         output_ids=tuple(out))


def _load(model: str = "default", **kw: Any) -> Any:
    from ..loaders import load_mlx

    return load_mlx(model, **kw)


def _unavailable() -> str | None:
    from ..loaders import unavailable_reason

    return unavailable_reason("mlx")


BACKEND = BackendInfo(name="mlx", runner=MlxBackend, load=_load, unavailable=_unavailable)
