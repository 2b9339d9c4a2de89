"""Multiple-choice accuracy (lm-eval's ``acc`` and ``acc_norm``): renders each question and its
choices into requests and picks the most likely choice; per-item outcomes are kept so runs
can be compared pairwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ._forward import _check_positive
from .datasets import MCItem, load_dataset
from .loglik import loglikelihoods

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
DEFAULT_CHOICE_TEMPLATE = " {choice}"
FEWSHOT_DELIMITER = "\n\n"


@dataclass(frozen=True)
class MCResult:
    """Multiple-choice outcome; per-item tuples (dataset order) allow paired tests between runs.

    ``accuracy`` picks the choice with the highest summed log-likelihood (lm-eval ``acc``);
    ``accuracy_norm`` divides each by the choice's length in characters, as lm-eval's
    ``acc_norm`` does (``len(choice)`` of the choice text, without the leading space).
    """

    accuracy: float
    accuracy_norm: float
    n: int
    correct: tuple[int, ...]
    correct_norm: tuple[int, ...]
    chosen: tuple[int, ...]
    chosen_norm: tuple[int, ...]
    loglikelihoods: tuple[tuple[float, ...], ...]


def _render(template: str | Callable[[MCItem], str], item: MCItem) -> str:
    if callable(template):
        return template(item)
    return template.format(question=item.question, choices=item.choices)


def _argmax(values: Sequence[float]) -> int:
    """First index of the maximum, as numpy's argmax breaks ties."""
    best = 0
    for k, v in enumerate(values):
        if v > values[best]:
            best = k
    return best


def mc_requests(items: Any, *, limit: int | None = None, fewshot: int = 0,
                template: str | Callable[[MCItem], str] = DEFAULT_TEMPLATE,
                choice_template: str = DEFAULT_CHOICE_TEMPLATE,
                ) -> tuple[list[MCItem], list[tuple[str, str]], list[tuple[int, int]]]:
    """The (context, continuation) strings :func:`multiple_choice` scores: the items evaluated,
    the requests (one per choice, in order) and each item's ``[start, end)`` span of requests."""
    _check_positive("limit", limit)
    if not isinstance(fewshot, int) or isinstance(fewshot, bool) or fewshot < 0:
        raise ValueError(f"fewshot must be a non-negative integer, got {fewshot!r}")
    if isinstance(items, (list, tuple)) and items and all(isinstance(i, MCItem) for i in items):
        all_items = list(items)
    else:
        all_items = load_dataset(items)
    if fewshot and fewshot >= len(all_items):
        raise ValueError(f"fewshot={fewshot} needs more items than the dataset's {len(all_items)}")
    chosen = all_items[:limit] if limit else all_items
    requests: list[tuple[str, str]] = []
    spans: list[tuple[int, int]] = []
    for idx, item in enumerate(chosen):
        context = _render(template, item)
        if fewshot:
            shots = [it for k, it in enumerate(all_items) if k != idx][:fewshot]
            examples = [_render(template, s) + choice_template.format(choice=s.choices[s.answer]) for s in shots]
            context = FEWSHOT_DELIMITER.join(examples) + FEWSHOT_DELIMITER + context
        start = len(requests)
        requests.extend((context, choice_template.format(choice=c)) for c in item.choices)
        spans.append((start, len(requests)))
    return chosen, requests, spans


def multiple_choice(model, tokenizer, items: Any, *, limit: int | None = None, fewshot: int = 0,
                    template: str | Callable[[MCItem], str] = DEFAULT_TEMPLATE,
                    choice_template: str = DEFAULT_CHOICE_TEMPLATE, batch_size: int = 16,
                    share_context: bool = True,
                    scorer: Callable[[list[tuple[str, str]]], Sequence[float]] | None = None) -> MCResult:
    """Multiple-choice accuracy by log-likelihood scoring, as lm-evaluation-harness does.

    ``items``: a list of :class:`MCItem` or anything :func:`load_dataset` accepts. Each
    choice is scored as the continuation ``choice_template.format(choice=...)`` of the context
    ``template.format(question=..., choices=...)`` (or ``template(item)`` when callable),
    tokenized like lm-eval's ``HFLM`` and summed over the continuation's tokens. With
    ``fewshot=k`` the context is preceded by the first ``k`` other items of the set, each
    rendered as its question plus its correct choice, joined with ``"\\n\\n"`` (lm-eval's
    ``fewshot_delimiter``; lm-eval draws its examples at random, we take them in order so that
    runs stay comparable). ``limit`` keeps the first ``limit`` items, as lm-eval's ``--limit``.
    ``share_context`` runs each question once for all its choices (see :func:`loglikelihoods`).
    ``scorer`` scores the (context, continuation) requests in place of a transformers forward pass:
    how a model of another backend (llama.cpp) answers the same questions.
    """
    _check_positive("batch_size", batch_size)
    chosen_items, requests, spans = mc_requests(items, limit=limit, fewshot=fewshot, template=template,
                                                choice_template=choice_template)
    lls = (list(scorer(requests)) if scorer is not None else
           loglikelihoods(model, tokenizer, requests, batch_size=batch_size, share_context=share_context))
    correct, correct_norm, chosen, chosen_norm, per_item = [], [], [], [], []
    for item, (a, b) in zip(chosen_items, spans):
        ll = lls[a:b]
        pred = _argmax(ll)
        pred_norm = _argmax([v / len(c) for v, c in zip(ll, item.choices)])
        chosen.append(pred)
        chosen_norm.append(pred_norm)
        correct.append(int(pred == item.answer))
        correct_norm.append(int(pred_norm == item.answer))
        per_item.append(tuple(ll))
    n = len(chosen_items)
    return MCResult(accuracy=sum(correct) / n, accuracy_norm=sum(correct_norm) / n, n=n,
                    correct=tuple(correct), correct_norm=tuple(correct_norm), chosen=tuple(chosen),
                    chosen_norm=tuple(chosen_norm), loglikelihoods=tuple(per_item))
