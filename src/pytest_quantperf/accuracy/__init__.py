"""Accuracy figures of a causal LM: perplexity, multiple choice, agreement with a reference.

Speed budgets alone let a broken quantization through, so these figures gate accuracy. They
are plain functions of a transformers model and its tokenizer, free of pytest, and import
torch only when called. Every forward pass is batched (right padding plus an attention mask)
and runs on the model's own device, so the built-in evaluations take seconds on a CPU.

- :func:`perplexity`: exp of the mean negative log-likelihood per predicted token, with the
  sliding window of the transformers perplexity guide for texts longer than the window.
- :func:`multiple_choice`: log-likelihood scoring of each choice as a continuation, token for
  token as lm-evaluation-harness's ``HFLM.loglikelihood`` does for ``multiple_choice`` tasks,
  so that ``accuracy`` equals lm-eval's ``acc`` (and ``accuracy_norm`` its ``acc_norm``).
- :func:`compare` / :class:`ReferenceForward` / :func:`compare_with`: KL divergence and top-1
  agreement of next-token distributions against a reference model on the same tokens; the
  reference's forward passes are made once and reused for every model compared with it.

- :mod:`.lm_eval` (imported on use, lm-eval being optional): lm-evaluation-harness tasks on the
  loaded model through lm-eval itself, every question's result kept.

The package keeps one module per figure (``perplexity``, ``mc`` on top of ``loglik``,
``agreement``), the data they read (``datasets``) and the forward passes they share
(``_forward``); this module hands on the names callers use. Refusing accuracy on synthetic
or non-transformers models is the recorder's policy (``recorder.AccuracyRefused``), not these
functions'.
"""
from __future__ import annotations

from .agreement import CompareResult, ReferenceForward, compare, compare_with
from .datasets import BUILTIN, MCItem, default_text, load_dataset, load_text
from .loglik import _encode_pair, loglikelihoods  # noqa: F401  (_encode_pair: the lm-eval tokenization, tested)
from .mc import (DEFAULT_CHOICE_TEMPLATE, DEFAULT_TEMPLATE, FEWSHOT_DELIMITER, MCResult, mc_requests,
                 multiple_choice)
from .perplexity import PerplexityResult, perplexity

__all__ = [
    "BUILTIN", "DEFAULT_CHOICE_TEMPLATE", "DEFAULT_TEMPLATE", "FEWSHOT_DELIMITER", "CompareResult",
    "MCItem", "MCResult", "PerplexityResult", "ReferenceForward", "compare", "compare_with", "default_text",
    "load_dataset", "load_text", "loglikelihoods", "mc_requests", "multiple_choice", "perplexity",
]
