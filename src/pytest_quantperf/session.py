"""All state of one run, on one object: settings, the model cache, results, the baseline.

pytest-free: the plugin creates it in ``pytest_configure`` and keeps it in ``config.stash``; the
hooks only call its methods. Nothing lives in module globals.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .measure.generate import SamplingPlan

if TYPE_CHECKING:  # results is imported where a result first arrives, not in every pytest run
    from .results import TestResult


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run produced: its document, the baseline it saved, if any, and its warnings.

    Returned by :meth:`QuantperfSession.finish`, so reports render plain data, never save and never
    write back: what a report itself must warn about goes into its own view.
    """

    doc: Mapping[str, Any]
    saved: str | None = None
    warnings: tuple[str, ...] = ()


class SettingsError(ValueError):
    """A bad option value; the plugin turns it into ``pytest.UsageError``."""


@dataclass(frozen=True)
class Settings:
    baseline: str | None = None
    save: str | None = None
    storage: str = ".quantperf"
    tolerance: Mapping[str, Any] = field(default_factory=dict)
    tolerance_text: str = ""
    warn_only: bool = False
    gate_cross_hardware: bool = False
    device: str = "auto"
    gpus: tuple[int, ...] = ()
    plan: SamplingPlan = field(default_factory=SamplingPlan)
    html: str | None = None
    json: str | None = None
    markdown: str | None = None
    exports: tuple[tuple[str, str], ...] = ()
    model: str | None = None
    trust_remote_code: bool = False
    #: count the work of each decode in a run of its own (``--quantperf-count-work``)
    count_work: bool = True

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], rootdir: str | os.PathLike) -> "Settings":
        """Parse option values at the edge; every error names the option and the valid form."""
        # light modules only: this runs in every pytest session where the plugin is installed
        from .store.names import validate_name
        from .verdicts.tolerance import parse_tolerance_spec

        def name(opt: str) -> str | None:
            v = opts.get(opt)
            if not v:
                return None
            try:
                validate_name(str(v))
            except ValueError as e:
                raise SettingsError(f"--quantperf-{opt}: {e}") from None
            return str(v)

        tol_text = opts.get("tolerance") or ""
        try:
            tol = parse_tolerance_spec(tol_text) if tol_text else {}
        except ValueError as e:
            raise SettingsError(f"--quantperf-tolerance: {e}") from None
        device = str(opts.get("device") or "auto")
        import re

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise SettingsError(f"--quantperf-device: {device!r} is not one of auto, cpu, cuda, cuda:N")
        gpus: tuple[int, ...] = ()
        if opts.get("gpus"):
            try:
                gpus = tuple(int(x) for x in str(opts["gpus"]).split(",") if x.strip())
            except ValueError:
                raise SettingsError(f"--quantperf-gpus: {opts['gpus']!r} is not a list like 0,2,3") from None
            if not gpus or any(g < 0 for g in gpus):
                raise SettingsError(f"--quantperf-gpus: {opts['gpus']!r} is not a list like 0,2,3")
        try:
            target = float(opts.get("target_ci") or 0.02)
            max_time = float(opts.get("max_time") or 10)
            if not (0 < target < 1) or max_time <= 0:
                raise ValueError
        except ValueError:
            raise SettingsError("--quantperf-target-ci must be a fraction in (0, 1) and --quantperf-max-time "
                                "a positive number of seconds") from None
        from .measure.host import parse_pin

        try:
            pin = parse_pin(opts.get("pin_core"))
        except ValueError as e:
            raise SettingsError(f"--quantperf-{e}") from None
        try:
            plan = SamplingPlan.parse(opts.get("repeat"), opts.get("warmup"), target_rel_ci=target,
                                      max_time_s=max_time, pin_core=pin)
        except ValueError as e:
            raise SettingsError(f"--quantperf-{str(e).split()[0]}: {e}") from None
        cw = str(opts.get("count_work") or "on").strip().lower()
        if cw not in ("on", "off"):
            raise SettingsError(f"--quantperf-count-work: {opts.get('count_work')!r} is not on or off")
        exports = []
        for e in opts.get("export") or []:
            fmt, sep, path = str(e).partition(":")
            if not sep or fmt not in ("github-action-benchmark", "pytest-benchmark") or not path:
                raise SettingsError(f"--quantperf-export: {e!r} is not github-action-benchmark:PATH or "
                                    "pytest-benchmark:PATH")
            exports.append((fmt, path))
        storage = str(opts.get("storage") or ".quantperf")
        if "://" not in storage and not os.path.isabs(storage):
            storage = str(Path(rootdir) / storage)
        return cls(baseline=name("baseline"), save=name("save"), storage=storage, tolerance=tol,
                   tolerance_text=tol_text, warn_only=bool(opts.get("warn_only")),
                   gate_cross_hardware=bool(opts.get("gate_cross_hardware")), device=device, gpus=gpus,
                   plan=plan, html=opts.get("html"), json=opts.get("json"), markdown=opts.get("markdown"),
                   exports=tuple(exports), model=opts.get("model"),
                   trust_remote_code=bool(opts.get("trust_remote_code")), count_work=cw == "on")


@dataclass(frozen=True)
class ExtraMetric:
    """One metric a ``pytest_quantperf_extra_metrics`` hook returned, checked and normalised."""

    name: str
    samples: tuple[float, ...]
    unit: str = ""
    better: str = "lower"


def _extra_metric(name: Any, raw: Any) -> ExtraMetric:
    """``value`` | ``[samples]`` | ``{"value"|"samples", "unit", "better"}`` → ExtraMetric; ValueError otherwise."""
    import math

    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"metric name {name!r} is not an identifier")
    unit, better = "", "lower"
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"value", "samples", "unit", "better"}
        if unknown:
            raise ValueError(f"{name}: unknown keys {sorted(unknown)} (value, samples, unit, better)")
        unit, better = str(raw.get("unit", "") or ""), str(raw.get("better", "lower"))
        raw = raw.get("samples", raw.get("value"))
    values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                             for v in values):
        raise ValueError(f"{name}: {raw!r} is not a finite number or a non-empty list of them")
    if better not in ("lower", "higher", "none"):
        raise ValueError(f"{name}: better={better!r} is not lower, higher or none")
    return ExtraMetric(name, tuple(float(v) for v in values), unit, better)


class QuantperfSession:
    """One run: what every hook and fixture shares."""

    def __init__(self, settings: Settings, *, role: str = "inprocess", rootdir: str = ".",
                 progress: Callable[[str], None] | None = None, device_override: str | None = None):
        self.settings = settings
        self.role = role  # "inprocess" | "controller" | "worker"
        self.rootdir = rootdir
        self.progress = progress
        self._cache: Any = None
        self.results: dict[str, TestResult] = {}
        self.order: list[str] = []
        self.ref_cache: dict[Any, Any] = {}
        self.backend_models: dict[Any, Any] = {}  # llama.cpp / MLX handles, by backend, model and options
        self.bandwidth: dict[str, float] = {}
        self._nvml: dict[str, Any] = {}
        self._device: str | None = device_override
        self._env: dict[str, Any] | None = None
        self.baseline_doc: dict[str, Any] | None = None
        self.baseline_matched_hw: bool | None = None
        self.baseline_error: str | None = None
        self.baseline_history: list[dict[str, Any]] = []
        self.outcome: RunOutcome | None = None  # set by finish()
        self.final_view: dict[str, Any] | None = None  # the reports' view, rendered once at the end
        self.started = _dt.datetime.now(_dt.timezone.utc)
        self.warnings: list[str] = []
        # the pytest_quantperf_extra_metrics hook, bound to the config by the plugin (None: no pytest)
        self.extra_metrics_hook: Callable[..., list[Any]] | None = None

    # ----------------------------------------------------------------- environment
    @property
    def cache(self) -> Any:
        """The session's model cache, made on first use: a run that loads no model never imports models."""
        if self._cache is None:
            from .models import ModelCache

            self._cache = ModelCache(default_model=self.settings.model, progress=self.progress)
        return self._cache

    @property
    def device(self) -> str:
        if self._device is None:
            from .models import resolve_device

            self._device = resolve_device(self.settings.device)
        return self._device

    @property
    def env(self) -> dict[str, Any]:
        if self._env is None:
            from .envinfo import fingerprint

            dev = None
            with contextlib.suppress(Exception):
                dev = self.device
            self._env = fingerprint(dev)
        return self._env

    def nvml_for(self, device: str) -> Any:
        """NVML handle of a CUDA device, opened once; None where NVML does not work."""
        if not device.startswith("cuda"):
            return None
        if device not in self._nvml:
            from . import gpu

            idx = int(device.split(":")[1]) if ":" in device else 0
            self._nvml[device] = gpu.Nvml.open(idx)
        return self._nvml[device]

    def bandwidth_for(self, device: str) -> float | None:
        """Device memory bandwidth, measured once per session per GPU (the roofline's roof)."""
        if not device.startswith("cuda"):
            return None
        if device not in self.bandwidth:
            from . import gpu

            try:
                self.bandwidth[device] = gpu.measure_bandwidth_gbs(device)
            except Exception as e:  # a failed probe must not fail tests
                self.warnings.append(f"bandwidth probe failed on {device}: {e}")
                self.bandwidth[device] = 0.0
        return self.bandwidth[device] or None

    # ----------------------------------------------------------------- baseline
    def storage(self):
        from .store.storage import Storage

        return Storage(self.settings.storage)

    def load_baseline(self) -> None:
        """Read the baseline once; a missing one is a warning, a corrupt one an error."""
        if not self.settings.baseline:
            return
        from .store.schema import StorageError

        try:
            got = self.storage().load(self.settings.baseline, self.env.get("hardware_id"))
        except StorageError:
            raise
        if got is None:
            self.warnings.append(f"baseline {self.settings.baseline!r} not found in {self.settings.storage}: "
                                 "nothing compared (save one with --quantperf-save)")
            return
        self.baseline_doc, self.baseline_matched_hw = got
        try:
            # earlier saved runs of the same name: their spread is the run-to-run noise the verdicts use
            self.baseline_history = self.storage().history(self.settings.baseline, skip_invalid=True)
        except StorageError as e:
            self.warnings.append(f"history of baseline {self.settings.baseline!r} unreadable ({e}): "
                                 "run-to-run spread assumed")

    def baseline_test(self, nodeid: str) -> dict[str, Any] | None:
        if not self.baseline_doc:
            return None
        return (self.baseline_doc.get("tests") or {}).get(nodeid)

    # ----------------------------------------------------------------- tests
    def extra_metrics(self, nodeid: str, measurement: str, lm: Any, result: Any) -> list[ExtraMetric]:
        """What the ``pytest_quantperf_extra_metrics`` hooks add to one measurement, checked.

        The recorder calls this after each measurement and records what comes back for ``lm``.
        A malformed return raises ValueError naming the metric, so the test fails with a clear line.
        """
        if self.extra_metrics_hook is None:
            return []
        out: list[ExtraMetric] = []
        for returned in self.extra_metrics_hook(nodeid=nodeid, measurement=measurement, lm=lm, result=result):
            if not isinstance(returned, Mapping):
                raise ValueError(f"pytest_quantperf_extra_metrics returned {returned!r}, not a mapping of metrics")
            for name, raw in returned.items():
                try:
                    out.append(_extra_metric(name, raw))
                except ValueError as e:
                    raise ValueError(f"pytest_quantperf_extra_metrics: {e}") from None
        return out

    def unused(self) -> bool:
        """Nothing measured, compared, saved or reported: the end of the run has nothing to do.

        The plugin then skips the run document (git, the hardware fingerprint, torch) entirely, so
        a suite that never uses quantperf pays nothing at its end either.
        """
        s = self.settings
        return not (self.results or self.warnings or s.baseline or s.save or s.html or s.json or s.markdown
                    or s.exports)

    def collect(self, result: TestResult) -> None:
        if result.nodeid not in self.results:
            self.order.append(result.nodeid)
        self.results[result.nodeid] = result

    def run_document(self) -> dict[str, Any]:
        from .envinfo import git_info
        from .results import SCHEMA

        git = None
        with contextlib.suppress(Exception):
            git = git_info(self.rootdir)
        return {
            "schema": SCHEMA,
            "name": self.settings.save,
            "created": self.started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "env": self.env,
            "git": git,
            "options": {"repeat": self.settings.plan.repeat or "auto",
                        "warmup": self.settings.plan.warmup if self.settings.plan.warmup is not None else "auto",
                        "device": self.settings.device, "tolerance": self.settings.tolerance_text,
                        "count_work": "on" if self.settings.count_work else "off",
                        "target_ci": self.settings.plan.target_rel_ci},
            "baseline": {"name": self.settings.baseline,
                         "hardware_id": (self.baseline_doc or {}).get("env", {}).get("hardware_id"),
                         "matched_hardware": self.baseline_matched_hw,
                         "created": (self.baseline_doc or {}).get("created")} if self.settings.baseline else None,
            "tests": {nid: self.results[nid].to_dict() for nid in self.order},
        }

    def save(self, doc: dict[str, Any]) -> str | None:
        if not self.settings.save or not doc["tests"]:
            return None
        self.storage().save(self.settings.save, doc)
        return self.settings.save

    def finish(self, testsfailed: int) -> RunOutcome:
        """End of the run: its document, saved as the baseline only when every test passed.

        A run with failures never replaces a baseline, and neither does a ``--quantperf-warn-only``
        run that would have failed: warn-only hides failures from the exit code, not from the store.
        """
        doc = self.run_document()
        saved = None
        if self.settings.save:
            failed = int(testsfailed or 0)
            hidden = [nid for nid in self.order if any(v.get("gating") for v in self.results[nid].verdicts)]
            if failed:
                self.warnings.append(f"baseline {self.settings.save!r} NOT saved: {failed} test(s) failed; a failing "
                                     "run never replaces a baseline")
            elif hidden:
                self.warnings.append(f"baseline {self.settings.save!r} NOT saved: {len(hidden)} test(s) breached a "
                                     "budget or regressed (passed only because of --quantperf-warn-only); accept a "
                                     "change on purpose with `quantperf accept`")
            elif not doc["tests"]:
                self.warnings.append(f"baseline {self.settings.save!r} NOT saved: no test measured anything")
            else:
                saved = self.save(doc)
        self.outcome = RunOutcome(doc=doc, saved=saved, warnings=tuple(self.warnings))
        return self.outcome
