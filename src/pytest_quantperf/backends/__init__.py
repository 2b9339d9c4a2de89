"""Generation backends behind ``quantperf.generate``.

A backend is one small protocol: turn prompts into inputs once, then run one greedy generation of
exactly ``max_new_tokens`` new tokens and say when it started, when the first token existed and
when it ended. Timing, repeats, memory and budgets stay in :mod:`pytest_quantperf.measure`, so a
new backend (llama.cpp, MLX, ...) gets all of them for free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class RunTiming:
    """One generation: perf_counter timestamps and what came out."""

    start: float
    first_token: float
    end: float
    new_tokens: int  # per sequence
    batch: int
    text: str = ""
    output_ids: tuple[int, ...] = ()


@runtime_checkable
class Backend(Protocol):
    name: str

    def prepare(self, prompts: Sequence[str]) -> Any:
        """Tokenize once, outside the timed region."""

    def run(self, prepared: Any, max_new_tokens: int) -> RunTiming:
        """One greedy generation of exactly ``max_new_tokens`` tokens (EOS must not stop it)."""

    def prompt_tokens(self, prepared: Any) -> int:
        """Prompt length in tokens (per sequence, the longest)."""


def backend_for(lm: Any) -> Backend:
    """The backend that drives a loaded model handle."""
    name = getattr(lm, "backend", "transformers")
    if name == "transformers":
        from .transformers import TransformersBackend

        return TransformersBackend(lm)
    if name == "llama_cpp":
        from .llama_cpp import LlamaCppBackend

        return LlamaCppBackend(lm)
    if name == "mlx":
        from .mlx import MlxBackend

        return MlxBackend(lm)
    raise ValueError(f"unknown backend {name!r}")
