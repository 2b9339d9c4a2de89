"""Perplexity with the sliding window of the transformers perplexity guide: every token predicted
once, windows batched, so texts longer than the model's context are measured the same way
on every backend device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ._forward import (_DEFAULT_MAX_LENGTH, _batches, _check_positive, _context_length, _encode,
                       _evaluating, _forward_logits, _pad_id)


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of one text: ``exp(nll_mean)`` over ``n_tokens`` predicted tokens.

    ``per_token_nll`` (in token order, when asked for) lets reports show where a quantized
    model loses; ``max_length`` and ``stride`` are the window actually used.
    """

    perplexity: float
    nll_mean: float
    n_tokens: int
    per_token_nll: tuple[float, ...] | None = None
    max_length: int = 0
    stride: int = 0
    n_windows: int = 0


def _windows(n: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows ``(begin, end, first_scored)`` over ``n`` tokens, as the transformers
    perplexity guide builds them: each window scores only the tokens no earlier window scored;
    the first token of each window has no context inside it and is never scored there."""
    out: list[tuple[int, int, int]] = []
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        first = max(prev_end, begin + 1)
        if first < end:
            out.append((begin, end, first))
        prev_end = end
        if end == n:
            break
    return out


def perplexity(model, tokenizer, text: str, *, stride: int | None = None, max_length: int | None = None,
               batch_size: int = 8, per_token: bool = False) -> PerplexityResult:
    """Perplexity of ``model`` on ``text``: ``exp`` of the mean negative log-likelihood per
    predicted token.

    Tokens are exactly what ``tokenizer(text)`` gives (special tokens as the tokenizer adds
    them by default). ``max_length`` (default: the model's context, at most 4096) is the window;
    a longer text is covered by windows starting every ``stride`` tokens (default
    ``max_length // 2``), each scoring only the tokens that the previous windows did not score, so
    every token is predicted once, with up to ``max_length - stride`` tokens of context. Windows
    are batched, right-padded with an attention mask.
    """
    import torch

    if not isinstance(text, str) or not text:
        raise ValueError("perplexity needs a non-empty text")
    _check_positive("max_length", max_length)
    _check_positive("stride", stride)
    _check_positive("batch_size", batch_size)
    ctx = _context_length(model)
    if max_length is None:
        max_length = min(ctx or _DEFAULT_MAX_LENGTH, _DEFAULT_MAX_LENGTH)
    elif ctx is not None and max_length > ctx:
        raise ValueError(f"max_length={max_length} exceeds the model's context of {ctx} tokens: "
                         f"pass max_length <= {ctx}")
    if max_length < 2:
        raise ValueError("max_length must be at least 2 (one token of context, one predicted)")
    if stride is None:
        stride = max(1, max_length // 2)
    if stride > max_length:
        raise ValueError(f"stride={stride} is larger than max_length={max_length}: tokens between "
                         "windows would never be scored; pass stride <= max_length")
    ids = _encode(tokenizer, text)
    if len(ids) < 2:
        raise ValueError(f"the text has {len(ids)} token(s); perplexity needs at least 2")
    wins = _windows(len(ids), max_length, stride)
    pad = _pad_id(tokenizer)
    nll = [0.0] * len(ids)
    with _evaluating(model):
        for batch in _batches([e - b for b, e, _ in wins], batch_size):
            rows = [ids[wins[i][0]:wins[i][1]] for i in batch]
            logits = _forward_logits(model, rows, pad)
            for row, i in enumerate(batch):
                b, e, first = wins[i]
                # logits at window position p predict token b + p + 1
                lg = logits[row, first - b - 1 : e - b - 1].float()
                tgt = torch.tensor(ids[first:e], dtype=torch.long, device=lg.device)
                vals = torch.nn.functional.cross_entropy(lg, tgt, reduction="none").double().cpu().tolist()
                nll[first:e] = vals
            del logits
    scored = [nll[t] for b, e, first in wins for t in range(first, e)]
    mean = math.fsum(scored) / len(scored)
    return PerplexityResult(
        perplexity=math.exp(mean), nll_mean=mean, n_tokens=len(scored),
        per_token_nll=tuple(scored) if per_token else None,
        max_length=max_length, stride=stride, n_windows=len(wins))
