"""Plain data for what a run measured: metrics, per-test results and the metric catalogue.

Everything here is JSON-able and free of torch and pytest, because the same objects travel
from xdist workers to the controller, into baseline files, and into the ``quantperf`` command.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, asdict
from typing import Any, Iterable, Mapping

SCHEMA = 1

LOWER, HIGHER, NONE = "lower", "higher", "none"


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means: how it is compared and gated.

    ``kind`` decides how a figure's interval is built for the one rule (compare.figure_interval):
    ``timing`` (wall clock: the run-to-run spread), ``gpu_timing`` (CUPTI kernel time: a small,
    well-known spread), ``energy`` (noisy, hardware bound), ``memory``, ``exact`` and ``work``
    (deterministic: the interval is the point; work is counted identically in every process on
    unchanged code, and its change is named by operator, function or kernel), ``accuracy`` (paired per question or per token
    when items exist, else the point), ``info`` (shown, never gated).
    """

    unit: str
    better: str
    kind: str
    tolerance: str  # default tolerance, "5%" relative or "0.01" absolute
    #: run-to-run relative spread (log-sd of one run's figure) assumed until saved runs of the same
    #: code measure it (statistical kinds only): wall time between separate processes on the 2-core
    #: CPU runner moved with a CV of 8.8-15% (benchmarks/RESULTS.md); 12% is the middle of that
    run_spread: float = 0.12
    #: what the assumed spread is worth, in degrees of freedom, when it is pooled with saved runs
    #: (stats.run_change): 3 for a host's wall clock, which has heavy tails between processes;
    #: None for a spread that is well known (kernel time repeats to 0.05%: stats.KNOWN_DF)
    prior_df: int | None = 3
    #: whether a change against the baseline can fail the test; False for figures that depend on
    #: what else the process holds (other cached models, allocator state): shown, budgeted, not gated
    gated: bool = True

    @property
    def hardware_bound(self) -> bool:
        """Speed and energy only mean something on the hardware they were measured on."""
        return self.kind in ("timing", "gpu_timing", "energy")


METRICS: dict[str, MetricInfo] = {
    "latency_ms": MetricInfo("ms", LOWER, "timing", "10%"),
    "ttft_ms": MetricInfo("ms", LOWER, "timing", "10%"),
    "tpot_ms": MetricInfo("ms", LOWER, "timing", "10%"),
    "tokens_per_s": MetricInfo("tok/s", HIGHER, "timing", "10%"),
    # one value per run, set by the file cache, the disk and the other processes: 17 s then 28 s in two
    # unchanged CPU runs here. Shown beside every model, not a verdict
    "load_s": MetricInfo("s", LOWER, "timing", "50%", run_spread=0.25, gated=False),
    "vram_mb": MetricInfo("MiB", LOWER, "memory", "2%"),
    # the caching allocator's reserve and the process' NVML figure include the other models cached
    # in the session, so they follow test order and xdist scheduling: information, not verdicts
    "vram_reserved_mb": MetricInfo("MiB", LOWER, "memory", "5%", gated=False),
    "nvml_process_mb": MetricInfo("MiB", LOWER, "memory", "5%", gated=False),
    "footprint_mb": MetricInfo("MiB", LOWER, "exact", "1%"),
    "disk_mb": MetricInfo("MiB", LOWER, "exact", "1%"),
    # process-wide: the interpreter, torch and every cached model; moved 18% between unchanged CPU runs
    "host_rss_mb": MetricInfo("MiB", LOWER, "memory", "10%", gated=False),
    "energy_j_per_token": MetricInfo("J", LOWER, "energy", "10%"),
    # CUPTI kernel time repeats to 0.05% on one machine and moved up to 0.8% between H200 machines
    # (benchmarks/RESULTS.md): a 0.3% spread, well known. Its 98% interval from one save is about
    # ±1%, so a 2% tolerance is the narrowest band an unchanged kernel time can be shown inside
    "gpu_ms_per_token": MetricInfo("ms", LOWER, "gpu_timing", "2%", run_spread=0.003, prior_df=None),
    "gpu_ms": MetricInfo("ms", LOWER, "gpu_timing", "2%", run_spread=0.003, prior_df=None),
    "gpu_busy_share": MetricInfo("ratio", NONE, "info", "0"),
    "bw_util_gpu": MetricInfo("ratio", NONE, "info", "0"),
    "bw_util_wall": MetricInfo("ratio", NONE, "info", "0"),
    "cpu_percent": MetricInfo("%", NONE, "info", "0"),
    # the process' CPU time per generated token: includes idle intra-op threads spinning and CUDA's
    # spin-wait on sync, and rose with a busy neighbour (2 threads on 2 cores): shown, not gated
    "cpu_ms_per_token": MetricInfo("ms", NONE, "info", "0"),
    # the work of a decode, counted in a run of its own (work_count.py): identical in every process on
    # unchanged code, quiet or beside a spinning process, so any tolerance above 0 passes unchanged
    # runs. Each default lets through less than the smallest realistic change it must catch on the
    # CPU runner (benchmarks/work_counts.py, benchmarks/RESULTS.md): a Python logits processor
    # (ops +3%, calls +0.5%), an fp32 compute dtype (calls +2.6%), an extra sync per decode step
    # (+1 sync per token); a longer prompt shows in prompt_tokens, which must not move at all
    "ops_per_token": MetricInfo("ops", LOWER, "work", "0.5%"),
    "py_calls_per_token": MetricInfo("calls", LOWER, "work", "0.25%"),
    "syncs_per_token": MetricInfo("syncs", LOWER, "work", "0"),
    "launches_per_token": MetricInfo("launches", LOWER, "work", "0.5%"),
    "prompt_tokens": MetricInfo("tokens", LOWER, "work", "0"),
    "perplexity": MetricInfo("", LOWER, "accuracy", "1%"),
    "accuracy": MetricInfo("", HIGHER, "accuracy", "0.02"),
    "accuracy_norm": MetricInfo("", HIGHER, "accuracy", "0.02"),
    "kl_div": MetricInfo("nats", LOWER, "accuracy", "0.01"),
    "top1_agreement": MetricInfo("", HIGHER, "accuracy", "0.01"),
    "perplexity_ratio": MetricInfo("", LOWER, "accuracy", "1%"),
}


#: figures named by a pattern rather than one name: (prefix, last dotted part) -> entry.
#: ``quantperf.lm_eval`` records ``lm_eval.<task>.acc`` and ``lm_eval.<task>.acc_norm`` for any
#: lm-evaluation-harness task, judged like ``accuracy`` (per-question results kept, so paired)
METRIC_PATTERNS: dict[tuple[str, str], MetricInfo] = {
    ("lm_eval.", "acc"): METRICS["accuracy"],
    ("lm_eval.", "acc_norm"): METRICS["accuracy_norm"],
}


def metric_info(name: str, unit: str = "", better: str = LOWER) -> MetricInfo:
    """Catalogue entry of a metric; user metrics (``quantperf.record``) get a statistical default."""
    base = name.split("[", 1)[0]
    if base.startswith("ref."):
        base = base[4:]
    if base in METRICS:
        return METRICS[base]
    for (prefix, last), info in METRIC_PATTERNS.items():
        if base.startswith(prefix) and base.rsplit(".", 1)[-1] == last and len(base) > len(prefix) + len(last) + 1:
            return info
    return MetricInfo(unit, better, "timing", "10%")


@dataclass(frozen=True)
class Metric:
    """One measured figure of one test: its median and every sample behind it.

    ``items`` holds per-item data for paired comparisons (per-question correctness for
    accuracy), ``flags`` notes such as ``throttled``; ``extra`` anything a report may show.
    """

    name: str
    value: float
    unit: str = ""
    better: str = LOWER
    kind: str = "exact"
    samples: tuple[float, ...] = ()
    model: str | None = None
    items: tuple[float, ...] = ()
    flags: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.samples) or 1

    @property
    def finite_values(self) -> list[float]:
        """The finite samples, or the value alone where there are none (nothing where it is not
        finite): what a comparison builds its interval from."""
        s = [x for x in self.samples if math.isfinite(x)]
        return s if s else ([self.value] if math.isfinite(self.value) else [])

    @property
    def cv(self) -> float:
        """Coefficient of variation of the samples (0 when fewer than two)."""
        s = [x for x in self.samples if math.isfinite(x)]
        if len(s) < 2:
            return 0.0
        mean = statistics.fmean(s)
        return statistics.stdev(s) / abs(mean) if mean else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples"] = list(self.samples)
        d["items"] = list(self.items)
        d["flags"] = list(self.flags)
        d["extra"] = dict(self.extra)
        d["n"] = self.n
        d["cv"] = self.cv
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Metric":
        return cls(
            name=str(d["name"]),
            value=float(d["value"]),
            unit=str(d.get("unit", "")),
            better=str(d.get("better", LOWER)),
            kind=str(d.get("kind", "exact")),
            samples=tuple(float(x) for x in d.get("samples", ()) or ()),
            model=d.get("model"),
            items=tuple(float(x) for x in d.get("items", ()) or ()),
            flags=tuple(str(x) for x in d.get("flags", ()) or ()),
            extra=dict(d.get("extra", {}) or {}),
        )


def make_metric(name: str, samples: Iterable[float] | float, *, model: str | None = None,
                unit: str | None = None, better: str | None = None, kind: str | None = None,
                items: Iterable[float] = (), flags: Iterable[str] = (),
                extra: Mapping[str, Any] | None = None) -> Metric:
    """A metric from its samples (or one value), filling unit, direction and kind from the catalogue."""
    if isinstance(samples, (int, float)):
        vals: tuple[float, ...] = (float(samples),)
    else:
        vals = tuple(float(x) for x in samples)
    info = metric_info(name, unit or "", better or LOWER)
    value = statistics.median(vals) if vals else float("nan")
    return Metric(
        name=name, value=float(value), unit=unit if unit is not None else info.unit,
        better=better or info.better, kind=kind or info.kind,
        samples=vals,
        model=model, items=tuple(float(x) for x in items), flags=tuple(flags),
        extra=dict(extra or {}),
    )


@dataclass
class TestResult:
    """Everything one test recorded; mutable while the test runs, plain JSON afterwards."""

    nodeid: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    budgets: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> model summary
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "budgets": dict(self.budgets),
            "models": dict(self.models),
            "verdicts": list(self.verdicts),
            "outcome": self.outcome,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TestResult":
        return cls(
            nodeid=str(d["nodeid"]),
            metrics={k: Metric.from_dict(v) for k, v in (d.get("metrics") or {}).items()},
            budgets=dict(d.get("budgets") or {}),
            models=dict(d.get("models") or {}),
            verdicts=list(d.get("verdicts") or []),
            outcome=str(d.get("outcome", "")),
        )
