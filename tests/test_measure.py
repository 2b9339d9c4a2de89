"""The sampling plan, the time budget, the per-run bill and the out-of-memory path of ``measure_generate``.

On the CPU with the real default model: the number of forward passes (counted by a forward hook)
shows how long each warm-up really was; the clock shows that ``max_time_s`` bounds the whole
measurement. The CUDA parts (profiled run, energy per run, a real OOM) run under ``-m gpu``.
"""
from __future__ import annotations

import json
import statistics
import time

import pytest

from pytest_quantperf.errors import MeasurementError
from pytest_quantperf.measure.generate import GenerateResult, SamplingPlan, measure_generate

torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def lm():
    from pytest_quantperf.models import load, make_spec

    return load(make_spec("default", "bf16", device="cpu"))


class Forwards:
    """Counts the model's forward passes: a generate of n new tokens makes n of them."""

    def __init__(self, lm):
        self.n = 0
        self.handle = lm.model.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_warmup_is_short_runs_then_one_full_length_run(lm):
    with Forwards(lm) as f:
        res = measure_generate(lm, [PROMPT], 16, SamplingPlan(repeat=1, warmup=3))
    # two short warm-ups of warmup_tokens, one full-length warm-up, one timed run
    assert f.n == 2 * 4 + 16 + 16
    assert res.warmup_runs == 3 and res.runs == 1 and res.profiled_runs == 0
    assert len(res.samples["latency_ms"]) == 1 and res.stop_reason == "fixed repeat=1"


def test_auto_warmup_settles_on_short_runs(lm):
    with Forwards(lm) as f:
        res = measure_generate(lm, [PROMPT], 16, SamplingPlan(repeat=2, warmup=None))
    short = res.warmup_runs - 1
    assert 1 <= short <= 3
    assert f.n == short * 4 + 16 + 2 * 16


def test_warmup_zero_times_the_first_run(lm):
    with Forwards(lm) as f:
        res = measure_generate(lm, [PROMPT], 8, SamplingPlan(repeat=2, warmup=0))
    assert f.n == 2 * 8 and res.warmup_runs == 0 and res.warmup_seconds < 0.05


def test_time_budget_bounds_the_whole_measurement(lm):
    new = 12
    one = measure_generate(lm, [PROMPT], new, SamplingPlan(repeat=2, warmup=1))
    budget = 1.5 * statistics.median(one.samples["latency_ms"]) / 1e3
    # min_repeat=20: only a host grown 13x faster since the calibration above could fit 20 runs in
    # 1.5 runs' time, so "fewer than min_repeat" does not hang on the host's speed staying put
    res = measure_generate(lm, [PROMPT], new, SamplingPlan(max_time_s=budget, min_repeat=20, max_repeat=20))
    # the warm-up (short runs, one full run) is inside the budget, and the budget overrides min_repeat
    assert res.stop_reason == "time", res.costs()
    assert 1 <= res.runs < 20 and len(res.samples["latency_ms"]) == res.runs
    lat = [x / 1e3 for x in res.samples["latency_ms"]]
    # it stopped because one more run would not have fitted ...
    assert res.seconds + statistics.median(lat) > budget
    # ... and every run after the first started only where it fitted (noise-proof: the runs' own times)
    for i in range(1, len(lat)):
        assert res.warmup_seconds + sum(lat[:i]) + statistics.median(lat[:i]) <= budget, (res.costs(), lat)
    # a budget shorter than one run still gives one timed run, and no second one
    tiny = measure_generate(lm, [PROMPT], new, SamplingPlan(max_time_s=0.01))
    assert tiny.runs == 1 and tiny.stop_reason == "time"
    assert tiny.warmup_runs == 2  # one short run (a quarter of the budget is gone), then the full one


def test_each_figure_says_what_it_cost(lm):
    t0 = time.perf_counter()
    res = measure_generate(lm, [PROMPT], 8, SamplingPlan(repeat=4, warmup=2))
    wall = time.perf_counter() - t0
    assert res.runs == 4 and res.profiled_runs == 0 and res.kernel_time_path == ""
    assert 0 < res.warmup_seconds and 0 < res.timed_seconds
    assert res.warmup_seconds + res.timed_seconds <= res.seconds <= wall
    assert res.seconds - (res.warmup_seconds + res.timed_seconds) < 0.25 * res.seconds
    # the timed runs' own latencies fit inside the timed phase
    assert sum(res.samples["latency_ms"]) / 1e3 <= res.timed_seconds
    assert res.cost("tokens_per_s") == {"runs": 4, "seconds": round(res.timed_seconds, 3)}
    assert res.cost("gpu_ms_per_token")["runs"] == 0
    bill = res.costs()
    assert bill["warmup_runs"] == 2 and bill["runs"] == 4 and json.loads(json.dumps(bill)) == bill
    assert "energy_j_per_token" not in res.samples and "energy_j_per_token" not in res.values  # no NVML here


def test_next_timed_run_rule():
    plan = SamplingPlan(max_time_s=10.0, min_repeat=5, max_repeat=6, target_rel_ci=0.02)
    assert plan.next_timed_run([], 50.0) == (True, "min_n")  # one timed run whatever the budget
    assert plan.next_timed_run([11.0], 12.0) == (False, "time")  # int8 at 11 s a run: no minute of repeats
    assert plan.next_timed_run([1.0, 1.0], 3.0) == (True, "min_n")
    assert plan.next_timed_run([1.0, 1.0], 9.5) == (False, "time")  # the next run would not fit
    assert plan.next_timed_run([1.0] * 5, 6.0) == (False, "converged")
    assert plan.next_timed_run([1.0, 1.5, 1.0, 1.5, 1.2], 6.0) == (True, "more")
    assert plan.next_timed_run([1.0, 1.5, 1.0, 1.5, 1.2, 1.1], 7.0) == (False, "max_n")
    fixed = SamplingPlan(repeat=3, max_time_s=0.001)
    assert fixed.next_timed_run([5.0, 5.0], 100.0) == (True, "fixed repeat=3")  # asked for: honoured
    assert fixed.next_timed_run([5.0] * 3, 100.0)[0] is False


def test_out_of_memory_fails_cleanly_and_the_next_measurement_works(lm):
    """An OOM inside generate (raised here by a forward hook, as the CUDA allocator raises it) becomes
    one clear MeasurementError with nothing chained to it, and the model measures normally after."""
    calls = {"n": 0}

    def hook(*_):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.81 GiB")

    h = lm.model.register_forward_hook(hook)
    try:
        with pytest.raises(MeasurementError) as ei:
            measure_generate(lm, [PROMPT], 8, SamplingPlan(repeat=2, warmup=1))
    finally:
        h.remove()
    msg = str(ei.value)
    assert "out of memory while generating with" in msg and "asked for 20.00 GiB more" in msg
    assert ei.value.__context__ is None and ei.value.__cause__ is None  # the generate's frames are let go
    res = measure_generate(lm, [PROMPT], 8, SamplingPlan(repeat=2, warmup=1))
    assert res.runs == 2


def test_other_errors_pass_through_unchanged(lm):
    def hook(*_):
        raise KeyError("not memory")

    h = lm.model.register_forward_hook(hook)
    try:
        with pytest.raises(KeyError, match="not memory"):
            measure_generate(lm, [PROMPT], 4, SamplingPlan(repeat=1, warmup=0))
    finally:
        h.remove()


def test_max_time_bounds_a_test_through_the_plugin(pytester, monkeypatch):
    pytester.makepyfile(test_budget=f'''
        def test_gen(quant_model, quantperf):
            quantperf.generate(quant_model("default", quant="bf16"), {PROMPT!r}, max_new_tokens=8)
    ''')
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--quantperf-device=cpu",
                                      "--quantperf-max-time=0.01", "--quantperf-json=out.json")
    r.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "out.json").read_text())
    (t,) = doc["tests"].values()
    lat = t["metrics"]["latency_ms"]
    assert len(lat["samples"]) == 1 and lat["extra"]["stop_reason"] == "time"


# --------------------------------------------------------------------------- on a GPU

# --------------------------------------------------------------------------- kernel time from a window

def test_the_backend_reports_every_new_token(lm):
    from pytest_quantperf.backends import backend_for

    b = backend_for(lm)
    seen = []
    t = b.run(b.prepare([PROMPT]), 6, on_step=seen.append)
    assert seen == [0, 1, 2, 3, 4, 5, 6] and t.new_tokens == 6


def test_window_profiles_prefill_and_middle_decode_steps_only(lm):
    """On the CPU timeline (real generate, real kineto): two segments, the rest of the run unprofiled."""
    from pytest_quantperf import gpu
    from pytest_quantperf.backends import backend_for

    b = backend_for(lm)
    prepared = b.prepare([PROMPT])
    api = gpu.kernel_time._raw_api()
    raws = []
    real_disable = api[-1]

    def disable():
        raws.append(real_disable())
        return raws[-1]

    n, w = 20, 4
    assert gpu.window_start(n, w) == 1 + (19 - 4) // 2 == 8
    steps = []

    def run(on_step):
        def f(i):
            steps.append((i, torch.autograd._profiler_enabled()))
            on_step(i)
        return b.run(prepared, n, on_step=f)

    p = gpu.profile_window(run, n, api=api[:-1] + (disable,), window=w, activity="cpu")
    assert len(raws) == 2 and not torch.autograd._profiler_enabled()
    on = {i for i, enabled in steps if enabled}
    assert on == {0, 1, 9, 10, 11, 12}  # prefill up to token 1; the window opens after 8, closes after 12
    assert p.gpu_ms == pytest.approx(p.prefill_ms + (n - 1) * p.decode_ms_per_step)
    assert p.prefill_ms > 0 and p.decode_ms_per_step > 0 and p.path == gpu.PATH_WINDOW
    whole = gpu.kernel_time._profile_raw(lambda: b.run(prepared, n), api, activity="cpu")
    assert p.n_events < whole.n_events * 0.6  # most of the run was never recorded
    assert p.to_dict()["window"] == w and p.switch_ms > 0


def test_window_needs_enough_tokens_and_switches_off_on_error(lm):
    from pytest_quantperf import gpu

    api = gpu.kernel_time._raw_api()
    assert gpu.window_start(16, 8) is None and gpu.window_start(17, 8) == 5
    with pytest.raises(ValueError, match="at least 17 new tokens"):
        gpu.profile_window(lambda f: None, 16, api=api, window=8, activity="cpu")

    def boom(on_step):
        on_step(0)
        on_step(1)
        raise KeyError("inside")

    with pytest.raises(KeyError):
        gpu.profile_window(boom, 32, api=api, window=4, activity="cpu")
    assert not torch.autograd._profiler_enabled()
    with pytest.raises(RuntimeError, match="reported steps up to 0"):
        gpu.profile_window(lambda f: f(0), 32, api=api, window=4, activity="cpu")
    assert not torch.autograd._profiler_enabled()


@pytest.mark.gpu
@needs_cuda
def test_cuda_plan_profiles_once_and_reads_energy_per_run():
    from pytest_quantperf import gpu
    from pytest_quantperf.models import load, make_spec

    lm = load(make_spec("synthetic:qwen2.5-1.5b", "fp16", device="cuda"))
    nv = gpu.Nvml.open(lm.device)
    try:
        res = measure_generate(lm, ["x" * 32], 64, SamplingPlan(max_time_s=8.0), nvml=nv)
    finally:
        if nv is not None:
            nv.close()
    assert res.profiled_runs == 1 and res.kernel_time_path == gpu.PATH_WINDOW
    assert res.kernel_window["window"] == 8 and res.kernel_window["prefill_ms"] > 0
    assert len(res.samples["gpu_ms_per_token"]) == 1
    # what the profiled run costs beside a plain one is a benchmark figure (kernel_time_cost.py)
    assert res.profiled_seconds > 0 and res.cost("gpu_ms_per_token")["runs"] == 1
    if nv is not None and "energy_j_per_token" in res.samples:
        e = res.samples["energy_j_per_token"]
        assert len(e) == res.runs and all(x > 0 for x in e)
    assert res.seconds <= 8.0 + statistics.median(res.samples["latency_ms"]) / 1e3 * 1.5


@pytest.mark.gpu
@needs_cuda
def test_cuda_oom_fails_that_test_and_the_session_goes_on(pytester, monkeypatch):
    pytester.makepyfile(test_oom='''
        def test_huge_batch(quant_model, quantperf):
            lm = quant_model("synthetic:qwen2.5-1.5b", quant="fp16")
            quantperf.generate(lm, ["x" * 8192] * 512, max_new_tokens=4)

        def test_after(quant_model, quantperf):
            lm = quant_model("synthetic:qwen2.5-1.5b", quant="fp16")
            quantperf.generate(lm, "x" * 32, max_new_tokens=16)
    ''')
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--quantperf-device=cuda",
                                      "--quantperf-repeat=2", "--quantperf-warmup=1", "--quantperf-json=out.json")
    r.assert_outcomes(failed=1, passed=1)
    out = r.stdout.str()
    assert "out of memory while generating with" in out and "free of" in out and "asked for" in out
    doc = json.loads((pytester.path / "out.json").read_text())
    after = next(t for nid, t in doc["tests"].items() if nid.endswith("test_after"))
    fp = after["metrics"]["footprint_mb"]["value"]
    vram = after["metrics"]["vram_mb"]["value"]
    assert fp <= vram < fp + 1024, (fp, vram)  # its own weights and a small KV cache, nothing left over


@pytest.mark.gpu
@needs_cuda
def test_window_kernel_time_agrees_with_the_whole_run():
    from pytest_quantperf import gpu
    from pytest_quantperf.backends import backend_for
    from pytest_quantperf.models import load, make_spec

    lm = load(make_spec("synthetic:qwen2.5-1.5b", "fp16", device="cuda"))
    b = backend_for(lm)
    prepared = b.prepare(["x" * 32])
    b.run(prepared, 64)
    whole = gpu.profile_kernels(lambda: b.run(prepared, 64), lm.device)
    win = gpu.profile_generate(b, prepared, 64, lm.device, window=8)
    assert win.path == gpu.PATH_WINDOW and whole.path == gpu.PATH_RAW
    assert win.gpu_ms == pytest.approx(whole.gpu_ms, rel=0.005)
