"""Tolerance parsing and verdicts: the rules of compare.py on seeded data."""
from __future__ import annotations

import json
import math
import statistics

import numpy as np

from pytest_quantperf import stats
import pytest
from hypothesis import given, settings, strategies as hs

from pytest_quantperf.compare import (
    DEFAULT_TOLERANCES, Tolerance, Verdict, compare_metric, compare_runs, parse_tolerance,
    parse_tolerance_spec, repeat_values, tolerance_for,
)
from pytest_quantperf.results import METRICS, SCHEMA, make_metric

TEN = parse_tolerance("10%")


# ---- tolerance parsing -------------------------------------------------------------------
def test_parse_tolerance_basic():
    assert parse_tolerance("5%") == Tolerance(0.05, True)
    assert parse_tolerance(" 2.5 % ") == Tolerance(0.025, True)
    assert parse_tolerance("0.01") == Tolerance(0.01, False)
    assert parse_tolerance(3) == Tolerance(3.0, False)
    assert parse_tolerance("5%").text == "5%"
    assert parse_tolerance("0.01").text == "0.01"


@pytest.mark.parametrize("bad", ["", "%", "-5%", "five", "5%%", "nan", "inf%", "1e999", "5 5%", True, None])
def test_parse_tolerance_rejects(bad):
    with pytest.raises(ValueError, match="tolerance"):
        parse_tolerance(bad)


def test_parse_tolerance_spec():
    spec = parse_tolerance_spec("tokens_per_s=5%,vram_mb=2%,accuracy=0.01,my_metric=3")
    assert spec == {"tokens_per_s": Tolerance(0.05, True), "vram_mb": Tolerance(0.02, True),
                    "accuracy": Tolerance(0.01, False), "my_metric": Tolerance(3.0, False)}
    assert parse_tolerance_spec("") == {}
    assert parse_tolerance_spec("ref.tokens_per_s=7%") == {"ref.tokens_per_s": Tolerance(0.07, True)}


@pytest.mark.parametrize("bad,part", [
    ("tokens_per_s=5%,vram_mb", "vram_mb"),
    ("tokens_per_s=fast", "fast"),
    ("9lives=5%", "9lives"),
    ("a=1,a=2", "twice"),
    ("tokens_per_s=5%,,vram_mb=2%", "''"),
    ("x-y=1%", "x-y"),
])
def test_parse_tolerance_spec_errors_name_the_part_and_format(bad, part):
    with pytest.raises(ValueError) as e:
        parse_tolerance_spec(bad)
    assert part in str(e.value)
    if part != "twice":
        assert "NAME=VALUE" in str(e.value)


@given(hs.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_parse_tolerance_only_raises_value_error(text):
    try:
        t = parse_tolerance(text)
    except ValueError:
        return
    assert t.value >= 0 and math.isfinite(t.value)
    assert parse_tolerance(t.text) == t


@given(hs.floats(min_value=0, max_value=1e12, allow_nan=False), hs.booleans())
@settings(max_examples=300, deadline=None)
def test_tolerance_text_round_trips(value, relative):
    t = parse_tolerance(f"{value!r}%" if relative else repr(value))
    assert parse_tolerance(t.text) == t


@given(hs.dictionaries(hs.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
                       hs.tuples(hs.floats(min_value=0, max_value=1e6, allow_nan=False), hs.booleans()),
                       max_size=6))
@settings(max_examples=200, deadline=None)
def test_tolerance_spec_round_trips(d):
    tols = {k: parse_tolerance(f"{v!r}%" if rel else repr(v)) for k, (v, rel) in d.items()}
    spec = ",".join(f"{k}={t.text}" for k, t in tols.items())
    assert parse_tolerance_spec(spec) == tols


@given(hs.text(alphabet=hs.sampled_from("abz_09.=%,- e+x"), max_size=40))
@settings(max_examples=400, deadline=None)
def test_tolerance_spec_only_raises_value_error(spec):
    try:
        out = parse_tolerance_spec(spec)
    except ValueError:
        return
    assert all(isinstance(t, Tolerance) for t in out.values())


def test_defaults_come_from_catalogue():
    assert set(DEFAULT_TOLERANCES) == set(METRICS)
    assert DEFAULT_TOLERANCES["vram_mb"] == Tolerance(0.02, True)
    assert DEFAULT_TOLERANCES["accuracy"] == Tolerance(0.02, False)
    own = {"t::a": {"tokens_per_s": Tolerance(0.5, True)}}
    assert tolerance_for("t::a", "tokens_per_s[nf4]", {}, own) == Tolerance(0.5, True)
    assert tolerance_for("t::b", "ref.tokens_per_s", {"tokens_per_s": Tolerance(0.2, True)}) == Tolerance(0.2, True)
    assert tolerance_for("t::b", "something_new", {}) == Tolerance(0.1, True)


# ---- timing verdicts -------------------------------------------------------------------
def _timing(name, samples):
    return make_metric(name, [float(x) for x in samples])


def _cmp(name, base, cur, tol=TEN, **kw):
    kw.setdefault("same_hardware", True)
    return compare_metric("t.py::test_x", name, base, cur, tol, **kw)


def test_aa_noisy_samples_never_flag_a_regression():
    rng = np.random.default_rng(20261125)
    statuses, held = [], 0
    for _ in range(200):
        b = _timing("latency_ms", rng.normal(100, 10, 10))
        c = _timing("latency_ms", rng.normal(100, 10, 10))
        v = _cmp("latency_ms", b, c)
        statuses.append(v.status)
        held += "worse, within what unchanged runs often move" in v.message
        assert not v.gating
    assert "regression" not in statuses and "improvement" not in statuses
    # and it is not vacuous: changes beyond the tolerance happen in this noise and are held back,
    # each saying how far it moved; none is a warning, since run-to-run drift covers each of them
    assert held >= 3 and "inconclusive" not in statuses
    assert set(statuses) <= {"pass", "too_noisy"}


def test_clear_slowdown_is_a_gating_regression():
    rng = np.random.default_rng(7)
    b = _timing("latency_ms", rng.normal(100, 3, 10))
    c = _timing("latency_ms", rng.normal(250, 5, 10))
    v = _cmp("latency_ms", b, c)
    assert v.status == "regression" and v.gating and v.evidence == "assumed"
    assert v.change == pytest.approx(c.value / b.value - 1)
    assert v.p_value < 0.01 and v.ci[0] > 0.1
    assert "latency_ms" in v.message and "tolerance 10%" in v.message and "p=" in v.message
    assert "assumed" in v.message  # no run history: the verdict says what it rests on
    # throughput: a 70% drop of a higher-is-better metric
    tb = _timing("tokens_per_s", rng.normal(50, 1.5, 10))
    tc = _timing("tokens_per_s", rng.normal(15, 0.5, 10))
    v = _cmp("tokens_per_s", tb, tc)
    assert v.status == "regression" and v.change < 0 and v.ci[1] < 0
    # the other way round is an improvement, never gating
    v = _cmp("tokens_per_s", tc, tb)
    assert v.status == "improvement" and not v.gating


def test_within_run_samples_alone_never_make_a_change_significant():
    """Tight repeats inside one run say nothing of how far a whole run moves (the run is the unit)."""
    b = _timing("latency_ms", [100, 100.1, 99.9, 100.05, 99.95, 100.0, 100.02, 99.98])
    c = _timing("latency_ms", [160, 160.1, 159.9, 160.05, 159.95, 160.0, 160.02, 159.98])
    v = _cmp("latency_ms", b, c)
    assert v.status == "inconclusive" and not v.gating and "unchanged runs seldom move this far" in v.message
    # the old within-run rule called this certain
    assert stats.mann_whitney(c.samples, b.samples, "greater") < 0.001


def test_history_widens_the_run_spread_never_narrows_it():
    """Saves in a row share the host's state of those minutes: they can show more noise than the prior, not less."""
    b = _timing("latency_ms", [100, 100.5, 99.6, 100.2, 99.9, 100.1])
    c = _timing("latency_ms", [160, 160.5, 159.6, 160.2, 159.9, 160.1])  # +60%
    quiet = [100.0, 100.8, 99.4, 100.3, 99.7, 100.5, 99.9, 100.2]
    v = _cmp("latency_ms", b, c, history=quiet)
    assert v.status == "regression" and v.evidence == "history" and "8 saved runs moved only" in v.message
    small = _timing("latency_ms", [115, 115.5, 114.6, 115.2, 114.9, 115.1])  # +15%: within the prior's noise
    v = _cmp("latency_ms", b, small, history=quiet)
    assert v.status == "pass" and not v.gating and "+15.0%" in v.message
    assert "worse, within what unchanged runs often move" in v.message
    # a history that moves 15% between unchanged runs is measured, and makes even +60% noise
    noisy = [100.0, 118.0, 86.0, 109.0, 93.0, 121.0, 97.0, 104.0]
    v = _cmp("latency_ms", b, c, history=noisy)
    assert v.status == "inconclusive" and v.evidence == "history" and "from 8 saved runs" in v.message
    # two saved runs are not enough to measure a spread: assumed, and said so
    v = _cmp("latency_ms", b, c, history=[100.0, 100.2])
    assert v.evidence == "assumed"


def test_repeated_saves_of_the_baseline_narrow_what_it_tells_apart():
    """Five saves of one commit: their mean is the baseline's level, known better than one run."""
    saves = [800.0, 830.0, 770.0, 810.0, 790.0]
    b = _timing("latency_ms", [800, 805, 795])
    c = _timing("latency_ms", [1135, 1140, 1130])  # +42% from the saves' level
    one = _cmp("latency_ms", b, c, history=saves)
    pooled = _cmp("latency_ms", b, c, history=saves, repeats=saves)
    assert one.status == "inconclusive" and pooled.status == "regression" and pooled.gating
    assert pooled.detectable < one.detectable
    assert "geometric mean of its 5 saved runs of the same code" in pooled.message
    assert pooled.baseline == pytest.approx(statistics.geometric_mean(saves))
    # without a measured spread the saves are not pooled
    assert "geometric mean" not in _cmp("latency_ms", b, c, repeats=saves).message


def _saved(commit, dirty, value, hw="cpu-x"):
    return {"kind": "run", "env": {"hardware_id": hw}, "git": {"commit": commit, "dirty": dirty},
            "tests": {"t.py::test_x": {"metrics": {"latency_ms": {"value": value}}}}}


def test_only_clean_saves_of_the_baselines_own_commit_are_its_repeats():
    hist = [_saved("a1", False, 100.0), _saved("b2", False, 200.0), _saved("a1", True, 300.0),
            _saved("a1", False, 110.0, hw="cpu-y"), _saved("a1", False, 104.0)]
    base = _saved("a1", False, 104.0)
    assert repeat_values(hist, "t.py::test_x", base) == {"latency_ms": [100.0, 104.0]}
    assert repeat_values(hist, "t.py::test_x", _saved("a1", True, 104.0)) == {}
    assert repeat_values(hist, "t.py::test_x", {"kind": "run", "git": None}) == {}


def test_shift_under_heavy_noise_is_never_passed_silently():
    """A +20% shift in runs whose own samples scatter 30%: a warning where more samples would settle
    it, a pass only where the run-to-run drift alone covers it, and then saying how far it moved."""
    rng = np.random.default_rng(11)
    seen, held_by_scatter = set(), 0
    for _ in range(50):
        b = _timing("latency_ms", rng.normal(100, 30, 10))
        c = _timing("latency_ms", rng.normal(120, 36, 10))
        v = _cmp("latency_ms", b, c)
        seen.add(v.status)
        if v.status == "inconclusive":
            assert v.detectable and v.detectable > 0.2
            scattered = v.p_value >= 0.1  # held back by the runs' own samples, not by drift between runs
            held_by_scatter += scattered
            assert ("scatter too much to tell" in v.message) == scattered, v.message
        if v.status == "pass" and v.change > 0.1:
            assert "worse, within what unchanged runs often move" in v.message and f"{v.change * 100:+.1f}%" in v.message
    assert seen <= {"inconclusive", "too_noisy", "regression", "pass"}
    assert "inconclusive" in seen and "too_noisy" in seen and held_by_scatter >= 1


def test_few_samples_are_judged_as_one_run_each():
    v = _cmp("latency_ms", _timing("latency_ms", [100, 101]), _timing("latency_ms", [250, 251]))
    assert v.status == "regression" and v.gating
    v = _cmp("latency_ms", _timing("latency_ms", [100, 101]), _timing("latency_ms", [160, 161]))
    assert v.status == "inconclusive" and not v.gating


def test_single_sample_figures_get_a_verdict_not_a_perpetual_warning():
    """load_s and other one-per-run figures: pass when unchanged, never 'too noisy'."""
    v = _cmp("latency_ms", _timing("latency_ms", [100]), _timing("latency_ms", [101]))
    assert v.status == "pass"
    v = _cmp("energy_j_per_token", _timing("energy_j_per_token", [2.0]), _timing("energy_j_per_token", [2.1]))
    assert v.status == "pass"
    v = _cmp("energy_j_per_token", _timing("energy_j_per_token", [2.0]), _timing("energy_j_per_token", [5.0]))
    assert v.status == "regression"
    # load time: one figure per run, set by the file cache: shown, not a verdict
    v = _cmp("load_s", _timing("load_s", [17.0]), _timing("load_s", [28.0]), tol=parse_tolerance("50%"))
    assert v.status == "not_gated"


def test_steady_within_tolerance_passes():
    b = _timing("latency_ms", [100, 100.5, 99.6, 100.2, 99.9, 100.1])
    c = _timing("latency_ms", [102, 101.5, 102.2, 101.8, 102.1, 101.9])
    v = _cmp("latency_ms", b, c)
    # no history: the 9% prior with a t quantile of 3 degrees of freedom, about +96% at a 10% tolerance
    assert v.status == "pass" and v.detectable is not None and 0.9 < v.detectable < 1.0
    # five saves in a row that moved 0.2% do not make the gate sharper than the prior taken as known
    v2 = _cmp("latency_ms", b, c, history=[100.0, 100.3, 99.8, 100.1, 99.9])
    assert v2.status == "pass" and v2.evidence == "history" and 0.4 < v2.detectable < 0.55
    v3 = _cmp("latency_ms", b, c, history=[100.0, 120.0, 85.0, 110.0, 90.0])  # they moved more: wider
    assert v3.detectable > v2.detectable


def test_figures_that_follow_the_session_are_shown_not_gated():
    for name in ("host_rss_mb", "vram_reserved_mb", "nvml_process_mb"):
        v = _cmp(name, make_metric(name, 1000.0), make_metric(name, 1200.0), parse_tolerance("5%"))
        assert v.status == "not_gated" and not v.gating, name


def test_cross_hardware_speed_is_reported_not_gated():
    rng = np.random.default_rng(3)
    b = _timing("latency_ms", rng.normal(100, 2, 10))
    c = _timing("latency_ms", rng.normal(250, 3, 10))
    v = _cmp("latency_ms", b, c, same_hardware=False)
    assert v.status == "regression" and v.cross_hardware and not v.gating
    assert "other hardware" in v.message and "not gated" in v.message
    v = _cmp("latency_ms", b, c, same_hardware=False, gate_cross_hardware=True)
    assert v.gating and v.cross_hardware
    # memory still gates across hardware
    m = _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1100.0),
             parse_tolerance("2%"), same_hardware=False)
    assert m.status == "regression" and m.gating and not m.cross_hardware


# ---- direct and accuracy verdicts ------------------------------------------------------
def test_memory_is_compared_directly():
    tol = parse_tolerance("2%")
    assert _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1019.0), tol).status == "pass"
    v = _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1021.0), tol)
    assert v.status == "regression" and v.gating and v.p_value is None
    assert _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 900.0), tol).status == "improvement"


def test_accuracy_paired_mcnemar():
    tol = parse_tolerance("0.02")
    base_items = [1.0] * 70 + [0.0] * 30
    # 15 questions lost, none gained: 0.70 → 0.55, McNemar p = 2 / 2**15
    cur_items = [1.0] * 55 + [0.0] * 45
    b = make_metric("accuracy", 0.70, items=base_items)
    c = make_metric("accuracy", 0.55, items=cur_items)
    v = _cmp("accuracy", b, c, tol)
    assert v.status == "regression" and v.gating
    assert v.p_value == pytest.approx(2 / 2**15)
    assert v.ci_of == "items" and v.ci[1] < 0
    # 3 lost and 1 gained: 0.70 → 0.68 is beyond 0.02? no (exactly 0.02): pass
    cur2 = [1.0] * 67 + [0.0] * 32 + [1.0]
    assert _cmp("accuracy", b, make_metric("accuracy", 0.68, items=cur2), tol).status == "pass"
    # 5 lost and 1 gained: 0.66, beyond tolerance but McNemar p = 0.22: inconclusive
    cur3 = [1.0] * 65 + [0.0] * 34 + [1.0]
    v = _cmp("accuracy", b, make_metric("accuracy", 0.66, items=cur3), tol)
    assert v.status == "inconclusive" and not v.gating and v.p_value > 0.1
    # without items: direct comparison
    v = _cmp("accuracy", make_metric("accuracy", 0.70), make_metric("accuracy", 0.66), tol)
    assert v.status == "regression" and v.p_value is None


def test_info_metrics_are_not_gated():
    v = _cmp("gpu_busy_share", make_metric("gpu_busy_share", 0.9), make_metric("gpu_busy_share", 0.1))
    assert v.status == "not_gated" and not v.gating


def test_accepted_regression_does_not_gate():
    tol = parse_tolerance("2%")
    rec = {"value": 1100.0, "reason": "new kernel uses a workspace", "who": "ana", "when": "2026-11-25T00:00:00Z"}
    v = _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1105.0), tol, accepted=rec)
    assert v.status == "accepted" and not v.gating and "workspace" in v.message and "ana" in v.message
    v = _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1200.0), tol, accepted=rec)
    assert v.status == "regression" and v.gating


def test_verdict_to_dict_is_json():
    rng = np.random.default_rng(1)
    v = _cmp("latency_ms", _timing("latency_ms", rng.normal(100, 3, 8)), _timing("latency_ms", rng.normal(250, 3, 8)))
    d = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    assert d["status"] == "regression" and d["gating"] is True and isinstance(d["ci"], list)
    with pytest.raises(ValueError):
        Verdict("n", "m", "bogus", 1.0, 1.0, 0.0, "5%")


# ---- whole runs ------------------------------------------------------------------------
def _doc(hw, tests, accepted=None):
    d = {"schema": SCHEMA, "name": "main", "created": "2026-11-25T00:00:00Z", "env": {"hardware_id": hw},
         "tests": {nid: {"nodeid": nid, "metrics": {m.name: m.to_dict() for m in ms}} for nid, ms in tests.items()}}
    if accepted:
        d["accepted"] = accepted
    return d


def test_compare_runs_new_gone_counts_and_tolerances():
    rng = np.random.default_rng(2)
    slow = rng.normal(100, 2, 10)
    base = _doc("cpu-x-2c", {
        "t::a": [_timing("latency_ms", slow), make_metric("host_rss_mb", 500.0)],
        "t::b": [make_metric("vram_mb", 1000.0)],
        "t::gone": [make_metric("vram_mb", 1.0)],
    }, accepted={"t::b": {"vram_mb": {"value": 1300.0, "reason": "bigger batch", "who": "ci", "when": "x"}}})
    cur = _doc("cpu-x-2c", {
        "t::a": [_timing("latency_ms", slow * 2.5), make_metric("cpu_percent", 80.0)],
        "t::b": [make_metric("vram_mb", 1250.0)],
        "t::new": [make_metric("vram_mb", 1.0)],
    })
    comp = compare_runs(json.loads(json.dumps(base)), json.loads(json.dumps(cur)), {})
    by = {(v.nodeid, v.metric): v for v in comp.verdicts}
    assert comp.same_hardware and comp.baseline_hardware_id == "cpu-x-2c"
    assert by[("t::a", "latency_ms")].status == "regression"
    assert by[("t::a", "host_rss_mb")].status == "gone"
    assert by[("t::a", "cpu_percent")].status == "new"
    assert by[("t::b", "vram_mb")].status == "accepted"
    assert by[("t::new", "vram_mb")].status == "new"
    assert comp.new_tests == ("t::new",) and comp.gone_tests == ("t::gone",)
    assert comp.counts["regression"] == 1 and comp.counts["gating"] == 1 and comp.counts["new"] == 2
    assert [v.metric for v in comp.gating] == ["latency_ms"]
    # a generous per-test tolerance turns the regression into a pass
    comp2 = compare_runs(base, cur, {}, per_test={"t::a": {"latency_ms": parse_tolerance("200%")}})
    assert {v.status for v in comp2.for_test("t::a") if v.metric == "latency_ms"} == {"pass"}
    json.dumps(comp.to_dict(), allow_nan=False)


def test_compare_runs_other_hardware():
    rng = np.random.default_rng(4)
    s = rng.normal(100, 2, 10)
    base = _doc("cuda-nvidia-a10g", {"t::a": [_timing("latency_ms", s), make_metric("vram_mb", 1000.0)]})
    cur = _doc("cuda-nvidia-h100-80gb-hbm3", {"t::a": [_timing("latency_ms", s * 2), make_metric("vram_mb", 1100.0)]})
    comp = compare_runs(base, cur, {})
    assert not comp.same_hardware
    by = {v.metric: v for v in comp.verdicts}
    assert by["latency_ms"].cross_hardware and not by["latency_ms"].gating
    assert by["vram_mb"].gating
    assert compare_runs(base, cur, {}, gate_cross_hardware=True).counts["gating"] == 2


def test_kernel_time_guard_keeps_wall_clock_drift_from_failing():
    """GPU kernel time steady, wall time 2.5x: host-side, reported but not gating."""
    from pytest_quantperf.compare import DEFAULT_TOLERANCES, compare_metric, kernel_time_guard
    from pytest_quantperf.results import make_metric

    wall_b = make_metric("latency_ms", [100, 101, 99, 100, 102, 98, 100, 101])
    wall_c = make_metric("latency_ms", [250, 251, 249, 250, 252, 248, 250, 251])
    gpu_b = make_metric("gpu_ms_per_token", [7.700, 7.701])
    gpu_c = make_metric("gpu_ms_per_token", [7.702, 7.701])
    gpu_slow = make_metric("gpu_ms_per_token", [8.10, 8.101])
    v_wall = compare_metric("t", "latency_ms", wall_b, wall_c, DEFAULT_TOLERANCES["latency_ms"], same_hardware=True)
    assert v_wall.status == "regression" and v_wall.gating
    v_gpu = compare_metric("t", "gpu_ms_per_token", gpu_b, gpu_c, DEFAULT_TOLERANCES["gpu_ms_per_token"],
                           same_hardware=True)
    guarded = {v.metric: v for v in kernel_time_guard([v_wall, v_gpu])}
    assert guarded["latency_ms"].status == "inconclusive" and not guarded["latency_ms"].gating
    assert "GPU kernel time unchanged" in guarded["latency_ms"].message
    # a real GPU-side slowdown (+5% kernel time, 1% tolerance) is a regression with two samples a side
    v_slow = compare_metric("t", "gpu_ms_per_token", gpu_b, gpu_slow, DEFAULT_TOLERANCES["gpu_ms_per_token"],
                            same_hardware=True)
    assert v_slow.status == "regression" and v_slow.gating
    kept = {v.metric: v for v in kernel_time_guard([v_wall, v_slow])}
    assert kept["latency_ms"].status == "regression"


def test_kernel_time_guard_is_per_model_and_covers_improvements():
    """A reference's steady kernel time never hides the candidate's wall clock; noise is never an improvement."""
    from pytest_quantperf.compare import judge_test

    def m(name, xs):
        return make_metric(name, [float(x) for x in xs])

    steady_gpu = [7.700, 7.701]
    base = {"metrics": {k: v.to_dict() for k, v in {
        "latency_ms": m("latency_ms", [100, 101, 99, 100, 102]),
        "gpu_ms_per_token": m("gpu_ms_per_token", steady_gpu),
        "ref.latency_ms": m("ref.latency_ms", [50, 51, 49, 50, 50]),
        "ref.gpu_ms_per_token": m("ref.gpu_ms_per_token", [3.0, 3.0]),
    }.items()}}
    cur = {  # candidate: wall +150% and its kernel time +6%; reference: wall 70% *faster*, kernel time steady
        "latency_ms": m("latency_ms", [250, 251, 249, 250, 252]),
        "gpu_ms_per_token": m("gpu_ms_per_token", [8.16, 8.16]),
        "ref.latency_ms": m("ref.latency_ms", [15, 15.2, 14.8, 15, 15]),
        "ref.gpu_ms_per_token": m("ref.gpu_ms_per_token", [3.0, 3.0]),
    }
    got = {v.metric: v for v in judge_test("t::x", cur, base, same_hardware=True)}
    assert got["latency_ms"].status == "regression" and got["latency_ms"].gating  # not hidden by the reference
    assert got["gpu_ms_per_token"].status == "regression"
    assert got["ref.latency_ms"].status == "inconclusive"  # a noise "improvement" is no verdict either
    assert "host-side change or noise" in got["ref.latency_ms"].message
    # with run history the measured spread decides, and a host-side slowdown gates
    hist = {"latency_ms": [100.0, 100.5, 99.5, 100.2, 99.8], "gpu_ms_per_token": [7.700, 7.701, 7.700]}
    cur2 = dict(cur, **{"gpu_ms_per_token": m("gpu_ms_per_token", steady_gpu)})
    got = {v.metric: v for v in judge_test("t::x", cur2, base, same_hardware=True, history=hist)}
    assert got["gpu_ms_per_token"].status == "pass"
    assert got["latency_ms"].status == "regression" and got["latency_ms"].gating


def test_contended_host_makes_a_timing_change_inconclusive():
    from pytest_quantperf.compare import judge_test
    from pytest_quantperf.results import Metric

    base = {"metrics": {"latency_ms": make_metric("latency_ms", [100.0, 101, 99]).to_dict()}}
    cur = make_metric("latency_ms", [390.0, 400, 410])
    busy = Metric(**{**cur.__dict__, "extra": {"host": {"state": "contended", "summary": "got 48% of 2 cores"}}})
    v, = judge_test("t::x", {"latency_ms": busy}, base, same_hardware=True)
    assert v.status == "inconclusive" and not v.gating and "host contended" in v.message
    assert v.guard == "host contended: got 48% of 2 cores; not gated" and v.message.endswith(f"[{v.guard}]")
    assert v.to_dict()["guard"] == v.guard  # in the run JSON, for tools that group warnings by cause
    v, = judge_test("t::x", {"latency_ms": cur}, base, same_hardware=True)
    assert v.status == "regression" and v.guard == ""


def test_better_beyond_tolerance_within_the_noise_passes_and_says_so():
    """An unchanged run that read 20% faster is no regression to warn of, and no improvement to claim."""
    from pytest_quantperf.compare import judge_test
    from pytest_quantperf.recorder import warning_lines

    base = {"metrics": {"latency_ms": make_metric("latency_ms", [100.0, 101, 99]).to_dict()}}
    v, = judge_test("t::x", {"latency_ms": make_metric("latency_ms", [80.0, 81, 79])}, base, same_hardware=True)
    assert v.status == "pass" and not v.gating and "-20.0%" in v.message
    assert "better, within what unchanged runs move" in v.message and warning_lines([v]) == []
    # the same size the other way is what unchanged runs often do: no warning either, the message
    # says how far it moved; farther than they often move is a warning, far beyond the noise a verdict
    v, = judge_test("t::x", {"latency_ms": make_metric("latency_ms", [120.0, 121, 119])}, base, same_hardware=True)
    assert v.status == "pass" and "worse, within what unchanged runs often move" in v.message
    assert warning_lines([v]) == [] and "+20.0%" in v.message
    v, = judge_test("t::x", {"latency_ms": make_metric("latency_ms", [160.0, 161, 159])}, base, same_hardware=True)
    assert v.status == "inconclusive" and len(warning_lines([v])) == 1
    v, = judge_test("t::x", {"latency_ms": make_metric("latency_ms", [20.0, 20.2, 19.8])}, base, same_hardware=True)
    assert v.status == "improvement"


def test_figures_withdrawn_for_one_cause_warn_once():
    """Beside a busy process all four wall-clock figures move: one warning line names them all."""
    from pytest_quantperf.compare import judge_test
    from pytest_quantperf.recorder import warning_lines
    from pytest_quantperf.results import Metric

    host = {"host": {"state": "contended", "summary": "median 0.38 of the asked cores held"}}
    names = ("latency_ms", "tpot_ms", "ttft_ms")
    base = {"metrics": {n: make_metric(n, [100.0, 101, 99]).to_dict() for n in names}}
    cur = {n: Metric(**{**make_metric(n, [390.0, 400, 410]).__dict__, "extra": host}) for n in names}
    vs = judge_test("t::x", cur, base, same_hardware=True)
    assert {v.status for v in vs} == {"inconclusive"}
    line, = warning_lines(vs)
    assert line.startswith("inconclusive latency_ms +300.0%, tpot_ms +300.0%, ttft_ms +300.0% [host contended: ")
    # a figure alone under its cause keeps its whole message
    alone, = warning_lines(judge_test("t::x", {"tpot_ms": cur["tpot_ms"]}, base, same_hardware=True))
    assert alone.startswith("inconclusive tpot_ms: baseline") and alone.endswith("not gated]")
    # another model of the test measured on a quiet host: its regression fails the test, never a warning
    base["metrics"]["ref.tpot_ms"] = make_metric("ref.tpot_ms", [100.0, 101, 99]).to_dict()
    quiet = make_metric("ref.tpot_ms", [390.0, 400, 410])
    mixed = judge_test("t::x", {"ref.tpot_ms": quiet, "tpot_ms": cur["tpot_ms"]},
                       {"metrics": {k: base["metrics"][k] for k in ("tpot_ms", "ref.tpot_ms")}}, same_hardware=True)
    assert {v.metric: v.status for v in mixed} == {"ref.tpot_ms": "regression", "tpot_ms": "inconclusive"}
    line, = warning_lines(mixed)
    assert "tpot_ms" in line and "ref.tpot_ms" not in line


def test_kernel_time_at_another_gpu_clock_is_inconclusive():
    from pytest_quantperf.compare import judge_test
    from pytest_quantperf.results import Metric

    def gm(x, sm):
        m = make_metric("gpu_ms_per_token", [x])
        return Metric(**{**m.__dict__, "extra": {"gpu_clocks": {"sm_clock_mhz": sm, "mem_clock_mhz": 3201}}})

    base = {"metrics": {"gpu_ms_per_token": gm(6.06, 1980).to_dict()}}
    v, = judge_test("t::x", {"gpu_ms_per_token": gm(6.60, 1755)}, base, same_hardware=True)
    assert v.status == "inconclusive" and "SM clock 1980 → 1755 MHz" in v.message
    v, = judge_test("t::x", {"gpu_ms_per_token": gm(6.60, 1980)}, base, same_hardware=True)
    assert v.status == "regression" and v.gating  # +9% at the same clock: the code's


def test_a_timing_budget_breached_on_a_contended_host_is_inconclusive():
    from pytest_quantperf.budgets import Budget, evaluate
    from pytest_quantperf.results import Metric, TestResult

    def tps(v, state):
        m = make_metric("tokens_per_s", [v])
        return Metric(**{**m.__dict__, "extra": {"host": {"state": state, "summary": "0.50 of the cores held"}}})

    r = TestResult("t::x", metrics={"tokens_per_s": tps(5.0, "contended"),
                                    "footprint_mb": make_metric("footprint_mb", 200.0)})
    got = {c.key: c for c in evaluate(Budget({"tokens_per_s": 10.0, "footprint_mb": 100.0}), r)}
    assert got["tokens_per_s"].status == "inconclusive" and "host contended" in got["tokens_per_s"].message
    assert got["footprint_mb"].status == "breach"  # memory is not the host's
    # far beyond what contention explains (1e9 tok/s): the breach stands
    got = {c.key: c for c in evaluate(Budget({"tokens_per_s": 1e9}), r)}
    assert got["tokens_per_s"].status == "breach"
    r.metrics["tokens_per_s"] = tps(5.0, "quiet")
    got = {c.key: c for c in evaluate(Budget({"tokens_per_s": 10.0}), r)}
    assert got["tokens_per_s"].status == "breach"
