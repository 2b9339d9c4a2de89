"""Evaluation data: the built-in reference text and multiple-choice sets from files, lists or
DataFrames. Kept apart from the scoring so a bad row fails with its row number before any
model runs, and so loading data needs no torch.
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
from typing import Any, Mapping

BUILTIN = "builtin"


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
