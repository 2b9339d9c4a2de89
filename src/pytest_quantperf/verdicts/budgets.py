"""The ``quant_budget`` marker: validated at collection, enforced after the test body.

Absolute keys bound the test's own figure; ``*_vs_ref`` keys bound it against the reference model
measured in the same session on the same machine, so they hold on any GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..results import Metric, TestResult
from .reasons import Reason, host_contended, reasons_for
from .rule import ALPHA, PASS, REGRESSION, STAT_KINDS, Band, decide

MAX, MIN = "max", "min"

#: key -> (metric, bound)
ABSOLUTE: dict[str, tuple[str, str]] = {
    "vram_mb": ("vram_mb", MAX),
    "vram_mb_per_gpu": ("vram_mb_per_gpu", MAX),
    "footprint_mb": ("footprint_mb", MAX),
    "host_rss_mb": ("host_rss_mb", MAX),
    "latency_ms": ("latency_ms", MAX),
    "ttft_ms": ("ttft_ms", MAX),
    "tpot_ms": ("tpot_ms", MAX),
    "tokens_per_s": ("tokens_per_s", MIN),
    "energy_j_per_token": ("energy_j_per_token", MAX),
    "gpu_ms_per_token": ("gpu_ms_per_token", MAX),
    "perplexity": ("perplexity", MAX),
    "accuracy": ("accuracy", MIN),
    "kl_div": ("kl_div", MAX),
    "top1_agreement": ("top1_agreement", MIN),
}

#: key -> (metric, bound, how): ratio = value / reference, drop = reference - value
RELATIVE: dict[str, tuple[str, str, str]] = {
    "footprint_mb_vs_ref": ("footprint_mb", MAX, "ratio"),
    "vram_mb_vs_ref": ("vram_mb", MAX, "ratio"),
    "latency_ms_vs_ref": ("latency_ms", MAX, "ratio"),
    "tpot_ms_vs_ref": ("tpot_ms", MAX, "ratio"),
    "perplexity_vs_ref": ("perplexity", MAX, "ratio"),
    "tokens_per_s_vs_ref": ("tokens_per_s", MIN, "ratio"),
    "accuracy_drop_vs_ref": ("accuracy", MAX, "drop"),
}

#: key -> (figure of each task, bound, how, suffix): a dict ``{task: limit}`` per key, for the
#: lm-evaluation-harness figures ``lm_eval.<task>.acc`` of ``quantperf.lm_eval``. Each task becomes
#: a limit of its own, ``lm_eval.<task>.acc`` (absolute, how None) or
#: ``lm_eval.<task>.acc_drop_vs_ref`` (reference - value, paired like ``accuracy_drop_vs_ref``)
PER_TASK: dict[str, tuple[str, str, str | None, str]] = {
    "lm_eval": ("acc", MIN, None, ""),
    "lm_eval_drop_vs_ref": ("acc", MAX, "drop", "_drop_vs_ref"),
}

VALID_KEYS = tuple(ABSOLUTE) + tuple(RELATIVE) + tuple(PER_TASK) + ("tolerance",)


def _per_task_limit(key: str) -> tuple[str, str, str | None] | None:
    """(metric, bound, how) of a limit made from a :data:`PER_TASK` key, else None."""
    for figure, bound, how, suffix in PER_TASK.values():
        tail = f".{figure}{suffix}"
        if key.startswith("lm_eval.") and key.endswith(tail) and len(key) > len("lm_eval.") + len(tail):
            return key[: len(key) - len(suffix)], bound, how
    return None


def absolute_limit(key: str) -> tuple[str, str] | None:
    """(metric, bound) of an absolute limit key, per-task keys included; None for a relative one."""
    if key in ABSOLUTE:
        return ABSOLUTE[key]
    per = _per_task_limit(key)
    return (per[0], per[1]) if per is not None and per[2] is None else None


def relative_limit(key: str) -> tuple[str, str, str] | None:
    """(metric, bound, how) of a limit key against the reference, per-task keys included."""
    if key in RELATIVE:
        return RELATIVE[key]
    per = _per_task_limit(key)
    return (per[0], per[1], per[2]) if per is not None and per[2] is not None else None


def _per_task_limits(nodeid: str, key: str, val: Any) -> dict[str, float]:
    """``lm_eval={"arc_easy": 0.5}`` -> ``{"lm_eval.arc_easy.acc": 0.5}``, each task and value checked."""
    figure, _, _, suffix = PER_TASK[key]
    if not isinstance(val, Mapping) or not val:
        raise BudgetError(f"{nodeid}: quant_budget {key} must be a non-empty dict of lm-eval task name -> "
                          f"number, e.g. {key}={{'arc_easy': {0.02 if suffix else 0.5}}}; got {val!r}")
    out: dict[str, float] = {}
    for task, limit in val.items():
        if not isinstance(task, str) or not task.strip() or task != task.strip() or "[" in task:
            raise BudgetError(f"{nodeid}: quant_budget {key}: task names are lm-eval task names (text such "
                              f"as 'arc_easy'), got {task!r} ({type(task).__name__})")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit):
            raise BudgetError(f"{nodeid}: quant_budget {key}[{task!r}] must be a number, got {limit!r} "
                              f"({type(limit).__name__})")
        if not 0 <= limit <= 1:
            raise BudgetError(f"{nodeid}: quant_budget {key}[{task!r}] is an accuracy between 0 and 1, got {limit}")
        out[f"lm_eval.{task}.{figure}{suffix}"] = float(limit)
    return out

NO_CUDA = "no CUDA device in this run"

CUDA_ONLY = {"gpu_ms_per_token": "GPU kernel time is measured with CUPTI on CUDA only",
             "energy_j_per_token": "GPU energy comes from NVML's energy counter on CUDA only",
             "vram_mb": "VRAM is GPU memory; on the CPU budget host_rss_mb instead",
             "vram_mb_per_gpu": "VRAM is GPU memory; on the CPU budget host_rss_mb instead",
             "vram_mb_vs_ref": "VRAM is GPU memory; on the CPU budget host_rss_mb instead"}


class BudgetError(ValueError):
    """A malformed ``quant_budget`` marker; raised at collection, naming the test and the key."""


@dataclass(frozen=True)
class Budget:
    limits: Mapping[str, float] = field(default_factory=dict)
    tolerance: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.limits)
        if self.tolerance:
            d["tolerance"] = dict(self.tolerance)
        return d


def parse_budget(nodeid: str, args: tuple, kwargs: Mapping[str, Any]) -> Budget:
    """Check a marker's arguments; every problem names the test, the key and the valid keys."""
    if args:
        raise BudgetError(
            f"{nodeid}: quant_budget takes keyword arguments only (got positional {args!r}); "
            f"write e.g. quant_budget(vram_mb=6000). Valid keys: {', '.join(VALID_KEYS)}")
    limits: dict[str, float] = {}
    tol: dict[str, str] = {}
    for key, val in kwargs.items():
        if key == "tolerance":
            if val is None:
                continue
            if not isinstance(val, Mapping):
                raise BudgetError(f"{nodeid}: quant_budget tolerance must be a dict like "
                                  f"{{'tokens_per_s': '5%'}}, got {val!r}")
            from .compare import parse_tolerance

            for m, t in val.items():
                try:
                    parse_tolerance(str(t))
                except ValueError as e:
                    raise BudgetError(f"{nodeid}: quant_budget tolerance for {m!r}: {e}") from None
                tol[str(m)] = str(t)
            continue
        if key in PER_TASK:
            limits.update(_per_task_limits(nodeid, key, val))
            continue
        if key not in ABSOLUTE and key not in RELATIVE:
            raise BudgetError(f"{nodeid}: unknown quant_budget key {key!r}. Valid keys: {', '.join(VALID_KEYS)}")
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise BudgetError(f"{nodeid}: quant_budget {key} must be a number, got {val!r} "
                              f"({type(val).__name__})")
        if val < 0:
            raise BudgetError(f"{nodeid}: quant_budget {key} must not be negative, got {val}")
        limits[key] = float(val)
    return Budget(limits=limits, tolerance=tol)


def merge_markers(nodeid: str, markers: list[tuple[tuple, dict]]) -> Budget:
    """Class- and module-level markers apply too; the closest (first) wins per key."""
    limits: dict[str, float] = {}
    tol: dict[str, str] = {}
    for args, kwargs in reversed(markers):
        b = parse_budget(nodeid, args, kwargs)
        limits.update(b.limits)
        tol.update(b.tolerance)
    return Budget(limits, tol)


@dataclass(frozen=True)
class BudgetCheck:
    """One budget judged by the one rule (:mod:`.verdicts.rule`) with the limit as the band's edge.

    ``status``: ``pass`` (the figure's interval lies within the limit), ``breach`` (it lies wholly
    beyond), ``inconclusive`` (it straddles the limit), ``missing`` (never measured) or ``n/a``
    (this device cannot measure it). ``reasons`` withhold gating, as for baseline verdicts.
    """

    key: str
    status: str
    measured: float | None
    limit: float
    message: str
    interval: tuple[float, float] | None = None
    reasons: tuple[Reason, ...] = ()
    #: the measured figure itself lies beyond the limit
    beyond: bool = False

    @property
    def gating(self) -> bool:
        return self.status in ("breach", "missing") and not self.reasons

    @property
    def warns(self) -> bool:
        """Printed as a warning: the figure is beyond its limit, by how much the run cannot say."""
        return self.status == "inconclusive" and self.beyond and not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.key, "source": "budget", "status": self.status, "current": self.measured,
                "limit": self.limit, "message": self.message, "gating": self.gating,
                "ci": list(self.interval) if self.interval else None,
                "reasons": [r.to_dict() for r in self.reasons], "guard": "; ".join(r.text for r in self.reasons)}


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _host(*metrics: Metric | None) -> Mapping[str, Any] | None:
    for m in metrics:
        h = (m.extra or {}).get("host") if m is not None else None
        if isinstance(h, Mapping) and h.get("state") in ("contended", "too_busy"):
            return h
    return None


def _log_interval(m: Metric, alpha: float) -> tuple[float, float]:
    """This run's median of a timing figure, as the interval its own samples give it (log space).

    A budget judges the run it was given: the interval of its median from its samples
    (distribution-free, order statistics); one sample is a point.
    """
    from .. import stats

    xs = [x for x in m.samples if math.isfinite(x) and x > 0]
    if len(xs) < 2 or not m.value > 0:
        return (math.log(m.value), math.log(m.value)) if m.value > 0 else (math.nan, math.nan)
    lo, hi = stats.median_ci(xs, 1 - 2 * alpha)
    return (math.log(lo), math.log(hi))


def _judged(key: str, value: float, lo: float, hi: float, limit: float, bound: str, desc: str, *,
            kind: str, host: Mapping[str, Any] | None, alpha: float) -> BudgetCheck:
    sign = 1.0 if bound == MAX else -1.0
    xs = sorted((sign * (lo - limit), sign * (hi - limit)))
    dec = decide(sign * (value - limit), xs[0], xs[1], Band(0.0, math.inf))
    status = {REGRESSION: "breach", PASS: "pass"}.get(dec.status, "inconclusive")
    margin = (limit - value) if bound == MAX else (value - limit)
    rel = margin / limit if limit else float("inf")
    ci = f"; {1 - 2 * alpha:.0%} interval [{_fmt(lo)}, {_fmt(hi)}]" if lo != hi else ""
    msg = f"{key}: {desc}, {'max' if bound == MAX else 'min'} {_fmt(limit)}, margin {_fmt(margin)} ({rel:+.1%}){ci}"
    if status == "inconclusive":
        msg += ": the interval straddles the limit (more samples, --quantperf-repeat, would settle it)"
    worse_by = None
    if value > 0 and limit > 0:
        worse_by = value / limit if bound == MAX else limit / value
    reasons = reasons_for(host_contended(kind, host, worse_by)) if status in ("breach", "inconclusive") else ()
    if reasons:
        msg += f" [not gated: {'; '.join(r.text for r in reasons)}]"
    return BudgetCheck(key, status, value, limit, msg, (lo, hi) if lo != hi else None, reasons,
                       beyond=sign * (value - limit) > 0)


def evaluate(budget: Budget, result: TestResult, *, device: str = "cpu", alpha: float = ALPHA) -> list[BudgetCheck]:
    """Check every limit against what the test measured; missing metrics are failures too."""
    out: list[BudgetCheck] = []
    m = result.metrics
    for key, limit in budget.limits.items():
        if key in CUDA_ONLY and not str(device).startswith("cuda"):
            # one suite serves GPU runners and CPU laptops: a figure this device cannot produce is
            # neither passed nor failed, and every report says why
            out.append(BudgetCheck(key, "n/a", None, limit,
                                   f"{key}: n/a, {NO_CUDA} ({CUDA_ONLY[key]}); budget {_fmt(limit)} not checked"))
            continue
        absolute = absolute_limit(key)
        if absolute is not None:
            name, bound = absolute
            metric = m.get(name)
            if name == "vram_mb_per_gpu":
                per = [v.extra.get("per_device_peak_mb", {}) for v in m.values() if v.name == "vram_mb"]
                vals = [x for d in per for x in d.values()]
                value = max(vals) if vals else None
            else:
                value = metric.value if metric is not None else None
            if value is None:
                out.append(BudgetCheck(key, "missing", None, limit,
                                       f"{key}: budgeted at {_fmt(limit)} but never measured by this test"))
                continue
            lo = hi = value
            kind = metric.kind if metric is not None else "memory"
            if metric is not None and kind in STAT_KINDS:
                llo, lhi = _log_interval(metric, alpha)
                lo, hi = (math.exp(llo), math.exp(lhi)) if math.isfinite(llo) else (value, value)
            unit = metric.unit if metric is not None else ""
            out.append(_judged(key, value, lo, hi, limit, bound, f"measured {_fmt(value)}{(' ' + unit) if unit else ''}",
                               kind=kind, host=_host(metric), alpha=alpha))
            continue
        name, bound, how = relative_limit(key)  # type: ignore[misc]
        cur = m.get(name)
        ref = m.get(f"ref.{name}")
        if cur is None or ref is None:
            missing = [x for x, v in ((name, cur), (f"reference {name}", ref)) if v is None]
            out.append(BudgetCheck(key, "missing", None, limit,
                                   f"{key}: needs {name} of this model and of the reference measured in the "
                                   f"same session (missing: {', '.join(missing)}); measure the fp16_model "
                                   "handle in this test or pass reference= to quantperf.compare"))
            continue
        if how == "ratio":
            value = cur.value / ref.value if ref.value else float("inf")
            desc = f"{_fmt(cur.value)} / reference {_fmt(ref.value)} = {value:.3f}x"
            lo = hi = value
            if cur.kind in STAT_KINDS and value > 0 and math.isfinite(value):
                (cl, ch), (rl, rh) = _log_interval(cur, alpha), _log_interval(ref, alpha)
                if all(math.isfinite(x) for x in (cl, ch, rl, rh)):
                    # the two medians' half-widths add in quadrature on the log scale
                    h = math.hypot(max(ch - cl, 0.0) / 2, max(rh - rl, 0.0) / 2)
                    lo, hi = value * math.exp(-h), value * math.exp(h)
        else:
            value = ref.value - cur.value
            desc = f"reference {_fmt(ref.value)} - {_fmt(cur.value)} = {value:.4f}"
            lo = hi = value
            if cur.items and ref.items and len(cur.items) == len(ref.items):
                from .. import stats

                # paired per question: the interval of mean(ref - candidate), the drop
                lo, hi = stats.paired_bootstrap_diff_ci(cur.items, ref.items, 1 - 2 * alpha)
                p = stats.paired_p_value(ref.items, cur.items)
                desc += f" (paired over {len(cur.items)} questions, McNemar p={p:.3g})"
        out.append(_judged(key, value, lo, hi, limit, bound, desc, kind=cur.kind, host=_host(cur, ref), alpha=alpha))
    return out
