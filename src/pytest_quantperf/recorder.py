"""The object behind the ``quantperf`` fixture: measure, record, and judge one test.

Every call records Metrics (samples kept, median as value) into the test's TestResult. The
verdict (budgets, then the baseline) is computed by :func:`judge` after the test body.
"""
from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .budgets import Budget, evaluate
from .measure import GenerateResult, SamplingPlan, measure_generate
from .results import HIGHER, LOWER, Metric, TestResult, make_metric

DEFAULT_PROMPT = "Who invented the light bulb?"


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
        self._mc: dict[str, Any] = {}  # label -> MCResult, for paired verdicts

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
            m = Metric(**{**m.__dict__, "name": key})
        self.result.metrics[key] = m
        return m

    def _note_model(self, lm: Any) -> None:
        if lm.label in self.result.models and self.result.models[lm.label].get("reference") == lm.reference:
            return
        self.result.models[lm.label] = lm.summary()
        self._put(lm, "footprint_mb", lm.footprint_mb)
        if lm.disk_bytes:
            self._put(lm, "disk_mb", lm.disk_mb)
        self._put(lm, "load_s", lm.load_s)

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
        from .work import METRIC_OF, Work

        w = Work.from_dict(res.work)
        for kind in w.kinds_counted:
            self._put(lm, METRIC_OF[kind], w.per_token(kind), kind="work",
                      extra={**w.metric_extra(kind), "cost": res.cost(METRIC_OF[kind])})
        self._put(lm, "prompt_tokens", w.prompt_tokens, kind="work",
                  extra={"batch": w.batch, "cost": res.cost("prompt_tokens")})

    def _refuse_synthetic(self, lm: Any, what: str) -> None:
        if getattr(lm, "backend", "transformers") != "transformers":
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
            res = accuracy.perplexity(lm.model, lm.tokenizer, text, stride=stride, max_length=max_length)
            if lm.reference:
                self.session.ref_cache[key] = res
        self._put(lm, "perplexity", res.perplexity, kind="accuracy",
                  extra={"n_tokens": res.n_tokens, "nll_mean": res.nll_mean})
        return res

    def multiple_choice(self, lm: Any, dataset: Any = "builtin", *, limit: int | None = None, fewshot: int = 0,
                        **kw: Any) -> Any:
        """lm-evaluation-harness-style multiple choice: ``accuracy`` and ``accuracy_norm``."""
        from . import accuracy, stats

        self._refuse_synthetic(lm, "multiple_choice")
        self._note_model(lm)
        items = accuracy.load_dataset(dataset)
        key = ("mc", lm.spec, repr(dataset) if not isinstance(dataset, str) else dataset, limit, fewshot,
               tuple(sorted(kw.items())))
        res = None
        if lm.reference and isinstance(dataset, str):
            res = self.session.ref_cache.get(key)
        if res is None:
            res = accuracy.multiple_choice(lm.model, lm.tokenizer, items, limit=limit, fewshot=fewshot, **kw)
            if lm.reference and isinstance(dataset, str):
                self.session.ref_cache[key] = res
        correct = tuple(float(c) for c in res.correct)
        extra: dict[str, Any] = {"n": res.n, "dataset": dataset if isinstance(dataset, str) else "custom"}
        self._mc[("ref" if lm.reference else "cand")] = res
        self._put(lm, "accuracy", res.accuracy, kind="accuracy", items=correct, extra=extra)
        self._put(lm, "accuracy_norm", res.accuracy_norm, kind="accuracy", extra=extra)
        cand, ref = self._mc.get("cand"), self._mc.get("ref")
        if cand is not None and ref is not None and len(cand.correct) == len(ref.correct):
            a = [float(x) for x in cand.correct]
            b = [float(x) for x in ref.correct]
            n01 = sum(1 for x, y in zip(a, b) if x == 1 and y == 0)
            n10 = sum(1 for x, y in zip(a, b) if x == 0 and y == 1)
            p = stats.mcnemar_exact(n10, n01)
            lo, hi = stats.paired_bootstrap_diff_ci(a, b)  # CI of mean(ref - candidate): the drop
            paired = {"p_value": p, "ci": [lo, hi], "ref_only_correct": n10, "cand_only_correct": n01,
                      "drop": statistics.fmean(b) - statistics.fmean(a)}
            if "accuracy" in self.result.metrics:
                m = self.result.metrics["accuracy"]
                self.result.metrics["accuracy"] = Metric(**{**m.__dict__, "extra": {**m.extra, "paired_vs_ref": paired}})
        return res

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
        """A metric of the user's own; a list of values keeps every sample."""
        if better not in (LOWER, HIGHER):
            raise ValueError(f"record: better must be 'lower' or 'higher', got {better!r}")
        if not name.isidentifier():
            raise ValueError(f"record: metric name must be an identifier, got {name!r}")
        single = isinstance(value, (int, float))
        return self._put(None, name, value, unit=unit, better=better, kind="exact" if single else "timing")

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
    from .compare import history_values, judge_test, parse_tolerance, repeat_values

    promote_reference_only(result)
    j = Judgement()
    if not result.metrics and not budget.limits:
        return j
    for chk in evaluate(budget, result, device=device):
        j.verdicts.append(chk.to_dict())
        if chk.status in ("breach", "missing"):
            j.failures.append("budget " + chk.message)
        elif chk.status == "inconclusive":
            j.warnings.append("budget " + chk.message)
    doc = session.baseline_doc
    if doc is None:
        return j
    hw = ((doc.get("env") or {}).get("hardware_id"))
    saved = getattr(session, "baseline_history", None) or ()
    found = judge_test(
        result.nodeid, result.metrics, session.baseline_test(result.nodeid),
        tolerances=session.settings.tolerance,
        per_test={k: parse_tolerance(v) for k, v in budget.tolerance.items()},
        accepted=((doc.get("accepted") or {}).get(result.nodeid) or {}),
        same_hardware=bool(session.baseline_matched_hw),
        gate_cross_hardware=session.settings.gate_cross_hardware,
        history=history_values(saved, result.nodeid, hw), repeats=repeat_values(saved, result.nodeid, doc))
    for v in found:
        j.verdicts.append(v.to_dict())
        if v.status == "regression" and v.gating:
            j.failures.append("regression " + v.message)
    j.warnings.extend(warning_lines(found))
    return j


def _within_run_noise(v: Any) -> bool:
    """An inconclusive timing change that only run-to-run noise keeps from a verdict: a run-level
    test was taken (``evidence``) and nothing held it back (no ``guard``: host, kernel time, clocks,
    other hardware)."""
    return v.status == "inconclusive" and bool(v.evidence) and not v.guard


def warning_lines(verdicts: Sequence[Any]) -> list[str]:
    """The warnings of one test's baseline verdicts: one line per cause, not one per figure.

    Latency, per-token time and tokens/s are one measurement: beside a busy process, or within the
    run-to-run noise, all four move, and four lines saying the same teach people to skip them. Figures
    that moved within the noise share one line (:func:`_noise_warning`); figures a guard withdrew
    (host contended, kernel time steady, another clock) share one line per status and guard, naming
    each figure's change; a figure alone under its cause keeps its full message.
    """
    noise: list[Any] = []
    groups: dict[tuple[str, Any], list[Any]] = {}  # (status, guard), or (status, id) when unguarded: in order seen
    for v in verdicts:
        if _within_run_noise(v):
            noise.append(v)
        elif v.status in ("inconclusive", "too_noisy") or (v.status == "regression" and not v.gating):
            groups.setdefault((v.status, v.guard or id(v)), []).append(v)
    out = []
    for (status, g), vs in groups.items():
        if len(vs) == 1:
            out.append(f"{status} " + vs[0].message)
        else:
            label = "regression (not gated)" if status == "regression" else status
            out.append(f"{label} {_moved(vs)} [{g}]")
    if noise:
        out.append(_noise_warning(noise))
    return out


def _moved(vs: Sequence[Any]) -> str:
    return ", ".join(f"{v.metric} {v.change * 100:+.1f}%" if v.change is not None else v.metric for v in vs)


def _noise_warning(vs: Sequence[Any]) -> str:
    """One warning per test for every figure that moved beyond tolerance within the noise: farther
    than unchanged runs often move, or in runs whose own samples scatter too much to tell.

    They move together (latency, per-token time and tokens/s are one measurement), so one line
    says it, with what would settle it, instead of one line per figure.
    """
    moved = _moved(vs)
    det = [v.detectable for v in vs if v.detectable is not None]
    assumed = any(v.evidence == "assumed" for v in vs)
    spread = ("run-to-run spread assumed: no run history yet" if assumed
              else "run-to-run spread from the baseline's saved runs")
    told = f"; changes beyond {max(det) * 100:+.0f}% are told apart" if det else ""
    return (f"inconclusive {moved}: beyond tolerance, not told apart from the noise ({spread}{told}). "
            "Save the baseline 3 or more times from one clean commit to measure this host's spread, "
            "or gate wall clock with `quantperf ab`.")
