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
"""
from __future__ import annotations

import csv
import io
import json
import math
import numbers
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
DEFAULT_CHOICE_TEMPLATE = " {choice}"
FEWSHOT_DELIMITER = "\n\n"
BUILTIN = "builtin"

# Most positions whose logits one forward pass may hold (positions x vocab floats): bounds the
# memory of batched windows (4096 x 49152 float32 = 768 MiB).
_TOKEN_BUDGET = 4096
# Default window of perplexity when the model's context is longer.
_DEFAULT_MAX_LENGTH = 4096


# ----------------------------------------------------------------------------- helpers


def _refuse_synthetic(synthetic: bool) -> None:
    if synthetic:
        raise ValueError(
            "accuracy metrics refused on a synthetic model: random weights have no accuracy, so "
            "perplexity, multiple-choice accuracy, KL and top-1 agreement on it mean nothing; "
            "measure accuracy on a model with real weights (e.g. 'default')")


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


# ----------------------------------------------------------------------------- reference text


def default_text() -> str:
    """The built-in public-domain English reference text (see ``data/SOURCES.md``)."""
    return resources.files("pytest_quantperf").joinpath("data/reference_text.txt").read_text(encoding="utf-8")


def load_text(path: str | Path) -> str:
    """A UTF-8 text file's content, with an error that says what to do when it cannot be read."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"evaluation text file {str(p)!r} does not exist: pass an existing "
                         "UTF-8 text file, or no path to use the built-in reference text") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"evaluation text file {str(p)!r} is not UTF-8 text ({e}): "
                         "save it as UTF-8") from None


# ----------------------------------------------------------------------------- perplexity


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
               batch_size: int = 8, per_token: bool = False, synthetic: bool = False) -> PerplexityResult:
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

    _refuse_synthetic(synthetic)
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
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode():
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
    finally:
        if was_training:
            model.train()
    scored = [nll[t] for b, e, first in wins for t in range(first, e)]
    mean = math.fsum(scored) / len(scored)
    return PerplexityResult(
        perplexity=math.exp(mean), nll_mean=mean, n_tokens=len(scored),
        per_token_nll=tuple(scored) if per_token else None,
        max_length=max_length, stride=stride, n_windows=len(wins))


# ----------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: ``answer`` is the index of the correct choice."""

    question: str
    choices: tuple[str, ...]
    answer: int


def _row_error(where: str, problem: str) -> ValueError:
    return ValueError(f"multiple-choice dataset {where}: {problem}")


def _parse_row(row: Any, where: str, *, csv_cell: bool = False) -> MCItem:
    if not isinstance(row, Mapping):
        raise _row_error(where, f"expected an object with 'question', 'choices', 'answer', got {type(row).__name__}")
    question = row.get("question")
    if question is None or (isinstance(question, float) and math.isnan(question)) or not str(question).strip():
        raise _row_error(where, "missing or empty 'question'")
    if not isinstance(question, str):
        question = str(question)
    if "choices" not in row:
        raise _row_error(where, "missing 'choices'")
    choices_raw = row["choices"]
    if isinstance(choices_raw, str):
        s = choices_raw.strip()
        if s.startswith("["):
            try:
                choices_raw = json.loads(s)
            except json.JSONDecodeError as e:
                raise _row_error(where, f"'choices' looks like a JSON list but does not parse ({e.msg})") from None
        elif csv_cell or "|" in s:
            choices_raw = [c.strip() for c in s.split("|")] if s else []
        else:
            raise _row_error(where, "'choices' must be a list of strings (or, in CSV, a JSON list or "
                                    "'|'-separated text)")
    elif hasattr(choices_raw, "tolist") and not isinstance(choices_raw, (list, tuple)):
        choices_raw = choices_raw.tolist()  # numpy array from a DataFrame
    if not isinstance(choices_raw, (list, tuple)):
        raise _row_error(where, f"'choices' must be a list, got {type(choices_raw).__name__}")
    if len(choices_raw) == 0:
        raise _row_error(where, "empty 'choices'")
    choices: list[str] = []
    for k, c in enumerate(choices_raw):
        if c is None or isinstance(c, (list, dict, bool)):
            raise _row_error(where, f"choice {k} is {c!r}, not text")
        c = c if isinstance(c, str) else str(c)
        if not c:
            raise _row_error(where, f"choice {k} is empty")
        choices.append(c)
    if len(choices) < 2:
        raise _row_error(where, f"needs at least 2 choices, got {len(choices)}")
    if "answer" not in row or row["answer"] is None:
        raise _row_error(where, "missing 'answer' (the index of the correct choice, or its text)")
    ans = row["answer"]
    if isinstance(ans, bool):
        raise _row_error(where, f"'answer' is {ans!r}: give the index of the correct choice or its text")
    if isinstance(ans, float) and ans.is_integer():
        ans = int(ans)
    if isinstance(ans, str) and csv_cell:
        s = ans.strip()
        if s.lstrip("-").isdigit():
            ans = int(s)
    if isinstance(ans, numbers.Integral):
        idx = int(ans)
        if not 0 <= idx < len(choices):
            raise _row_error(where, f"answer index {idx} is out of range for {len(choices)} choices "
                                    f"(valid: 0..{len(choices) - 1})")
    elif isinstance(ans, str):
        if ans not in choices:
            raise _row_error(where, f"answer {ans!r} is not among the choices {choices!r}")
        idx = choices.index(ans)
    else:
        raise _row_error(where, f"'answer' must be an integer index or the choice text, got {type(ans).__name__}")
    return MCItem(question=question, choices=tuple(choices), answer=idx)


def _builtin_path() -> Any:
    return resources.files("pytest_quantperf").joinpath("data/mc_builtin.jsonl")


def _load_jsonl(text: str, name: str) -> list[MCItem]:
    items: list[MCItem] = []
    row_no = 0
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row_no += 1
        where = f"{name} row {row_no} (line {line_no})"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise _row_error(where, f"not valid JSON ({e.msg})") from None
        items.append(_parse_row(row, where))
    return items


def _load_csv(text: str, name: str) -> list[MCItem]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"question", "choices", "answer"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"multiple-choice dataset {name}: the CSV header lacks column(s) "
                         f"{', '.join(sorted(missing))}; it needs question, choices, answer")
    return [_parse_row(row, f"{name} row {i} (line {reader.line_num})", csv_cell=True)
            for i, row in enumerate(reader, 1)]


def load_dataset(dataset: Any) -> list[MCItem]:
    """Multiple-choice items from ``"builtin"``, a JSONL/JSON/CSV path, a list of dicts (or of
    :class:`MCItem`) or a pandas DataFrame, each row with ``question``, ``choices`` and ``answer``
    (0-based index or the choice's text). A bad row is a ValueError naming the row (1-based)."""
    if isinstance(dataset, str) and dataset == BUILTIN:
        return _load_jsonl(_builtin_path().read_text(encoding="utf-8"), "'builtin'")
    if isinstance(dataset, (str, Path)):
        p = Path(dataset)
        if not p.is_file():
            raise ValueError(f"multiple-choice dataset {str(p)!r} is not a file: pass a .jsonl or .csv "
                             "path, a list of dicts, a pandas DataFrame or 'builtin'")
        text = p.read_text(encoding="utf-8")
        suffix = p.suffix.lower()
        if suffix == ".csv":
            items = _load_csv(text, repr(str(p)))
        elif suffix == ".json" and text.lstrip().startswith("["):
            items = [_parse_row(r, f"{str(p)!r} row {i}") for i, r in enumerate(json.loads(text), 1)]
        elif suffix in (".jsonl", ".json", ".ndjson"):
            items = _load_jsonl(text, repr(str(p)))
        else:
            raise ValueError(f"multiple-choice dataset {str(p)!r}: unknown file type {suffix!r}; "
                             "use .jsonl (one JSON object per line) or .csv")
    elif hasattr(dataset, "to_dict") and hasattr(dataset, "columns"):  # pandas DataFrame
        items = [_parse_row(r, f"row {i}") for i, r in enumerate(dataset.to_dict("records"), 1)]
    elif isinstance(dataset, (list, tuple)):
        items = [r if isinstance(r, MCItem) else _parse_row(r, f"row {i}") for i, r in enumerate(dataset, 1)]
    else:
        raise ValueError(f"unsupported multiple-choice dataset {type(dataset).__name__}: pass a .jsonl or "
                         ".csv path, a list of dicts, a pandas DataFrame or 'builtin'")
    if not items:
        raise ValueError("the multiple-choice dataset has no rows")
    return items


# ----------------------------------------------------------------------------- multiple choice


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
    import torch

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
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode():
            fits = all(len(ctx) >= 2 and len(ctx) + len(cont) <= limit + 1 for ctx, cont in enc)
            if share_context and fits:
                out = _ll_shared(model, enc, pad, batch_size)
                if out is not None:
                    return out
            return _ll_plain(model, enc, limit, pad, batch_size)
    finally:
        if was_training:
            model.train()


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
                    share_context: bool = True, synthetic: bool = False) -> MCResult:
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
    """
    _refuse_synthetic(synthetic)
    _check_positive("batch_size", batch_size)
    chosen_items, requests, spans = mc_requests(items, limit=limit, fewshot=fewshot, template=template,
                                                choice_template=choice_template)
    lls = loglikelihoods(model, tokenizer, requests, batch_size=batch_size, share_context=share_context)
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


# ----------------------------------------------------------------------------- reference comparison


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
              batch_size: int = 8, max_positions: int | None = 2048, top_k: int | None = None,
              synthetic: bool = False) -> "ReferenceForward":
        """Run ``reference`` once over ``texts`` (default: the built-in text).

        Each text is tokenized as ``tokenizer(text)`` and cut into consecutive windows of
        ``max_length`` tokens; windows stop once ``max_positions`` positions are covered (None:
        all). Full distributions take ``positions x vocab x 4`` bytes (2048 x 49152: 384 MiB);
        ``top_k`` keeps only the reference's k most likely tokens per position.
        """
        import torch

        _refuse_synthetic(synthetic)
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
        with torch.inference_mode():
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


def compare_with(model, ref: ReferenceForward, *, batch_size: int = 8, synthetic: bool = False) -> CompareResult:
    """``model`` against a :class:`ReferenceForward` on the reference's own tokens."""
    import torch

    _refuse_synthetic(synthetic)
    _check_positive("batch_size", batch_size)
    kl_total = 0.0
    kl_max = 0.0
    agree = 0
    nll_total = 0.0
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode():
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
    finally:
        if was_training:
            model.train()
    n = ref.n_positions
    ppl = math.exp(nll_total / n)
    ref_ppl = ref.perplexity
    return CompareResult(kl_div=kl_total / n, top1_agreement=agree / n, perplexity_ratio=ppl / ref_ppl,
                         n_positions=n, perplexity=ppl, reference_perplexity=ref_ppl, kl_max=kl_max,
                         top_k=ref.top_k)


def compare(model, reference, tokenizer, texts: list[str] | None = None, *, max_length: int = 512,
            batch_size: int = 8, reference_logprobs: ReferenceForward | None = None,
            max_positions: int | None = 2048, top_k: int | None = None, synthetic: bool = False) -> CompareResult:
    """KL(reference ‖ model), top-1 agreement and perplexity ratio on the same tokens.

    Pass ``reference_logprobs`` (a :class:`ReferenceForward`) to reuse the reference's forward
    passes; otherwise they are computed here from ``reference`` on ``texts`` (default: the
    built-in text) in windows of ``max_length`` tokens.
    """
    _refuse_synthetic(synthetic)
    ref = reference_logprobs
    if ref is None:
        if reference is None:
            raise ValueError("compare needs a reference model or reference_logprobs")
        ref = ReferenceForward.build(reference, tokenizer, texts, max_length=max_length,
                                     batch_size=batch_size, max_positions=max_positions, top_k=top_k)
    return compare_with(model, ref, batch_size=batch_size)
