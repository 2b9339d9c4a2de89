"""Agreement with a reference model (KL divergence, top-1 agreement, perplexity ratio) on the
same tokens. The reference's distributions are computed once (:class:`ReferenceForward`) and
reused for every quantized model compared with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from ..models.weights import no_grad_mode
from ._forward import _batches, _check_positive, _encode, _evaluating, _forward_logits, _pad_id
from .datasets import default_text


@dataclass(frozen=True)
class CompareResult:
    """A model against its reference on the same tokens.

    ``kl_div``: mean over positions of KL(reference ‖ model) of the next-token distributions,
    in nats; ``top1_agreement``: share of positions whose most likely next token is the same;
    ``perplexity_ratio``: the model's perplexity over the reference's on those tokens.
    ``top_k`` is None when KL is exact over the whole vocabulary, else the number of reference
    tokens kept per position (the rest merged into one bucket: a lower bound of the true KL).
    """

    kl_div: float
    top1_agreement: float
    perplexity_ratio: float
    n_positions: int
    perplexity: float
    reference_perplexity: float
    kl_max: float
    top_k: int | None = None


@dataclass(frozen=True, eq=False)
class ReferenceForward:
    """The reference model's next-token distributions on fixed token windows, computed once
    and reused for every model compared with it (five quant configs: one reference pass).

    ``windows`` are the token ids; per window the tensors (float32, on the CPU) hold one row
    per scored position (every position but the window's last): ``probs`` the probabilities
    over the whole vocabulary ``[positions, vocab]`` and ``plogp`` their ``sum p log p``; or,
    with ``top_k``, the k largest ``probs``, their ``logp`` and token ``indices``. ``nll`` is
    the negative log-likelihood of the actual next token and ``top1`` the most likely token.
    """

    windows: tuple[tuple[int, ...], ...]
    probs: tuple[Any, ...]
    plogp: tuple[Any, ...] | None
    logp: tuple[Any, ...] | None
    indices: tuple[Any, ...] | None
    nll: tuple[Any, ...]
    top1: tuple[Any, ...]
    vocab_size: int
    top_k: int | None
    max_length: int
    pad_id: int

    @property
    def n_positions(self) -> int:
        return sum(len(w) - 1 for w in self.windows)

    @property
    def perplexity(self) -> float:
        total = math.fsum(float(t.double().sum()) for t in self.nll)
        return math.exp(total / self.n_positions)

    @property
    def nbytes(self) -> int:
        """Host memory the stored distributions take."""
        parts = [self.probs, self.plogp or (), self.logp or (), self.indices or ()]
        return sum(t.numel() * t.element_size() for part in parts for t in part)

    @classmethod
    def build(cls, reference, tokenizer, texts: Iterable[str] | None = None, *, max_length: int = 512,
              batch_size: int = 8, max_positions: int | None = 2048, top_k: int | None = None) -> "ReferenceForward":
        """Run ``reference`` once over ``texts`` (default: the built-in text).

        Each text is tokenized as ``tokenizer(text)`` and cut into consecutive windows of
        ``max_length`` tokens; windows stop once ``max_positions`` positions are covered (None:
        all). Full distributions take ``positions x vocab x 4`` bytes (2048 x 49152: 384 MiB);
        ``top_k`` keeps only the reference's k most likely tokens per position.
        """
        import torch

        _check_positive("max_length", max_length)
        _check_positive("batch_size", batch_size)
        _check_positive("max_positions", max_positions)
        _check_positive("top_k", top_k)
        if max_length < 2:
            raise ValueError("max_length must be at least 2")
        if texts is None:
            texts = [default_text()]
        elif isinstance(texts, str):
            texts = [texts]
        windows: list[tuple[int, ...]] = []
        covered = 0
        for text in texts:
            ids = _encode(tokenizer, text)
            for b in range(0, len(ids), max_length):
                w = ids[b: b + max_length]
                if max_positions is not None:
                    w = w[: max_positions - covered + 1]
                if len(w) < 2:
                    continue
                windows.append(tuple(w))
                covered += len(w) - 1
        if not windows:
            raise ValueError("the comparison texts give no window of 2 or more tokens: pass longer texts")
        pad = _pad_id(tokenizer)
        n = len(windows)
        probs: list[Any] = [None] * n
        plogp: list[Any] = [None] * n
        logp: list[Any] = [None] * n
        idx: list[Any] = [None] * n
        nll: list[Any] = [None] * n
        top1: list[Any] = [None] * n
        vocab = 0
        reference.eval()
        with no_grad_mode(reference):
            for batch in _batches([len(w) for w in windows], batch_size):
                logits = _forward_logits(reference, [windows[i] for i in batch], pad)
                for row, i in enumerate(batch):
                    m = len(windows[i])
                    lp = logits[row, : m - 1].float().log_softmax(-1)
                    vocab = lp.shape[-1]
                    tgt = torch.tensor(windows[i][1:], dtype=torch.long, device=lp.device)
                    nll[i] = (-lp.gather(1, tgt[:, None])[:, 0]).cpu()
                    top1[i] = lp.argmax(-1).cpu()
                    if top_k is None:
                        p = lp.exp()
                        plogp[i] = _dot(p, lp).cpu()
                        probs[i] = p.cpu()
                    else:
                        v, k = lp.topk(min(top_k, vocab), dim=-1)
                        logp[i], idx[i], probs[i] = v.cpu(), k.cpu(), v.exp().cpu()
                del logits
        full = top_k is None
        return cls(windows=tuple(windows), probs=tuple(probs), plogp=tuple(plogp) if full else None,
                   logp=None if full else tuple(logp), indices=None if full else tuple(idx),
                   nll=tuple(nll), top1=tuple(top1), vocab_size=vocab, top_k=top_k,
                   max_length=max_length, pad_id=pad)


def _dot(p, lq):
    """Row-wise ``sum p * log q``, skipping p == 0 terms (0 * -inf would be nan)."""
    import torch

    return torch.where(p > 0, p * lq, torch.zeros((), dtype=p.dtype, device=p.device)).sum(-1)


def compare_with(model, ref: ReferenceForward, *, batch_size: int = 8) -> CompareResult:
    """``model`` against a :class:`ReferenceForward` on the reference's own tokens."""
    import torch

    _check_positive("batch_size", batch_size)
    kl_total = 0.0
    kl_max = 0.0
    agree = 0
    nll_total = 0.0
    with _evaluating(model):
        for batch in _batches([len(w) for w in ref.windows], batch_size):
            logits = _forward_logits(model, [ref.windows[i] for i in batch], ref.pad_id)
            for row, i in enumerate(batch):
                m = len(ref.windows[i])
                lq = logits[row, : m - 1].float().log_softmax(-1)
                if lq.shape[-1] != ref.vocab_size:
                    raise ValueError(f"the model's vocabulary ({lq.shape[-1]} tokens) differs from the "
                                     f"reference's ({ref.vocab_size}): compare models that share a tokenizer")
                dev = lq.device
                tgt = torch.tensor(ref.windows[i][1:], dtype=torch.long, device=dev)
                nll_total += float(-lq.gather(1, tgt[:, None]).double().sum())
                agree += int((lq.argmax(-1) == ref.top1[i].to(dev)).sum())
                p = ref.probs[i].to(dev)
                if ref.indices is None:
                    # KL(p || q) = sum p log p - sum p log q
                    kl = ref.plogp[i].to(dev) - _dot(p, lq)
                else:
                    # KL of the distributions coarse-grained to the reference's top k + "the rest"
                    lq_k = lq.gather(1, ref.indices[i].to(dev))
                    ref_k = _dot(p, ref.logp[i].to(dev)) - _dot(p, lq_k)
                    p_rest = (1.0 - p.sum(-1)).clamp_min(0.0)
                    q_rest = (1.0 - lq_k.exp().sum(-1)).clamp_min(1e-12)
                    tail = p_rest * (p_rest.clamp_min(1e-12).log() - q_rest.log())
                    kl = ref_k + torch.where(p_rest > 0, tail, torch.zeros_like(tail))
                kl = kl.double().clamp_min(0.0)  # rounding can dip a hair below zero
                kl_total += float(kl.sum())
                kl_max = max(kl_max, float(kl.max()))
            del logits
    n = ref.n_positions
    ppl = math.exp(nll_total / n)
    ref_ppl = ref.perplexity
    return CompareResult(kl_div=kl_total / n, top1_agreement=agree / n, perplexity_ratio=ppl / ref_ppl,
                         n_positions=n, perplexity=ppl, reference_perplexity=ref_ppl, kl_max=kl_max,
                         top_k=ref.top_k)


def compare(model, reference, tokenizer, texts: list[str] | None = None, *, max_length: int = 512,
            batch_size: int = 8, reference_logprobs: ReferenceForward | None = None,
            max_positions: int | None = 2048, top_k: int | None = None) -> CompareResult:
    """KL(reference ‖ model), top-1 agreement and perplexity ratio on the same tokens.

    Pass ``reference_logprobs`` (a :class:`ReferenceForward`) to reuse the reference's forward
    passes; otherwise they are computed here from ``reference`` on ``texts`` (default: the
    built-in text) in windows of ``max_length`` tokens.
    """
    ref = reference_logprobs
    if ref is None:
        if reference is None:
            raise ValueError("compare needs a reference model or reference_logprobs")
        ref = ReferenceForward.build(reference, tokenizer, texts, max_length=max_length,
                                     batch_size=batch_size, max_positions=max_positions, top_k=top_k)
    return compare_with(model, ref, batch_size=batch_size)
