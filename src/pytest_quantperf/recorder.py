"""The object behind the ``quantperf`` fixture: measure, record, and judge one test.

Every call records Metrics (samples kept, median as value) into the test's TestResult. The
verdict (budgets, then the baseline) is computed by :func:`judge` after the test body.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

from .verdicts.budgets import Budget, evaluate
from .verdicts.tolerance import base_metric_name
from .measure.generate import GenerateResult, SamplingPlan, measure_generate
from .results import HIGHER, LOWER, Metric, TestResult, make_metric

DEFAULT_PROMPT = "Who invented the light bulb?"


def _merged(old: Metric, new: Metric) -> Metric:
    """A figure measured again in the same test on the same model keeps every call's samples.

    Samples and per-item results are concatenated in call order (so paired comparisons still
    line up, call for call); the value is the median of all samples for the statistical kinds and
    the worse of the two for one-value figures (a peak stays a peak).
    """
    samples = old.samples + new.samples
    items = old.items + new.items
    if new.kind in ("timing", "energy", "gpu_timing") and samples:
        value = statistics.median(samples)
    elif new.kind == "accuracy" and items and base_metric_name(new.name) in ("accuracy", "accuracy_norm"):
        value = statistics.fmean(items)
    else:
        worse = max if new.better == LOWER else min
        value = worse(old.value, new.value)
    calls = int((old.extra or {}).get("calls", 1)) + 1
    return replace(new, value=float(value), samples=samples, items=items,
                   flags=tuple(dict.fromkeys(old.flags + new.flags)), extra={**new.extra, "calls": calls})


class AccuracyRefused(ValueError):
    """Accuracy on random weights means nothing: refuse instead of reporting noise."""


class Recorder:
    """Measures models for one test and records what it measured."""

    def __init__(self, session: Any, nodeid: str, budget: Budget | None = None):
        self.session = session
        self.nodeid = nodeid
        self.budget = budget or Budget()
        self.result: TestResult = TestResult(nodeid=nodeid)
        self.result.budgets = self.budget.to_dict()
        self._primary: str | None = None
        self._noted: set[str] = set()  # the model's own figures (footprint, load time): set once, never merged

    # ----------------------------------------------------------------- keys
    def _key(self, lm: Any, name: str) -> str:
        if getattr(lm, "reference", False):
            return f"ref.{name}"
        if self._primary is None:
            self._primary = lm.label
        return name if lm.label == self._primary else f"{name}[{lm.label}]"

    def _put(self, lm: Any | None, name: str, samples: Iterable[float] | float, **kw: Any) -> Metric:
        key = self._key(lm, name) if lm is not None else name
        m = make_metric(name, samples, model=lm.label if lm is not None else None, **kw)
        if key != name:
            m = replace(m, name=key)
        old = self.result.metrics.get(key)
        if old is not None and key not in self._noted:
            m = _merged(old, m)
        self.result.metrics[key] = m
        return m

    def _note_model(self, lm: Any) -> None:
        if lm.label in self.result.models and self.result.models[lm.label].get("reference") == lm.reference:
            return
        self.result.models[lm.label] = lm.summary()
        for name, value in (("footprint_mb", lm.footprint_mb), ("disk_mb", lm.disk_mb if lm.disk_bytes else None),
                            ("load_s", lm.load_s)):
            if value is not None:
                self._noted.add(self._put(lm, name, value).name)

    # ----------------------------------------------------------------- measurements
    def generate(self, lm: Any, prompt: str | Sequence[str] | None = None, max_new_tokens: int = 32, *,
                 repeat: int | str | None = None, warmup: int | str | None = None,
                 gpu_time: bool = True, messages: Sequence[Any] | None = None,
                 **generate_kwargs: Any) -> GenerateResult:
        """Time greedy generation of exactly ``max_new_tokens`` tokens (a list of prompts = a batch).

        ``messages=[{"role": ..., "content": ...}]`` in place of ``prompt`` goes through the
        tokenizer's chat template (a list of such lists is a batch); any other keyword argument is
        passed to ``model.generate`` in every run, warm-up, timed, profiled and counted alike, so a
        team measures its own decode path (``logits_processor=``, ``repetition_penalty=``, ...).
        """
        __tracebackhide__ = True
        prompts = _prompts(prompt, messages)
        plan: SamplingPlan = self.session.settings.plan
        if repeat is not None or warmup is not None:
            base = SamplingPlan.parse(repeat if repeat is not None else (plan.repeat or "auto"),
                                      warmup if warmup is not None else
                                      (plan.warmup if plan.warmup is not None else "auto"))
            plan = SamplingPlan(**{**plan.__dict__, "repeat": base.repeat, "warmup": base.warmup})
        self._note_model(lm)
        count_work = bool(getattr(self.session.settings, "count_work", True))
        cache_key = None
        if lm.reference and not generate_kwargs and messages is None:
            cache_key = ("generate", lm.spec, tuple(prompts), max_new_tokens, plan, count_work)
            if cache_key in self.session.ref_cache:
                res = self.session.ref_cache[cache_key]
                self._record_generate(lm, res)
                return res
        nvml = self.session.nvml_for(lm.device) if str(lm.device).startswith("cuda") else None
        bw = self.session.bandwidth_for(lm.device) if str(lm.device).startswith("cuda") and gpu_time else None
        res = measure_generate(lm, prompts, max_new_tokens, plan, nvml=nvml, bandwidth_gbs=bw,
                               gpu_time=gpu_time, count_work=count_work, generate_kwargs=generate_kwargs)
        if cache_key is not None:
            self.session.ref_cache[cache_key] = res
        self._record_generate(lm, res)
        for em in self.session.extra_metrics(self.nodeid, "generate", lm, res):
            self._put(lm, em.name, em.samples, unit=em.unit, better=em.better,
                      kind="timing" if em.better != "none" else "info")
        return res

    def _record_generate(self, lm: Any, res: GenerateResult) -> None:
        flags = tuple(res.flags)
        extra: dict[str, Any] = {"prompt_tokens": res.prompt_tokens, "new_tokens": res.new_tokens,
                                 "batch": res.batch, "warmup_runs": res.warmup_runs, "stop_reason": res.stop_reason}
        clocks = _clocks(res.gpu_state)
        if clocks:
            extra["gpu_clocks"] = clocks  # kernel time follows the SM clock: verdicts compare like with like
        host = getattr(res, "host", None)
        if host:
            extra["host"] = host  # how much of the machine the timed runs had: verdicts and reports read it
        for name, samples in res.samples.items():
            self._put(lm, name, samples, flags=flags, extra={**extra, "cost": res.cost(name)})
        for name, value in res.values.items():
            ex = {**extra, "cost": res.cost(name)}
            if name == "vram_mb" and res.per_device_peak_mb:
                ex["per_device_peak_mb"] = res.per_device_peak_mb
            if name.startswith("bw_util"):
                ex["bandwidth_gbs"] = self.session.bandwidth.get(lm.device)
            self._put(lm, name, value, flags=flags, extra=ex)
        if res.gpu_state:
            self.result.models.setdefault(lm.label, {})["gpu_state"] = res.gpu_state
        self._record_work(lm, res)

    def _record_work(self, lm: Any, res: GenerateResult) -> None:
        """The decode's work as figures of kind ``work``; the counts by name in each one's ``extra``."""
        if not res.work:
            if res.work_note:
                self.result.models.setdefault(lm.label, {})["work"] = res.work_note
                if res.work_note.startswith("work not counted"):
                    self.session.warnings.append(f"{self.nodeid}: {res.work_note} (--quantperf-count-work=off "
                                                 "skips the counting run)")
            return
        from .measure.work import METRIC_OF, Work

        w = Work.from_dict(res.work)
        for kind in w.kinds_counted:
            self._put(lm, METRIC_OF[kind], w.per_token(kind), kind="work",
                      extra={**w.metric_extra(kind), "cost": res.cost(METRIC_OF[kind])})
        self._put(lm, "prompt_tokens", w.prompt_tokens, kind="work",
                  extra={"batch": w.batch, "cost": res.cost("prompt_tokens")})

    def _refuse_synthetic(self, lm: Any, what: str) -> None:
        if getattr(lm, "backend", "transformers") == "llama_cpp" and what != "multiple_choice":
            raise AccuracyRefused(
                f"{what} on {lm.label} refused: the llama_cpp backend scores multiple_choice (each answer's "
                f"log-likelihood, read token by token from llama.cpp's logits), but {what} needs "
                + ("lm-eval's HFLM, which drives a transformers model" if what == "lm_eval" else
                   "next-token distributions over whole texts, which this backend does not compute")
                + f". Load the same weights with quant_model() for {what}")
        if getattr(lm, "backend", "transformers") not in ("transformers", "llama_cpp"):
            raise AccuracyRefused(
                f"{what} on {lm.label} refused: accuracy metrics run on transformers models; the "
                f"{lm.backend} backend measures speed and memory only. Load the same weights with quant_model() "
                "for perplexity, multiple choice and agreement")
        if getattr(lm, "synthetic", False):
            raise AccuracyRefused(
                f"{what} on {lm.label} refused: synthetic models have random weights, so accuracy, perplexity "
                "and agreement mean nothing. Use real weights (--quantperf-model=PATH_OR_ID or 'default') for "
                "accuracy; keep synthetic models for speed and memory")

    def perplexity(self, lm: Any, text: str | None = None, *, path: str | None = None,
                   stride: int | None = None, max_length: int | None = None) -> Any:
        """Perplexity on ``text`` (default: the reference text shipped with the package)."""
        from . import accuracy

        self._refuse_synthetic(lm, "perplexity")
        self._note_model(lm)
        if text is None:
            text = accuracy.load_text(path) if path else accuracy.default_text()
        key = ("perplexity", lm.spec, hash(text), stride, max_length)
        res = self.session.ref_cache.get(key) if lm.reference else None
        if res is None:
            res = accuracy.perplexity(lm.model, lm.tokenizer, text, stride=stride, max_length=max_length,
                                      per_token=True)
            if lm.reference:
                self.session.ref_cache[key] = res
        # every token's NLL kept: a comparison is paired per token (the same text, token for token)
        self._put(lm, "perplexity", res.perplexity, kind="accuracy", items=res.per_token_nll or (),
                  extra={"n_tokens": res.n_tokens, "nll_mean": res.nll_mean})
        return res

    def multiple_choice(self, lm: Any, dataset: Any = "builtin", *, limit: int | None = None, fewshot: int = 0,
                        **kw: Any) -> Any:
        """lm-evaluation-harness-style multiple choice: ``accuracy`` and ``accuracy_norm``."""
        from . import accuracy

        self._refuse_synthetic(lm, "multiple_choice")
        self._note_model(lm)
        if getattr(lm, "backend", "transformers") == "llama_cpp":
            from .backends import llama_cpp

            kw = {**kw, "scorer": lambda requests: llama_cpp.loglikelihoods(lm, requests)}
        items = accuracy.load_dataset(dataset)
        key = ("mc", lm.spec, repr(dataset) if not isinstance(dataset, str) else dataset, limit, fewshot,
               tuple(sorted((k, v) for k, v in kw.items() if k != "scorer")))
        res = None
        if lm.reference and isinstance(dataset, str):
            res = self.session.ref_cache.get(key)
        if res is None:
            res = accuracy.multiple_choice(lm.model, lm.tokenizer, items, limit=limit, fewshot=fewshot, **kw)
            if lm.reference and isinstance(dataset, str):
                self.session.ref_cache[key] = res
        correct = tuple(float(c) for c in res.correct)
        extra: dict[str, Any] = {"n": res.n, "dataset": dataset if isinstance(dataset, str) else "custom"}
        self._put(lm, "accuracy", res.accuracy, kind="accuracy", items=correct, extra=extra)
        self._put(lm, "accuracy_norm", res.accuracy_norm, kind="accuracy",
                  items=tuple(float(c) for c in res.correct_norm), extra=extra)
        self._pair_with_reference("accuracy")
        return res

    def lm_eval(self, lm: Any, tasks: Any, *, limit: int | float | None = None, num_fewshot: int | None = 0,
                batch_size: int = 1) -> Any:
        """lm-evaluation-harness tasks on the loaded model: ``lm_eval.<task>.acc`` (and ``acc_norm``).

        Every question's result is kept, ordered by doc id, so comparisons with the baseline and
        ``lm_eval_drop_vs_ref`` budgets against the reference are paired per task.
        """
        import pytest

        from .accuracy import lm_eval as le

        self._refuse_synthetic(lm, "lm_eval")
        self._note_model(lm)
        try:
            key = ("lm_eval", lm.spec, json.dumps(tasks, sort_keys=True, default=str), limit, num_fewshot, batch_size)
        except (TypeError, ValueError):
            key = None
        res = self.session.ref_cache.get(key) if lm.reference and key is not None else None
        if res is None:
            failure = None
            try:
                res = le.evaluate(lm.model, lm.tokenizer, tasks, limit=limit, num_fewshot=num_fewshot,
                                  batch_size=batch_size)
            except le.LmEvalError as e:
                failure = str(e)
            if failure is not None:  # outside the except block: one line, no chained traceback
                pytest.fail(failure, pytrace=False)
            if lm.reference and key is not None:
                self.session.ref_cache[key] = res
        for task, score in res.scores.items():
            extra = {**score.extra(), "num_fewshot": num_fewshot, "limit": limit, "batch_size": batch_size,
                     "lm_eval_version": res.version}
            figures = [("acc", score.acc, score.correct)]
            if score.acc_norm is not None:
                figures.append(("acc_norm", score.acc_norm, score.correct_norm or ()))
            for figure, value, items in figures:
                name = f"lm_eval.{task}.{figure}"
                self._put(lm, name, value, unit="", better="higher", kind="accuracy",
                          items=tuple(float(x) for x in items), extra=extra)
                self._pair_with_reference(name)
        return res

    def _pair_with_reference(self, name: str) -> None:
        """Note on each candidate's figure the paired test against the reference's, question by
        question (McNemar, bootstrap CI of the drop): ``*_drop_vs_ref`` budgets read it."""
        from . import stats

        ref = self.result.metrics.get(f"ref.{name}")
        if ref is None or not ref.items:
            return
        for key, m in list(self.result.metrics.items()):
            if key.split("[", 1)[0] != name or len(m.items) != len(ref.items):
                continue
            a, b = list(m.items), list(ref.items)
            n01 = sum(1 for x, y in zip(a, b) if x == 1 and y == 0)
            n10 = sum(1 for x, y in zip(a, b) if x == 0 and y == 1)
            lo, hi = stats.paired_bootstrap_diff_ci(a, b)  # CI of mean(ref - candidate): the drop
            paired = {"p_value": stats.mcnemar_exact(n10, n01), "ci": [lo, hi], "ref_only_correct": n10,
                      "cand_only_correct": n01, "drop": statistics.fmean(b) - statistics.fmean(a)}
            self.result.metrics[key] = Metric(**{**m.__dict__, "extra": {**m.extra, "paired_vs_ref": paired}})

    def compare(self, lm: Any, reference: Any, texts: Sequence[str] | None = None, **kw: Any) -> Any:
        """Next-token distributions against the reference: ``kl_div``, ``top1_agreement``, perplexity ratio."""
        from . import accuracy

        self._refuse_synthetic(lm, "compare")
        self._refuse_synthetic(reference, "compare")
        ref = reference if reference.reference else reference.as_reference()
        self._note_model(lm)
        self._note_model(ref)
        key = ("refforward", ref.spec, tuple(texts) if texts else None, tuple(sorted(kw.items())))
        fwd = self.session.ref_cache.get(key)
        if fwd is None:
            fwd = accuracy.ReferenceForward.build(ref.model, ref.tokenizer, list(texts) if texts else None, **kw)
            self.session.ref_cache[key] = fwd
        res = accuracy.compare_with(lm.model, fwd)
        self._put(lm, "kl_div", res.kl_div, kind="accuracy", extra={"n_positions": res.n_positions})
        self._put(lm, "top1_agreement", res.top1_agreement, kind="accuracy", extra={"n_positions": res.n_positions})
        self._put(lm, "perplexity_ratio", res.perplexity_ratio, kind="accuracy")
        return res

    def record(self, name: str, value: float | Iterable[float], unit: str = "", better: str = LOWER) -> Metric:
        """A metric of the user's own; a list of values keeps every sample.

        Several values are samples of one run: compared as a timing, with the run-to-run spread
        assumed for wall clock. One number has no noise to measure: it is compared directly
        against its tolerance (10% unless given), and its verdict says so.
        """
        if better not in (LOWER, HIGHER):
            raise ValueError(f"record: better must be 'lower' or 'higher', got {better!r}")
        if not name.isidentifier():
            raise ValueError(f"record: metric name must be an identifier, got {name!r}")
        single = isinstance(value, (int, float))
        return self._put(None, name, value, unit=unit, better=better, kind="exact" if single else "timing",
                         extra={"compared": "one value: compared directly against its tolerance"} if single else None)

    @property
    def results(self) -> Mapping[str, Metric]:
        return dict(self.result.metrics)


def _prompts(prompt: str | Sequence[str] | None, messages: Sequence[Any] | None) -> list[Any]:
    """The batch of one generate: prompt texts, or chat message lists (one conversation, or a list of them)."""
    from .errors import MeasurementError

    if messages is None:
        if prompt is None:
            return [DEFAULT_PROMPT]
        return [prompt] if isinstance(prompt, str) else list(prompt)
    if prompt is not None:
        raise MeasurementError("quantperf.generate: give prompt= or messages=, not both")
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise MeasurementError("quantperf.generate: messages= must be a non-empty list of "
                               "{'role': str, 'content': str} dicts (or a list of such lists for a batch)")
    if all(isinstance(m, Mapping) for m in messages):
        return [list(messages)]
    return [list(m) if isinstance(m, Sequence) and not isinstance(m, str) else m for m in messages]


# --------------------------------------------------------------------------- the verdict

@dataclass
class Judgement:
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)


def _clocks(states: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Median SM and memory clocks of a measurement's NVML readings (empty without NVML)."""
    out: dict[str, float] = {}
    for key in ("sm_clock_mhz", "mem_clock_mhz"):
        vals = [float(s[key]) for s in states or () if isinstance(s.get(key), (int, float))]
        if vals:
            out[key] = statistics.median(vals)
    return out


def promote_reference_only(result: TestResult) -> None:
    """A test that measured only the reference (``fp16_model``) is budgeted and compared on it.

    Its figures are recorded as ``ref.*`` while a candidate may still follow in the test body;
    when none did, they are the test's own figures.
    """
    names = list(result.metrics)
    if not names or not all(n.startswith("ref.") for n in names):
        return
    result.metrics = {n[4:]: Metric(**{**result.metrics[n].__dict__, "name": n[4:]}) for n in names}


def judge(session: Any, result: TestResult, budget: Budget, *, device: str) -> Judgement:
    """Budgets first, then the baseline: one line per breach or regression."""
    from .verdicts.compare import judge_test, parse_tolerance, same_code_values, versions_moved

    promote_reference_only(result)
    j = Judgement()
    if not result.metrics and not budget.limits:
        return j
    for chk in evaluate(budget, result, device=device):
        j.verdicts.append(chk.to_dict())
        if chk.gating:
            j.failures.append("budget " + chk.message)
        elif chk.warns:
            j.warnings.append("budget " + chk.message)
    doc = session.baseline_doc
    if doc is None:
        return j
    saved = getattr(session, "baseline_history", None) or ()
    found = judge_test(
        result.nodeid, result.metrics, session.baseline_test(result.nodeid),
        tolerances=session.settings.tolerance,
        per_test={k: parse_tolerance(v) for k, v in budget.tolerance.items()},
        accepted=((doc.get("accepted") or {}).get(result.nodeid) or {}),
        same_hardware=bool(session.baseline_matched_hw),
        gate_cross_hardware=session.settings.gate_cross_hardware,
        same_code=same_code_values(saved, result.nodeid, doc), versions=versions_moved(doc.get("env"), session.env))
    for v in found:
        j.verdicts.append(v.to_dict())
        if v.gating:
            j.failures.append("regression " + v.message)
    j.warnings.extend(warning_lines(found))
    return j


def warning_lines(verdicts: Sequence[Any]) -> list[str]:
    """The warnings of one test's baseline verdicts: figures the runs show worse without saying by
    how much (inconclusive, the whole interval on the worse side, no reason), one line for all.

    Latency, per-token time and tokens/s are one measurement and move together: one line names
    each figure's change and what would settle it. Everything else is in the reports, not printed.
    """
    vs = [v for v in verdicts if v.warns]
    if not vs:
        return []
    if len(vs) == 1:
        return ["inconclusive " + vs[0].message]
    moved = ", ".join(f"{v.metric} {v.change * 100:+.1f}%" if v.change is not None else v.metric for v in vs)
    det = [v.detectable for v in vs if v.detectable is not None]
    told = f"; these runs decide changes beyond {max(det) * 100:+.0f}%" if det else ""
    return [f"inconclusive {moved}: worse, by how much these runs cannot say{told}. Save the baseline again "
            "from the same code (each save narrows this) or measure both commits with `quantperf ab`."]
