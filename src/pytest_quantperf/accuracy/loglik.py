"""Log-likelihood of continuations, token for token as lm-evaluation-harness's
``HFLM.loglikelihood`` builds its requests, so scores match lm-eval's. The context-sharing path
(one key/value cache per question for all its choices) is the fragile part: it falls back to
the plain path whenever the model returns no reorderable cache.
"""
from __future__ import annotations

from typing import Sequence

from ._forward import (_batches, _check_positive, _context_length, _device, _encode, _evaluating,
                       _forward_logits, _pad_id)


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``TemplateLM._encode_pair`` for causal models: trailing spaces of the context
    move to the continuation; the whole string is encoded and the continuation's tokens are
    those beyond the context's own encoding (so a token spanning the seam counts to the answer)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    return ctx, whole[len(ctx):]


def _prefix_token_id(tokenizer) -> int:
    """lm-eval's ``prefix_token_id``: BOS, else EOS (the context of an empty-context request)."""
    for attr in ("bos_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    return _pad_id(tokenizer)


def _request(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of one (context, continuation) pair, as lm-eval's ``loglikelihood`` makes them."""
    if context == "":
        cont = _encode(tokenizer, continuation, add_special_tokens=False)
        prefix = _prefix_token_id(tokenizer)
        if cont and cont[0] == prefix:
            return cont[:1], cont[1:]
        return [prefix], cont
    return _encode_pair(tokenizer, context, continuation)


def _accepts(model, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _ll_plain(model, enc: Sequence[tuple[list[int], list[int]]], limit: int, pad: int, batch_size: int) -> list[float]:
    """One forward pass per (context + continuation), as lm-eval's ``_loglikelihood_tokens``."""
    import torch

    # input = (context + continuation)[-(limit + 1):][:-1]; the continuation's tokens are its tail
    inputs = [(ctx + cont)[-(limit + 1):][:-1] for ctx, cont in enc]
    out = [0.0] * len(enc)
    for batch in _batches([len(r) for r in inputs], batch_size):
        logits = _forward_logits(model, [inputs[i] for i in batch], pad)
        for row, i in enumerate(batch):
            cont = enc[i][1]
            n_in = len(inputs[i])
            lg = logits[row, n_in - len(cont): n_in].float().log_softmax(-1)
            tgt = torch.tensor(cont, dtype=torch.long, device=lg.device)
            out[i] = float(lg.gather(1, tgt[:, None]).sum().double())
        del logits
    return out


def _ll_shared(model, enc: Sequence[tuple[list[int], list[int]]], pad: int, batch_size: int) -> list[float] | None:
    """The same log-likelihoods with each distinct context run once: its key/value cache is
    shared by all its continuations (the choices of one question), which cuts the tokens
    through the model about threefold on multiple-choice sets. Same math as :func:`_ll_plain`
    up to float rounding; None when the model returns no cache (then the caller falls back)."""
    import torch

    dev = _device(model)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(enc):
        groups.setdefault(tuple(ctx), []).append(i)
    keys = sorted(groups, key=len, reverse=True)
    keep_one = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    cache_kw = "cache" if _accepts(model, "cache") else "past_key_values"  # renamed in transformers 5
    out = [0.0] * len(enc)
    for picked in _batches([len(c) - 1 for c in keys], batch_size):
        chunk = [keys[g] for g in picked]
        # 1) every context but its last token, right-padded: fills the cache
        width = max(len(c) - 1 for c in chunk)
        ids1 = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask1 = torch.zeros((len(chunk), width), dtype=torch.long)
        for g, c in enumerate(chunk):
            ids1[g, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            mask1[g, : len(c) - 1] = 1
        first = model(input_ids=ids1.to(dev), attention_mask=mask1.to(dev), use_cache=True, **keep_one)
        cache = getattr(first, "cache", None)
        if cache is None:
            cache = getattr(first, "past_key_values", None)
        if cache is None or not hasattr(cache, "reorder_cache"):
            return None
        # 2) per continuation: the context's last token + the continuation but its last token,
        # placed after the context (explicit positions), attending to the context's cache
        req = [i for c in chunk for i in groups[c]]
        owner = [g for g, c in enumerate(chunk) for _ in groups[c]]
        cache.reorder_cache(torch.tensor(owner, dtype=torch.long, device=dev))
        cwidth = max(len(enc[i][1]) for i in req)
        ids2 = torch.full((len(req), cwidth), pad, dtype=torch.long)
        mask2 = torch.zeros((len(req), width + cwidth), dtype=torch.long)
        pos2 = torch.zeros((len(req), cwidth), dtype=torch.long)
        for r, (i, g) in enumerate(zip(req, owner)):
            ctx, cont = enc[i]
            inp = [ctx[-1]] + cont[:-1]
            ids2[r, : len(inp)] = torch.tensor(inp, dtype=torch.long)
            mask2[r, :width] = mask1[g]
            mask2[r, width: width + len(inp)] = 1
            pos2[r] = torch.arange(len(ctx) - 1, len(ctx) - 1 + cwidth)
        logits = model(input_ids=ids2.to(dev), attention_mask=mask2.to(dev), position_ids=pos2.to(dev),
                       use_cache=True, **{cache_kw: cache}).logits
        for r, i in enumerate(req):
            cont = enc[i][1]
            lg = logits[r, : len(cont)].float().log_softmax(-1)
            tgt = torch.tensor(cont, dtype=torch.long, device=lg.device)
            out[i] = float(lg.gather(1, tgt[:, None]).sum().double())
        del logits, cache, first
    return out


def loglikelihoods(model, tokenizer, requests: Sequence[tuple[str, str]], *, batch_size: int = 16,
                   max_length: int | None = None, share_context: bool = True) -> list[float]:
    """Summed log-probability of each continuation given its context (lm-eval ``loglikelihood``).

    Token ids are lm-eval's (see :func:`_encode_pair`); inputs longer than the model's context
    lose tokens on the left, as lm-eval truncates them. With ``share_context`` the continuations
    of one context reuse its key/value cache (same figures up to float rounding, ~3x faster);
    without, every pair is its own sequence, exactly as lm-eval runs it. ``batch_size`` is the
    number of sequences per forward pass: of contexts when they are shared (their continuations
    then go through together in a second pass), else of (context + continuation) pairs.
    """
    _check_positive("batch_size", batch_size)
    enc = [_request(tokenizer, c, x) for c, x in requests]
    for k, (ctx, cont) in enumerate(enc):
        if not cont:
            raise ValueError(f"request {k}: the continuation {requests[k][1]!r} encodes to no tokens "
                             "beyond the context")
    if not enc:
        return []
    limit = max_length or _context_length(model) or 2048
    pad = _pad_id(tokenizer)
    with _evaluating(model):
        fits = all(len(ctx) >= 2 and len(ctx) + len(cont) <= limit + 1 for ctx, cont in enc)
        if share_context and fits:
            out = _ll_shared(model, enc, pad, batch_size)
            if out is not None:
                return out
        return _ll_plain(model, enc, limit, pad, batch_size)
