"""lm-evaluation-harness tasks on a model that is already loaded: the benchmarks people quote.

Published comparisons of quantized models cite MMLU and ARC as lm-eval scores them; scoring the same
tasks here, through lm-eval itself, gives the very figures people quote. The loaded model object is
handed to ``HFLM(pretrained=<model>)``, which neither reloads nor moves it (so bitsandbytes models
stay where they were quantized), and each question's 0/1 result is kept, ordered by doc id, so
two runs (or a model and its reference) are compared question by question.

lm-eval is imported only when called: it is an optional dependency, and a missing one is one line
saying what to install. Hub tasks read their data through ``datasets``; where it is neither
reachable nor cached the error names the task and how to give it local files instead.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

MISSING = "quantperf.lm_eval needs lm-evaluation-harness, which is not installed: pip install lm-eval"

BUILTIN_TASK = "quantperf_builtin"

#: a multiple-choice task over JSONL rows ``{"question", "choices", "answer"}``, as the built-in set
#: and ``quantperf.multiple_choice`` datasets are written; the same template as ``multiple_choice``
_MC_TEMPLATE: dict[str, Any] = {
    "dataset_path": "json",
    "test_split": "test",
    "output_type": "multiple_choice",
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_choice": "{{choices}}",
    "doc_to_target": "answer",
    "metric_list": [
        {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
    ],
}


class LmEvalError(ValueError):
    """lm-eval cannot run what was asked (not installed, unknown task, data missing); one line."""


@dataclass(frozen=True)
class TaskScore:
    """One task's figures and every question's result, ordered by doc id.

    For a group (``mmlu``) the figures are lm-eval's aggregate and the per-question results are
    its subtasks' in name order, each by doc id, so pairs line up between runs.
    """

    task: str
    acc: float
    acc_norm: float | None
    n: int
    correct: tuple[int, ...]
    correct_norm: tuple[int, ...] | None
    num_fewshot: int
    config_hash: str
    subtasks: tuple[str, ...] = ()

    def extra(self) -> dict[str, Any]:
        d: dict[str, Any] = {"task": self.task, "n": self.n, "num_fewshot_used": self.num_fewshot,
                             "config_hash": self.config_hash}
        if self.subtasks:
            d["subtasks"] = len(self.subtasks)
        return d


@dataclass(frozen=True)
class LmEvalResult:
    """What ``quantperf.lm_eval`` measured: one :class:`TaskScore` per task asked, in order."""

    scores: Mapping[str, TaskScore]
    version: str
    limit: int | float | None
    num_fewshot: int | None
    batch_size: int
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, task: str) -> TaskScore:
        return self.scores[task]


# ----------------------------------------------------------------------------- lm-eval itself


def _lm_eval() -> Any:
    try:
        import lm_eval
        import lm_eval.models.huggingface  # noqa: F401
        import lm_eval.tasks  # noqa: F401
    except ImportError as e:
        if getattr(e, "name", "") and not str(e.name).startswith("lm_eval"):
            raise LmEvalError(f"lm-eval is installed but cannot be imported ({e}): "
                              "pip install --upgrade lm-eval") from None
        raise LmEvalError(MISSING) from None
    return lm_eval


def version() -> str:
    """The installed lm-eval version, recorded beside every figure (scores move between releases)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _v

    try:
        return _v("lm_eval")
    except PackageNotFoundError:
        raise LmEvalError(MISSING) from None


@functools.cache
def _task_manager() -> Any:
    """lm-eval's index of its ~thousands of task YAMLs takes seconds to build: once per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


# ----------------------------------------------------------------------------- local tasks


def _builtin_data() -> Path:
    return Path(str(resources.files("pytest_quantperf").joinpath("data/mc_builtin.jsonl")))


def builtin_task(name: str = BUILTIN_TASK, data_files: str | os.PathLike | None = None) -> dict[str, Any]:
    """An lm-eval task config dict over the package's built-in multiple-choice questions (or a
    JSONL file of your own with ``question``, ``choices``, ``answer`` rows): no download needed.

    Pass it to ``quantperf.lm_eval(lm, builtin_task())`` or ``lm_eval.simple_evaluate(tasks=[...])``.
    """
    path = Path(data_files) if data_files is not None else _builtin_data()
    if not path.is_file():
        raise LmEvalError(f"lm-eval task data file {str(path)!r} does not exist: pass an existing JSONL file "
                          "with question, choices, answer rows")
    return {"task": name, **json.loads(json.dumps(_MC_TEMPLATE)),
            "dataset_kwargs": {"data_files": {"test": str(path.resolve())}}}


def write_builtin_task(directory: str | os.PathLike, name: str = BUILTIN_TASK) -> Path:
    """The built-in task as files for lm-eval's own command: a copy of the questions and a YAML.

    ``lm_eval --model hf --model_args pretrained=DIR --include_path <directory> --tasks <name>``
    then scores the same questions as ``quantperf.lm_eval(lm, builtin_task())``. Returns the YAML.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = d / f"{name}.jsonl"
    data.write_text(_builtin_data().read_text(encoding="utf-8"), encoding="utf-8")
    cfg = builtin_task(name, data)
    lines = [f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:",
             f"    test: {json.dumps(str(data.resolve()))}", "test_split: test", "output_type: multiple_choice",
             f"doc_to_text: {json.dumps(cfg['doc_to_text'])}", f"doc_to_choice: {json.dumps(cfg['doc_to_choice'])}",
             "doc_to_target: answer", "metric_list:"]
    for m in cfg["metric_list"]:
        lines += [f"  - metric: {m['metric']}", "    aggregation: mean", "    higher_is_better: true"]
    yaml_path = d / f"{name}.yaml"
    yaml_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return yaml_path


# ----------------------------------------------------------------------------- checking what was asked


def _specs(tasks: Any) -> list[str | dict[str, Any]]:
    """Task names, YAML paths and config dicts, as a list lm-eval's TaskManager takes."""
    items = list(tasks) if isinstance(tasks, (list, tuple)) else [tasks]
    if not items:
        raise LmEvalError("quantperf.lm_eval: no task given; pass a task name such as 'arc_easy', a task "
                          "config dict, a YAML path, or a list of them")
    out: list[str | dict[str, Any]] = []
    for t in items:
        if isinstance(t, os.PathLike):
            t = os.fspath(t)
        if isinstance(t, str):
            if not t.strip():
                raise LmEvalError("quantperf.lm_eval: an empty task name")
            if t.endswith((".yaml", ".yml")) and not Path(t).is_file():
                raise LmEvalError(f"quantperf.lm_eval: task YAML {t!r} does not exist")
            out.append(t)
        elif isinstance(t, Mapping):
            if not isinstance(t.get("task", t.get("group")), str):
                raise LmEvalError("quantperf.lm_eval: a task config dict needs a 'task' name (e.g. "
                                  "{'task': 'my_mc', 'dataset_path': 'json', ...}); see builtin_task()")
            out.append(dict(t))
        else:
            raise LmEvalError(f"quantperf.lm_eval: tasks are names, config dicts or YAML paths, got "
                              f"{type(t).__name__}")
    return out


def _spec_name(spec: str | Mapping[str, Any]) -> str:
    return spec if isinstance(spec, str) else str(spec.get("task", spec.get("group")))


def _first_line(e: BaseException, width: int = 240) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= width else text[: width - 1] + "…"


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def data_missing_message(task: str, error: BaseException) -> str:
    """One line: the task whose data could not be read, why, and how to give it local files."""
    where = ("offline (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE set) and not in the datasets cache" if _offline()
             else "not reachable on the Hugging Face Hub and not in the datasets cache")
    return (f"lm-eval task {task!r}: its data could not be loaded, {where} ({type(error).__name__}: "
            f"{_first_line(error, 160)}). Provide it: run once where the Hub is reachable so the datasets cache "
            f"(HF_DATASETS_CACHE) holds it, or pass a task dict with local files, e.g. {{'task': '{task}_local', "
            "'dataset_path': 'json', 'dataset_kwargs': {'data_files': {'test': 'PATH.jsonl'}}, ...} "
            "(pytest_quantperf.accuracy.lm_eval.builtin_task(data_files=PATH) builds one for question/choices/answer rows)")


def _load(manager: Any, spec: str | dict[str, Any]) -> list[Any]:
    """Build one task (or group, or tag) now, so a failure names it; its data is read here."""
    name = _spec_name(spec)
    try:
        loaded = manager.load([spec])
    except KeyError as e:
        if isinstance(spec, str) and "not a registered" in str(e):
            raise LmEvalError(f"lm-eval task {name!r} is not a task, group or tag that lm-eval {version()} knows, "
                              "nor a YAML file: check the name (`lm_eval ls tasks`), or pass a task config dict "
                              "or a YAML path") from None
        raise LmEvalError(f"lm-eval task {name!r}: its config is incomplete ({_first_line(e)})") from None
    except (ValueError, TypeError) as e:
        if "config" in str(e).lower() and not _is_data_error(e):
            raise LmEvalError(f"lm-eval task {name!r}: invalid task config ({_first_line(e)})") from None
        raise LmEvalError(data_missing_message(name, e)) from None
    except Exception as e:  # datasets' errors for a hub id that cannot be reached or read
        raise LmEvalError(data_missing_message(name, e)) from None
    groups = loaded.get("groups") or {}
    children = {c for names in (loaded.get("group_map") or {}).values() for c in names}
    top = [g for n, g in groups.items() if n not in children]
    return top or list(loaded["tasks"].values())


def _is_data_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ""
    return mod.startswith(("datasets", "huggingface_hub", "requests", "urllib3", "fsspec")) or any(
        w in str(e) for w in ("Couldn't reach", "offline", "Offline", "data_files", "doesn't exist on the Hub"))


@functools.cache
def unavailable_reason(task: str) -> str | None:
    """Why a named task cannot run here (its data neither reachable nor cached), or None.

    Builds the task once, reading its data as a run would, so a suite can skip a hub task with
    the reason instead of failing on it; a second ask in the same process is free.
    """
    try:
        _lm_eval()
        _load(_task_manager(), task)
    except LmEvalError as e:
        return str(e)
    return None


# ----------------------------------------------------------------------------- scoring


def _config_hash(config: Mapping[str, Any]) -> str:
    """A short hash of the task's config, with local data files hashed by content, not by path,
    so that the same questions in another folder hash the same and an edited file does not."""
    cfg = json.loads(json.dumps(dict(config), default=str))

    def files(v: Any) -> Any:
        if isinstance(v, str) and os.path.isfile(v):
            return "sha256:" + hashlib.sha256(Path(v).read_bytes()).hexdigest()
        if isinstance(v, list):
            return [files(x) for x in v]
        if isinstance(v, dict):
            return {k: files(x) for k, x in v.items()}
        return v

    if isinstance(cfg.get("metadata"), dict):
        cfg["metadata"].pop("config_source", None)  # where the config was read from, not what it says
    kw = cfg.get("dataset_kwargs")
    if isinstance(kw, dict) and "data_files" in kw:
        kw["data_files"] = files(kw["data_files"])
    blob = json.dumps(cfg, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _metric(entry: Mapping[str, Any], metric: str) -> float | None:
    """``acc`` of lm-eval's ``{"acc,none": 0.5, ...}``; the "none" filter first."""
    if f"{metric},none" in entry:
        return float(entry[f"{metric},none"])
    for k, v in entry.items():
        if isinstance(k, str) and k.split(",", 1)[0] == metric and "stderr" not in k and isinstance(v, (int, float)):
            return float(v)
    return None


def _per_question(samples: Sequence[Mapping[str, Any]], metric: str) -> tuple[int, ...] | None:
    filters = {s.get("filter") for s in samples}
    keep = "none" if "none" in filters else (sorted(f for f in filters if f is not None) or [None])[0]
    rows = sorted((s for s in samples if s.get("filter") == keep), key=lambda s: int(s["doc_id"]))
    if not rows or any(metric not in s for s in rows):
        return None
    return tuple(int(round(float(s[metric]))) for s in rows)


def _score(name: str, leaves: Sequence[str], out: Mapping[str, Any]) -> TaskScore:
    results = out.get("results") or {}
    entry = (out.get("groups") or {}).get(name) or results.get(name) or {}
    acc = _metric(entry, "acc")
    if acc is None:
        found = sorted({k.split(",", 1)[0] for k in entry if isinstance(k, str) and "stderr" not in k} - {"alias", "name", "sample_len"})
        raise LmEvalError(f"lm-eval task {name!r} reports no acc (its figures: {', '.join(found) or 'none'}): "
                          "quantperf.lm_eval records acc and acc_norm of multiple-choice (log-likelihood) tasks")
    acc_norm = _metric(entry, "acc_norm")
    samples = out.get("samples") or {}
    correct: list[int] = []
    correct_norm: list[int] | None = [] if acc_norm is not None else None
    for leaf in sorted(leaves):
        c = _per_question(samples.get(leaf) or (), "acc")
        if c is None:
            raise LmEvalError(f"lm-eval task {leaf!r} logged no per-question acc: quantperf.lm_eval needs "
                              "multiple-choice (log-likelihood) tasks")
        correct.extend(c)
        if correct_norm is not None:
            cn = _per_question(samples.get(leaf) or (), "acc_norm")
            correct_norm = correct_norm + list(cn) if cn is not None else None
    configs = out.get("configs") or {}
    hashes = [_config_hash(configs.get(leaf) or {}) for leaf in sorted(leaves)]
    chash = hashes[0] if len(hashes) == 1 else hashlib.sha256(",".join(hashes).encode()).hexdigest()[:16]
    shots = (out.get("n-shot") or {}).get(name, (out.get("n-shot") or {}).get(sorted(leaves)[0], 0))
    return TaskScore(task=name, acc=acc, acc_norm=acc_norm, n=len(correct), correct=tuple(correct),
                     correct_norm=tuple(correct_norm) if correct_norm is not None else None,
                     num_fewshot=int(shots or 0), config_hash=chash,
                     subtasks=tuple(sorted(leaves)) if len(leaves) > 1 or leaves[0] != name else ())


def _check_args(limit: Any, num_fewshot: Any, batch_size: Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0
                              or (isinstance(limit, float) and limit >= 1 and not limit.is_integer())):
        raise LmEvalError(f"quantperf.lm_eval: limit must be a positive number of questions per task (or a "
                          f"fraction below 1), got {limit!r}")
    if num_fewshot is not None and (isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int)
                                    or num_fewshot < 0):
        raise LmEvalError(f"quantperf.lm_eval: num_fewshot must be a non-negative integer, got {num_fewshot!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LmEvalError(f"quantperf.lm_eval: batch_size must be a positive integer, got {batch_size!r}")


def evaluate(model: Any, tokenizer: Any, tasks: Any, *, limit: int | float | None = None,
             num_fewshot: int | None = 0, batch_size: int = 1) -> LmEvalResult:
    """Score lm-eval tasks on a loaded transformers model, through ``lm_eval.simple_evaluate``.

    ``tasks``: a task, group or tag name, a task config dict (local data through ``dataset_path:
    json`` and ``dataset_kwargs: {data_files: ...}``), a YAML path, or a list of them. Each task is
    built before any is scored, so a task whose data cannot be read fails first, by name.
    ``num_fewshot=None`` keeps each task's own default, as lm-eval's command does without
    ``--num_fewshot``. The batch size is lm-eval's: int8 results depend on it.
    """
    _check_args(limit, num_fewshot, batch_size)
    specs = _specs(tasks)
    lm_eval = _lm_eval()
    from lm_eval.models.huggingface import HFLM

    manager = _task_manager()
    built: list[Any] = []
    names: list[tuple[str, list[str]]] = []
    for spec in specs:
        for obj in _load(manager, spec):
            if hasattr(obj, "get_all_tasks"):
                names.append((obj.name, [t.task_name for t in obj.get_all_tasks()]))
            else:
                names.append((obj.task_name, [obj.task_name]))
            built.append(obj)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)  # the object: never moved
    out = lm_eval.simple_evaluate(model=lm, tasks=built, num_fewshot=num_fewshot, limit=limit,
                                  batch_size=batch_size, log_samples=True, bootstrap_iters=0,
                                  task_manager=manager)
    if out is None:
        raise LmEvalError("lm-eval returned no results (a non-zero rank of a distributed launch)")
    scores = {name: _score(name, leaves, out) for name, leaves in names}
    return LmEvalResult(scores=scores, version=version(), limit=limit, num_fewshot=num_fewshot,
                        batch_size=batch_size, raw=out)
