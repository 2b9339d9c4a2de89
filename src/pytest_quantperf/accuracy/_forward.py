"""Forward passes shared by every accuracy figure: inputs on the model's device, right padding
with an attention mask, batches bounded in logits memory, token ids exactly as the tokenizer
gives them. One place, so perplexity, multiple choice and agreement see the same tokens.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from ..models.weights import no_grad_mode

# Most positions whose logits one forward pass may hold (positions x vocab floats): bounds the
# memory of batched windows (4096 x 49152 float32 = 768 MiB).
_TOKEN_BUDGET = 4096
# Default window of perplexity when the model's context is longer.
_DEFAULT_MAX_LENGTH = 4096


def _device(model) -> Any:
    """Where inputs go: the model's device (its first parameter's for dispatched models)."""
    dev = getattr(model, "device", None)
    if dev is not None:
        return dev
    return next(model.parameters()).device


def _context_length(model) -> int | None:
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    return 0


def _encode(tokenizer, text: str, **kw: Any) -> list[int]:
    """Token ids exactly as ``tokenizer(text)`` gives them (special tokens as its default)."""
    ids = tokenizer(text, **kw)["input_ids"]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(i) for i in ids]


@contextlib.contextmanager
def _evaluating(model) -> Iterator[None]:
    """Eval mode and no autograd for a measurement, the model's training flag restored after:
    dropout on would make every figure noise, and a caller's training model stays one."""
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad_mode(model):
            yield
    finally:
        if was_training:
            model.train()


def _forward_logits(model, rows: Sequence[Sequence[int]], pad_id: int):
    """Logits of a right-padded batch, with the attention mask; shape [batch, max_len, vocab]."""
    import torch

    dev = _device(model)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False)
    return out.logits


def _batches(lengths: Sequence[int], batch_size: int, token_budget: int = _TOKEN_BUDGET) -> Iterator[list[int]]:
    """Indices grouped into batches: at most ``batch_size`` rows and about ``token_budget``
    padded positions each (so the logits of one forward pass stay bounded in memory)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # longest first, little padding
    batch: list[int] = []
    for i in order:
        width = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * width > token_budget):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
