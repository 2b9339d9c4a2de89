"""pytest hooks, options and fixtures of pytest-quantperf.

Thin on purpose: every hook fetches the session from ``config.stash`` and calls into modules that
know nothing of pytest. Nothing heavy is imported at load time (no torch, transformers, bitsandbytes).
"""
from __future__ import annotations

import contextlib
import functools
import json
from typing import Any, Generator

import pytest

from . import options as _options

SESSION_KEY = pytest.StashKey["Any"]()
RECORDER_KEY = pytest.StashKey["Any"]()
BUDGET_KEY = pytest.StashKey["Any"]()
ITEM_KEY = pytest.StashKey["Any"]()  # config.stash: the test now running (setup, call or teardown)
RESULT_ATTR = "quantperf_result"


class QuantperfWarning(pytest.PytestWarning):
    """Inconclusive comparisons, breaches under --quantperf-warn-only, missing baselines."""


# --------------------------------------------------------------------------- options

def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """The public hooks (hookspecs.py): a run's final document, extra metrics per measurement."""
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quantperf", "performance, memory and accuracy budgets for quantized models")
    _options.add_pytest_options(group.addoption, parser.addini)


def _session(config: pytest.Config) -> Any:
    return config.stash.get(SESSION_KEY, None)


def _role(config: pytest.Config) -> str:
    if hasattr(config, "workerinput"):
        return "worker"
    dist = config.getoption("dist", "no") if config.pluginmanager.hasplugin("xdist") else "no"
    numproc = config.getoption("numprocesses", None) if config.pluginmanager.hasplugin("xdist") else None
    if (dist and dist != "no") or numproc:
        return "controller"
    return "inprocess"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "quant_budget(**limits, tolerance=None): budgets for this test's measurements, e.g. "
        "quant_budget(vram_mb=6000, tokens_per_s=15, perplexity=25.0)")
    from .session import QuantperfSession, Settings, SettingsError

    opts = _options.resolve(config.getoption, config.getini)
    try:
        settings = Settings.from_options(opts, config.rootpath)
    except SettingsError as e:
        raise pytest.UsageError(str(e)) from None
    role = _role(config)
    device_override = None
    worker_env = None
    if role == "worker":
        # xdist: pin this worker to its GPU now, before anything here touches CUDA (scale.py says why
        # this is early enough), and take the controller's environment so hardware ids agree
        from .scale import pin_worker_gpu

        try:
            device_override = pin_worker_gpu(config.workerinput.get("workerid", "gw0"), settings.gpus,
                                             settings.device)
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None
        if config.workerinput.get("quantperf_env"):
            worker_env = json.loads(config.workerinput["quantperf_env"])
    tr = config.pluginmanager.get_plugin("terminalreporter")

    def progress(msg: str) -> None:
        """Loads and conversions take minutes for 7B models: say so, even while output is captured."""
        if tr is None or config.option.verbose < 0 or role == "worker":
            return
        capman = config.pluginmanager.get_plugin("capturemanager")
        cm = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
        with cm:
            tr.write_line(f"[quantperf] {msg}")

    config.stash[SESSION_KEY] = QuantperfSession(settings, role=role, rootdir=str(config.rootpath),
                                                 progress=progress, device_override=device_override)
    config.stash[SESSION_KEY].extra_metrics_hook = functools.partial(
        config.hook.pytest_quantperf_extra_metrics, config=config)
    if worker_env is not None:
        config.stash[SESSION_KEY]._env = worker_env
    if role != "worker":
        config.pluginmanager.register(_Collector(config), "quantperf-collector")


def pytest_sessionstart(session: pytest.Session) -> None:
    qs = _session(session.config)
    if qs is None or not qs.settings.baseline:
        return
    from .store.schema import StorageError

    try:
        qs.load_baseline()
    except StorageError as e:
        raise pytest.UsageError(f"--quantperf-baseline: {e}") from None


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> Generator[None, None, None]:
    """Validate every quant_budget marker before anything runs: a typo must not pass silently.

    A wrapper: the model groups are given before xdist's hook turns them into node-id suffixes,
    and the suffixes are checked after it (scale.keep_group_suffixes)."""
    errors = []
    for item in items:
        marks = list(item.iter_markers("quant_budget"))
        if not marks:
            continue
        from .verdicts.budgets import BudgetError, merge_markers

        try:
            item.stash[BUDGET_KEY] = merge_markers(item.nodeid, [(m.args, dict(m.kwargs)) for m in marks])
        except BudgetError as e:
            errors.append(str(e))
    if errors:
        raise pytest.UsageError("invalid quant_budget marker(s):\n  " + "\n  ".join(errors))
    from .scale import assign_groups, keep_group_suffixes

    assign_groups(config, items)
    yield
    keep_group_suffixes(config, items)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """One line of what this run compares with, where it stores, and where models go.

    Only when a baseline or a save is asked for: a suite that never uses quantperf keeps its header
    (and the device is named as asked, so the header probes no CUDA).
    """
    qs = _session(config)
    if qs is None or qs.role == "worker" or not (qs.settings.baseline or qs.settings.save):
        return None
    s = qs.settings
    return [f"quantperf: baseline={s.baseline or '-'} save={s.save or '-'} storage={s.storage} device={s.device}"]


# --------------------------------------------------------------------------- fixtures

def _fail_model_error(e: Exception) -> None:
    pytest.fail(f"{type(e).__name__}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def quant_model(request: pytest.FixtureRequest):
    """Load (or reuse from the session cache) a model: ``quant_model("default", quant="nf4")``.

    Session-scoped, like the cache behind it, so module- and session-scoped fixtures of the user
    can load through it; the test whose budget applies is the one running at call time.
    """
    config = request.config
    qs = _session(config)

    def load(model: str = "default", quant: str = "fp16", *, compute_dtype: str | None = None,
             double_quant: bool | None = None, device: str | None = None, **load_kwargs: Any):
        from .errors import ModelError
        from .models import make_spec, resolve_device

        backend = load_kwargs.pop("backend", "transformers")
        if backend != "transformers":
            return _load_other_backend(qs, backend, model, quant, compute_dtype, double_quant, load_kwargs)
        try:
            dev = qs.device if device is None else resolve_device(device)
            spec = make_spec(model, quant, compute_dtype=compute_dtype, double_quant=double_quant, device=dev,
                             trust_remote_code=load_kwargs.pop("trust_remote_code", qs.settings.trust_remote_code),
                             **load_kwargs)
            _fail_fast_on_vram_budget(config.stash.get(ITEM_KEY, None), spec, qs)
            return qs.cache.get(spec)
        except ModelError as e:
            _fail_model_error(e)

    return load


def _load_other_backend(qs: Any, backend: str, model: str, quant: str, compute_dtype: Any, double_quant: Any,
                        load_kwargs: dict[str, Any]) -> Any:
    """llama.cpp (GGUF files) or MLX behind the same handle, measurements and budgets."""
    from .backends import load_with_backend
    from .errors import BackendUnavailable, ModelError

    if quant != "fp16" or compute_dtype or double_quant:
        _fail_model_error(ModelError(
            f"quant/compute_dtype/double_quant do not apply to backend={backend!r}: the GGUF file decides "
            "(llama_cpp); use quantize_bits= (mlx)"))
    key = (backend, model, tuple(sorted((k, repr(v)) for k, v in load_kwargs.items())))
    if key not in qs.backend_models:
        try:
            qs.backend_models[key] = load_with_backend(backend, model, default_model=qs.settings.model,
                                                       progress=qs.progress, **load_kwargs)
        except BackendUnavailable as e:
            pytest.skip(str(e))
        except (ModelError, ValueError, OSError) as e:
            _fail_model_error(e)
    return qs.backend_models[key]


def _fail_fast_on_vram_budget(item: pytest.Item | None, spec: Any, qs: Any) -> None:
    """A vram_mb budget that the weights alone exceed fails before a load that cannot fit."""
    budget = item.stash.get(BUDGET_KEY, None) if item is not None else None
    limit = budget.limits.get("vram_mb") if budget is not None else None
    if limit is None or not spec.device.startswith("cuda") or dict(spec.load_kwargs).get("device_map"):
        return
    from .models import fit
    from .models import resolve_source

    try:
        src = spec.model if spec.synthetic else resolve_source(spec, qs.settings.model)[0]
        pred = fit.predict(src, spec.quant, double_quant=bool(spec.double_quant),
                           compute_dtype=spec.compute_dtype, device=spec.device)
    except Exception:
        return  # no prediction: the budget is checked after measuring, as usual
    if pred.weight_mb > limit:
        pytest.fail(f"budget vram_mb: {spec.label} needs {pred.weight_mb:.0f} MiB for its weights alone "
                    f"(predicted from the config before loading), max {limit:g}: not loaded", pytrace=False)


@pytest.fixture(scope="session")
def fp16_model(request: pytest.FixtureRequest, quant_model):
    """The unquantized reference: fp16 on CUDA, fp32 on the CPU (``quant=`` overrides)."""
    qs = _session(request.config)

    def load(model: str = "default", **kw: Any):
        if "quant" not in kw:
            dev = kw.get("device") or qs.device
            kw["quant"] = "fp16" if str(dev).startswith("cuda") else "fp32"
        lm = quant_model(model, **kw)
        return lm.as_reference()

    return load


@pytest.fixture
def quantperf(request: pytest.FixtureRequest):
    """Measure and record for this test: generate, perplexity, multiple_choice, lm_eval, compare, record."""
    rec = _recorder(request.node)
    return rec


def _recorder(item: pytest.Item) -> Any:
    rec = item.stash.get(RECORDER_KEY, None)
    if rec is None:
        from .recorder import Recorder

        rec = Recorder(_session(item.config), item.nodeid, item.stash.get(BUDGET_KEY, None))
        item.stash[RECORDER_KEY] = rec
    return rec


# --------------------------------------------------------------------------- running

@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Remember the running test for the session-scoped loaders: a module-scoped fixture set up
    for this test loads under this test's budget (the ``vram_mb`` fail-fast)."""
    item.config.stash[ITEM_KEY] = item
    try:
        return (yield)
    finally:
        item.config.stash[ITEM_KEY] = None

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """After the test body: budgets, then the baseline; a breach or regression fails this test."""
    try:
        out = yield
    except BaseException:
        # the body failed: still keep what it measured (OOM inside a measurement, an assert)
        rec = item.stash.get(RECORDER_KEY, None)
        if rec is not None:
            rec.result.outcome = "failed"
        raise
    rec = item.stash.get(RECORDER_KEY, None)
    budget = item.stash.get(BUDGET_KEY, None)
    if rec is None and budget is None:
        return out
    rec = _recorder(item)
    qs = _session(item.config)
    from .recorder import judge

    device = qs.device if rec.result.metrics else qs.settings.device
    j = judge(qs, rec.result, rec.budget, device=device)
    rec.result.verdicts = j.verdicts
    for w in j.warnings:
        item.warn(QuantperfWarning(f"{item.nodeid}: {w}"))
    if j.failures:
        msg = f"quantperf: {len(j.failures)} problem(s) in {item.nodeid}:\n  " + "\n  ".join(j.failures)
        if qs.settings.warn_only:
            item.warn(QuantperfWarning(msg + "\n  (--quantperf-warn-only: not failing)"))
        else:
            pytest.fail(msg, pytrace=False)
    return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Results ride on the report, so -n 0 and -n 8 share one path to the controller."""
    report = yield
    if report.when == "call":
        rec = item.stash.get(RECORDER_KEY, None)
        if rec is not None and (rec.result.metrics or rec.result.budgets):
            rec.result.outcome = report.outcome
            setattr(report, RESULT_ATTR, json.dumps(rec.result.to_dict()))
            for name, m in rec.result.metrics.items():
                prop = (f"quantperf.{name}", f"{m.value:.6g}{(' ' + m.unit) if m.unit else ''}")
                report.user_properties.append(prop)
                item.user_properties.append(prop)  # --junitxml writes the item's properties
    return report


class _Collector:
    """Registered on the controller (or the single process): gathers results from reports."""

    def __init__(self, config: pytest.Config):
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        raw = getattr(report, RESULT_ATTR, None)
        if not raw or report.when != "call":
            return
        from .results import TestResult

        _session(self.config).collect(TestResult.from_dict(json.loads(raw)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    qs = _session(session.config)
    if qs is None or qs.role == "worker" or qs.unused():
        return
    from .report import write_run_reports

    outcome = qs.finish(int(getattr(session, "testsfailed", 0) or 0))
    qs.final_view = write_run_reports(qs, outcome)
    session.config.hook.pytest_quantperf_run_finished(config=session.config, document=outcome.doc)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    qs = _session(config)
    if qs is None or qs.role == "worker" or qs.unused():
        return
    from .report import write_terminal

    write_terminal(qs, terminalreporter, qs.outcome, qs.final_view)


# --------------------------------------------------------------------------- xdist

@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Each worker gets the controller's fingerprint; it reads the GPU list from its own options
    and pins itself before CUDA starts (see scale.py)."""
    qs = _session(node.config)
    if qs is not None:
        # one fingerprint for the whole run: a worker pinned to one GPU of an x2 host would
        # otherwise call its hardware "one H100" and miss the baseline saved as "two H100s"
        try:
            node.workerinput["quantperf_env"] = json.dumps(qs.env)
        except Exception:  # a failed probe must not stop the run; workers fingerprint themselves
            pass


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under ``--dist loadgroup`` xdist appends ``@group`` to node ids; results keep the plain id,
    so a grouped run compares with and saves into the same baseline entries as a serial run."""
    if "@" not in item.nodeid or RECORDER_KEY in item.stash:
        return
    from .scale import item_groups, plain_nodeid

    nodeid = plain_nodeid(item.nodeid, item_groups(item))
    if nodeid != item.nodeid:
        from .recorder import Recorder

        item.stash[RECORDER_KEY] = Recorder(_session(item.config), nodeid, item.stash.get(BUDGET_KEY, None))
