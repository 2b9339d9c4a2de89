"""Tolerance parsing and verdicts: the rules of compare.py on seeded data."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace

import numpy as np

import pytest
from hypothesis import given, settings, strategies as hs

from pytest_quantperf.verdicts.compare import (
    DEFAULT_TOLERANCES, Tolerance, Verdict, compare_metric, compare_runs, parse_tolerance,
    parse_tolerance_spec, same_code_values, tolerance_for,
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


# ---- timing verdicts: the interval of the change against the band ----------------------
def _timing(name, samples):
    return make_metric(name, [float(x) for x in samples])


def _cmp(name, base, cur, tol=TEN, **kw):
    kw.setdefault("same_hardware", True)
    return compare_metric("t.py::test_x", name, base, cur, tol, **kw)


def _steady(level, n=6):
    return _timing("latency_ms", [level * (1 + 0.002 * ((i % 3) - 1)) for i in range(n)])


def test_an_unchanged_run_against_one_save_is_inconclusive_and_says_what_it_decides():
    """One save cannot show a wall-clock figure within 10%: the run-to-run spread is only assumed."""
    v = _cmp("latency_ms", _steady(100), _steady(101))
    assert v.status == "inconclusive" and not v.gating and not v.warns
    assert "these runs decide changes beyond +" in v.message and "quantperf ab" in v.message
    assert "assumed" in v.evidence and v.detectable is not None and v.detectable > 0.5


def test_a_clear_slowdown_is_a_gating_regression_from_one_save():
    rng = np.random.default_rng(7)
    b = _timing("latency_ms", rng.normal(100, 3, 10))
    c = _timing("latency_ms", rng.normal(400, 5, 10))
    v = _cmp("latency_ms", b, c)
    assert v.status == "regression" and v.gating
    assert v.change == pytest.approx(c.value / b.value - 1)
    assert v.ci[0] > 0.1  # the whole interval beyond the tolerance
    assert "tolerance 10%" in v.message and "98% interval" in v.message and "assumed" in v.message
    # throughput: a higher-is-better figure falling to a quarter
    v = _cmp("tokens_per_s", _timing("tokens_per_s", rng.normal(60, 1.5, 10)),
             _timing("tokens_per_s", rng.normal(15, 0.5, 10)))
    assert v.status == "regression" and v.change < 0 and v.ci[1] < -0.1
    # the other way round is an improvement, never gating
    v = _cmp("tokens_per_s", _timing("tokens_per_s", rng.normal(15, 0.5, 10)),
             _timing("tokens_per_s", rng.normal(60, 1.5, 10)))
    assert v.status == "improvement" and not v.gating


@pytest.mark.parametrize("change", [0.11, 0.25, 0.35, 0.6, 0.9])
def test_a_worse_change_beyond_tolerance_is_never_a_pass(change):
    """+25% and +35% passed silently half the time and more under the old rule; now they cannot."""
    v = _cmp("latency_ms", _steady(100), _steady(100 * (1 + change)))
    assert v.status in ("inconclusive", "regression") and v.status != "pass"
    # shown worse (the whole interval above zero) is the only inconclusive that warns
    assert v.warns == (v.status == "inconclusive" and v.ci[0] > 0)


def test_within_run_samples_alone_never_make_a_change_significant():
    """Tight repeats inside one run say nothing of how far a whole run moves (the run is the unit)."""
    b = _timing("latency_ms", [100, 100.1, 99.9, 100.05, 99.95, 100.0, 100.02, 99.98])
    c = _timing("latency_ms", [160, 160.1, 159.9, 160.05, 159.95, 160.0, 160.02, 159.98])
    v = _cmp("latency_ms", b, c)
    assert v.status == "inconclusive" and not v.gating


def test_saves_of_the_same_code_narrow_what_the_gate_decides():
    b = _steady(800)
    c = _steady(1040)  # +30%
    one = _cmp("latency_ms", b, c)
    saves = [800.0, 804.0, 797.0, 802.0, 799.0]
    pooled = _cmp("latency_ms", b, c, same_code=saves)
    assert pooled.detectable < one.detectable
    assert "5 saved runs of the baseline's code" in pooled.message
    assert pooled.baseline == pytest.approx(statistics.geometric_mean(saves))
    noisy = [800.0, 960.0, 680.0, 880.0, 720.0]  # saves that moved far: the interval widens
    assert _cmp("latency_ms", b, c, same_code=noisy).detectable > pooled.detectable


def test_the_spread_model_has_no_jump():
    """A save that moved a little more moves what the gate decides a little: no floor, no switch of quantile."""
    b, c = _steady(100), _steady(130)
    dets = []
    for s in (0.086, 0.088, 0.090, 0.092, 0.094):
        saves = [100 * math.exp(s * z) for z in (-1.2649, -0.6325, 0.0, 0.6325, 1.2649)]  # log-sd exactly s
        dets.append(_cmp("latency_ms", b, c, same_code=saves).detectable)
    steps = [b2 - a2 for a2, b2 in zip(dets, dets[1:])]
    assert all(0 < st < 0.01 for st in steps), dets


def test_few_samples_are_judged_as_one_run_each():
    v = _cmp("latency_ms", _timing("latency_ms", [100, 101]), _timing("latency_ms", [500, 501]))
    assert v.status == "regression" and v.gating
    v = _cmp("latency_ms", _timing("latency_ms", [100, 101]), _timing("latency_ms", [160, 161]))
    assert v.status == "inconclusive" and not v.gating


def test_single_sample_figures_are_judged_like_any_run():
    v = _cmp("energy_j_per_token", _timing("energy_j_per_token", [2.0]), _timing("energy_j_per_token", [9.0]))
    assert v.status == "regression"
    v = _cmp("energy_j_per_token", _timing("energy_j_per_token", [2.0]), _timing("energy_j_per_token", [2.1]))
    assert v.status == "inconclusive"
    # load time: one figure per run, set by the file cache: shown, not a verdict
    v = _cmp("load_s", _timing("load_s", [17.0]), _timing("load_s", [28.0]), tol=parse_tolerance("50%"))
    assert v.status == "not_gated"


def test_kernel_time_is_decided_from_one_save():
    """Kernel time's 0.3% spread: unchanged passes, +5% is a regression, +1.3% is left open."""
    tol = DEFAULT_TOLERANCES["gpu_ms_per_token"]
    base = make_metric("gpu_ms_per_token", [7.700])
    assert _cmp("gpu_ms_per_token", base, make_metric("gpu_ms_per_token", [7.701]), tol).status == "pass"
    assert _cmp("gpu_ms_per_token", base, make_metric("gpu_ms_per_token", [8.10]), tol).status == "regression"
    assert _cmp("gpu_ms_per_token", base, make_metric("gpu_ms_per_token", [7.80]), tol).status == "inconclusive"


def test_figures_that_follow_the_session_are_shown_not_gated():
    for name in ("host_rss_mb", "vram_reserved_mb", "nvml_process_mb"):
        v = _cmp(name, make_metric(name, 1000.0), make_metric(name, 1200.0), parse_tolerance("5%"))
        assert v.status == "not_gated" and not v.gating, name


def test_other_hardware_is_a_reason_beside_the_status():
    rng = np.random.default_rng(3)
    b = _timing("latency_ms", rng.normal(100, 2, 10))
    c = _timing("latency_ms", rng.normal(400, 3, 10))
    v = _cmp("latency_ms", b, c, same_hardware=False)
    assert v.status == "regression" and v.cross_hardware and not v.gating
    assert [r.key for r in v.reasons] == ["other_hardware"]
    assert "[not gated: baseline from other hardware" in v.message
    v = _cmp("latency_ms", b, c, same_hardware=False, gate_cross_hardware=True)
    assert v.gating and not v.reasons
    # memory still gates across hardware
    m = _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1100.0),
             parse_tolerance("2%"), same_hardware=False)
    assert m.status == "regression" and m.gating and not m.cross_hardware


# ---- deterministic and accuracy verdicts ------------------------------------------------
def test_memory_is_compared_directly():
    tol = parse_tolerance("2%")
    assert _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1019.0), tol).status == "pass"
    v = _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1021.0), tol)
    assert v.status == "regression" and v.gating and v.ci is None
    assert _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 900.0), tol).status == "improvement"


def test_accuracy_paired_per_question():
    tol = parse_tolerance("0.02")
    base_items = [1.0] * 70 + [0.0] * 30
    b = make_metric("accuracy", 0.70, items=base_items)
    # 15 questions lost, none gained: 0.70 → 0.55, the whole interval of the drop beyond 0.02
    v = _cmp("accuracy", b, make_metric("accuracy", 0.55, items=[1.0] * 55 + [0.0] * 45), tol)
    assert v.status == "regression" and v.gating and v.ci_of == "items"
    assert v.p_value == pytest.approx(2 / 2**15)
    # the same questions answered the same: a point at zero, inside the band
    assert _cmp("accuracy", b, make_metric("accuracy", 0.70, items=base_items), tol).status == "pass"
    # 5 lost and 1 gained: 0.66, beyond the tolerance, but 6 flipped questions cannot say by how much
    cur3 = [1.0] * 65 + [0.0] * 34 + [1.0]
    v = _cmp("accuracy", b, make_metric("accuracy", 0.66, items=cur3), tol)
    assert v.status == "inconclusive" and not v.gating and "more questions" in v.message
    # without items: one number per side, compared directly
    v = _cmp("accuracy", make_metric("accuracy", 0.70), make_metric("accuracy", 0.66), tol)
    assert v.status == "regression" and v.ci is None


def test_accuracy_norm_is_paired_like_accuracy():
    """3 of 118 questions flipping was a gating regression of accuracy_norm (no items); now both pair."""
    tol = DEFAULT_TOLERANCES["accuracy_norm"]
    items = [1.0] * 66 + [0.0] * 52
    cur = [1.0] * 63 + [0.0] * 55
    for name in ("accuracy", "accuracy_norm"):
        v = _cmp(name, make_metric(name, 66 / 118, items=items), make_metric(name, 63 / 118, items=cur), tol)
        assert v.status == "inconclusive" and not v.gating, name


def test_perplexity_is_paired_per_token():
    rng = np.random.default_rng(5)
    nll = rng.gamma(2.0, 1.5, 600)
    worse = nll + 0.2  # every token 0.2 nats worse: perplexity x1.22
    b = make_metric("perplexity", float(np.exp(nll.mean())), items=nll)
    v = _cmp("perplexity", b, make_metric("perplexity", float(np.exp(worse.mean())), items=worse),
             DEFAULT_TOLERANCES["perplexity"])
    assert v.status == "regression" and v.ci_of == "items" and "600 tokens" in v.message
    same = _cmp("perplexity", b, make_metric("perplexity", b.value, items=nll), DEFAULT_TOLERANCES["perplexity"])
    assert same.status == "pass"


def test_work_is_compared_exactly():
    tol = parse_tolerance("1%")
    w = make_metric("ops_per_token", 2016.0, kind="work")
    assert _cmp("ops_per_token", w, make_metric("ops_per_token", 2016.0, kind="work"), tol).status == "pass"
    v = _cmp("ops_per_token", w, make_metric("ops_per_token", 2081.0, kind="work"), tol)
    assert v.status == "regression" and v.gating
    v = _cmp("ops_per_token", w, make_metric("ops_per_token", 1600.0, kind="work"), tol)
    assert v.status == "improvement"


def test_info_metrics_are_not_gated():
    v = _cmp("gpu_busy_share", make_metric("gpu_busy_share", 0.9), make_metric("gpu_busy_share", 0.1))
    assert v.status == "not_gated" and not v.gating


def test_an_accepted_value_is_a_reason_not_a_status():
    tol = parse_tolerance("2%")
    rec = {"value": 1100.0, "reason": "new kernel uses a workspace", "who": "ana", "when": "2026-11-25T00:00:00Z"}
    v = _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1105.0), tol, accepted=rec)
    assert v.status == "regression" and not v.gating and [r.key for r in v.reasons] == ["accepted"]
    assert "workspace" in v.message and "ana" in v.message and v.accepted["value"] == 1100.0
    v = _cmp("vram_mb", make_metric("vram_mb", 1000.0), make_metric("vram_mb", 1200.0), tol, accepted=rec)
    assert v.status == "regression" and v.gating and not v.reasons


def test_verdict_to_dict_is_json():
    rng = np.random.default_rng(1)
    v = _cmp("latency_ms", _timing("latency_ms", rng.normal(100, 3, 8)), _timing("latency_ms", rng.normal(400, 3, 8)),
             same_hardware=False)
    d = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    assert d["status"] == "regression" and d["gating"] is False and isinstance(d["ci"], list)
    assert d["reasons"][0]["key"] == "other_hardware" and d["guard"].startswith("baseline from other hardware")
    with pytest.raises(ValueError):
        Verdict("n", "m", "bogus", 1.0, 1.0, 0.0, "5%")


def _saved(commit, dirty, value, hw="cpu-x"):
    return {"kind": "run", "env": {"hardware_id": hw}, "git": {"commit": commit, "dirty": dirty},
            "tests": {"t.py::test_x": {"metrics": {"latency_ms": {"value": value}}}}}


def test_only_clean_saves_of_the_baselines_own_commit_measure_the_spread():
    hist = [_saved("a1", False, 100.0), _saved("b2", False, 200.0), _saved("a1", True, 300.0),
            _saved("a1", False, 110.0, hw="cpu-y"), _saved("a1", False, 104.0)]
    base = _saved("a1", False, 104.0)
    assert same_code_values(hist, "t.py::test_x", base) == {"latency_ms": [100.0, 104.0]}
    assert same_code_values(hist, "t.py::test_x", _saved("a1", True, 104.0)) == {}
    assert same_code_values(hist, "t.py::test_x", {"kind": "run", "git": None}) == {}


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
        "t::a": [_timing("latency_ms", slow * 4), make_metric("cpu_percent", 80.0)],
        "t::b": [make_metric("vram_mb", 1250.0)],
        "t::new": [make_metric("vram_mb", 1.0)],
    })
    comp = compare_runs(json.loads(json.dumps(base)), json.loads(json.dumps(cur)), {})
    by = {(v.nodeid, v.metric): v for v in comp.verdicts}
    assert comp.same_hardware and comp.baseline_hardware_id == "cpu-x-2c"
    assert by[("t::a", "latency_ms")].status == "regression"
    assert by[("t::a", "host_rss_mb")].status == "gone"
    assert by[("t::a", "cpu_percent")].status == "new"
    b = by[("t::b", "vram_mb")]
    assert b.status == "regression" and not b.gating and "bigger batch" in b.message
    assert by[("t::new", "vram_mb")].status == "new"
    assert comp.new_tests == ("t::new",) and comp.gone_tests == ("t::gone",)
    assert comp.counts["regression"] == 2 and comp.counts["gating"] == 1 and comp.counts["new"] == 2
    assert [v.metric for v in comp.gating] == ["latency_ms"]
    # a generous per-test tolerance (+400%) turns the regression into what the interval allows
    comp2 = compare_runs(base, cur, {}, per_test={"t::a": {"latency_ms": parse_tolerance("900%")}})
    assert {v.status for v in comp2.for_test("t::a") if v.metric == "latency_ms"} == {"pass"}
    json.dumps(comp.to_dict(), allow_nan=False)


def test_compare_runs_other_hardware():
    rng = np.random.default_rng(4)
    s = rng.normal(100, 2, 10)
    base = _doc("cuda-nvidia-a10g", {"t::a": [_timing("latency_ms", s), make_metric("vram_mb", 1000.0)]})
    cur = _doc("cuda-nvidia-h100-80gb-hbm3", {"t::a": [_timing("latency_ms", s * 4), make_metric("vram_mb", 1100.0)]})
    comp = compare_runs(base, cur, {})
    assert not comp.same_hardware
    by = {v.metric: v for v in comp.verdicts}
    assert by["latency_ms"].cross_hardware and not by["latency_ms"].gating
    assert by["vram_mb"].gating
    assert compare_runs(base, cur, {}, gate_cross_hardware=True).counts["gating"] == 2


# ---- reasons across a model's figures ---------------------------------------------------
def _m(name, xs, **extra):
    m = make_metric(name, [float(x) for x in xs])
    return replace(m, extra=extra) if extra else m


def test_unchanged_work_makes_a_wall_clock_change_the_hosts():
    """The same work by name and a wall clock 4x slower: a regression the host caused, not gated."""
    from pytest_quantperf.verdicts.compare import judge_test

    by_name = {"aten.mm": 60.0, "aten.add": 12.0}
    work = replace(make_metric("ops_per_token", 72.0, kind="work"), extra={"by_name": by_name})
    base = {"metrics": {"latency_ms": _m("latency_ms", [100, 101, 99]).to_dict(), "ops_per_token": work.to_dict()}}
    cur = {"latency_ms": _m("latency_ms", [400, 401, 399]), "ops_per_token": work}
    v = {x.metric: x for x in judge_test("t::x", cur, base, same_hardware=True)}["latency_ms"]
    assert v.status == "regression" and not v.gating and [r.key for r in v.reasons] == ["work_unchanged"]
    # more work: the wall-clock regression is the code's and gates
    more = replace(work, value=90.0, extra={"by_name": {**by_name, "aten._local_scalar_dense": 18.0}})
    got = {x.metric: x for x in judge_test("t::x", {**cur, "ops_per_token": more}, base, same_hardware=True)}
    assert got["latency_ms"].gating and got["ops_per_token"].status == "regression"
    # the reference's unchanged work never covers the candidate's figures
    base["metrics"]["ref.ops_per_token"] = work.to_dict()
    got = {x.metric: x for x in judge_test("t::x", {**cur, "ops_per_token": more, "ref.ops_per_token": work},
                                           base, same_hardware=True)}
    assert got["latency_ms"].gating


def test_a_contended_host_is_a_reason_and_keeps_the_status():
    from pytest_quantperf.verdicts.compare import judge_test

    base = {"metrics": {"latency_ms": _m("latency_ms", [100.0, 101, 99]).to_dict()}}
    busy = _m("latency_ms", [390.0, 400, 410], host={"state": "contended", "summary": "got 48% of 2 cores"})
    v, = judge_test("t::x", {"latency_ms": busy}, base, same_hardware=True)
    assert v.status == "regression" and not v.gating and v.guard == "host contended: got 48% of 2 cores"
    assert v.message.endswith(f"[not gated: {v.guard}]") and v.to_dict()["guard"] == v.guard
    v, = judge_test("t::x", {"latency_ms": _m("latency_ms", [390.0, 400, 410])}, base, same_hardware=True)
    assert v.status == "regression" and v.gating and v.guard == ""
    # 20x slower: more than a contended host makes a run (5x), so the host does not explain it
    far = _m("latency_ms", [2000.0, 2010, 1990], host={"state": "contended", "summary": "x"})
    v, = judge_test("t::x", {"latency_ms": far}, base, same_hardware=True)
    assert v.status == "regression" and v.gating


def test_kernel_time_at_another_gpu_clock_is_not_gated():
    from pytest_quantperf.verdicts.compare import judge_test

    def gm(x, sm):
        return _m("gpu_ms_per_token", [x], gpu_clocks={"sm_clock_mhz": sm, "mem_clock_mhz": 3201})

    base = {"metrics": {"gpu_ms_per_token": gm(6.06, 1980).to_dict()}}
    v, = judge_test("t::x", {"gpu_ms_per_token": gm(6.60, 1755)}, base, same_hardware=True)
    assert v.status == "regression" and not v.gating and "SM clock 1980 → 1755 MHz" in v.message
    v, = judge_test("t::x", {"gpu_ms_per_token": gm(6.60, 1980)}, base, same_hardware=True)
    assert v.status == "regression" and v.gating  # +9% at the same clock: the code's


def test_warnings_are_the_figures_shown_worse_one_line_for_all():
    from pytest_quantperf.verdicts.compare import judge_test
    from pytest_quantperf.recorder import warning_lines

    names = ("latency_ms", "tpot_ms", "ttft_ms")
    base = {"metrics": {n: _m(n, [100.0, 100.1, 99.9]).to_dict() for n in names}}
    saves = [100.0, 100.4, 99.7, 100.2, 99.8]
    cur = {n: _m(n, [135.0, 135.1, 134.9]) for n in names}  # +35%: worse for sure, by how much unknown
    vs = judge_test("t::x", cur, base, same_hardware=True, same_code={n: saves for n in names})
    assert {v.status for v in vs} == {"inconclusive"} and all(v.warns for v in vs)
    line, = warning_lines(vs)
    assert line.startswith("inconclusive latency_ms +35.0%, tpot_ms +35.0%, ttft_ms +35.0%: worse")
    # the same beside a busy neighbour: a reason explains it, nothing is printed
    busy = {n: replace(m, extra={"host": {"state": "contended", "summary": "x"}}) for n, m in cur.items()}
    assert warning_lines(judge_test("t::x", busy, base, same_hardware=True, same_code={n: saves for n in names})) == []
    # an unchanged figure: inconclusive and silent
    quiet = judge_test("t::x", {n: _m(n, [100.5, 100.6, 100.4]) for n in names}, base, same_hardware=True)
    assert {v.status for v in quiet} == {"inconclusive"} and warning_lines(quiet) == []


# ---- budgets: the same rule, the limit as the band's edge -------------------------------
def test_budgets_judge_the_interval_of_this_run():
    from pytest_quantperf.verdicts.budgets import Budget, evaluate
    from pytest_quantperf.results import TestResult

    def run(*xs):
        return TestResult("t::x", metrics={"latency_ms": _m("latency_ms", xs),
                                           "footprint_mb": make_metric("footprint_mb", 200.0)})

    lat = [100.0, 101, 99, 100.5, 99.5, 100.2, 99.8, 100.1, 99.9, 100.3]
    got = {c.key: c for c in evaluate(Budget({"latency_ms": 150.0, "footprint_mb": 100.0}), run(*lat))}
    assert got["latency_ms"].status == "pass" and got["footprint_mb"].status == "breach"
    assert got["footprint_mb"].gating
    got = {c.key: c for c in evaluate(Budget({"latency_ms": 80.0}), run(*lat))}
    assert got["latency_ms"].status == "breach" and got["latency_ms"].gating
    # the limit inside the run's own scatter: inconclusive, a warning when the median is beyond it
    wide = [90.0, 95, 100, 105, 110, 92, 98, 102, 108, 101]
    c, = evaluate(Budget({"latency_ms": 100.0}), run(*wide))
    assert c.status == "inconclusive" and not c.gating and c.warns


def test_a_timing_budget_breached_on_a_contended_host_is_not_gated():
    from pytest_quantperf.verdicts.budgets import Budget, evaluate
    from pytest_quantperf.results import TestResult

    host = {"state": "contended", "summary": "0.50 of the cores held"}
    r = TestResult("t::x", metrics={"tokens_per_s": _m("tokens_per_s", [5.0], host=host),
                                    "footprint_mb": make_metric("footprint_mb", 200.0)})
    got = {c.key: c for c in evaluate(Budget({"tokens_per_s": 10.0, "footprint_mb": 100.0}), r)}
    assert got["tokens_per_s"].status == "breach" and not got["tokens_per_s"].gating
    assert "host contended" in got["tokens_per_s"].message
    assert got["footprint_mb"].status == "breach" and got["footprint_mb"].gating  # memory is not the host's
    # far beyond what contention explains (1e9 tok/s): the breach stands
    got = {c.key: c for c in evaluate(Budget({"tokens_per_s": 1e9}), r)}
    assert got["tokens_per_s"].status == "breach" and got["tokens_per_s"].gating
    r.metrics["tokens_per_s"] = _m("tokens_per_s", [5.0], host={"state": "quiet"})
    got = {c.key: c for c in evaluate(Budget({"tokens_per_s": 10.0}), r)}
    assert got["tokens_per_s"].status == "breach" and got["tokens_per_s"].gating


def test_a_work_regression_names_what_changed_and_the_wall_clock_says_the_work_moved():
    from pytest_quantperf.verdicts.compare import judge_test

    by = {"aten.mm": 600, "aten.add": 120}
    base_w = replace(make_metric("syncs_per_token", 0.0, kind="work"), extra={"by_name": {}, "tokens": 16})
    cur_w = replace(make_metric("syncs_per_token", 1.0, kind="work"),
                    extra={"by_name": {"aten._local_scalar_dense": 16}, "tokens": 16})
    ops_b = replace(make_metric("ops_per_token", 45.0, kind="work"), extra={"by_name": by, "tokens": 16})
    base = {"metrics": {"syncs_per_token": base_w.to_dict(), "ops_per_token": ops_b.to_dict(),
                        "latency_ms": _m("latency_ms", [100, 101, 99]).to_dict()}}
    got = {v.metric: v for v in judge_test("t::x", {"syncs_per_token": cur_w, "ops_per_token": ops_b,
                                                     "latency_ms": _m("latency_ms", [103, 104, 102])},
                                           base, same_hardware=True)}
    s = got["syncs_per_token"]
    assert s.status == "regression" and s.gating and "+1 aten._local_scalar_dense per token" in s.message
    lat = got["latency_ms"]
    assert "the work per token changed: syncs_per_token +1" in lat.message and not lat.reasons


def test_a_changed_figure_says_which_package_versions_moved_since_the_baseline():
    from pytest_quantperf.verdicts.compare import versions_moved

    base_env = {"hardware_id": "hw", "torch": "2.13.0", "bitsandbytes": "0.50.2", "transformers": "5.25.0"}
    cur_env = {**base_env, "bitsandbytes": "0.48.2"}
    assert versions_moved(base_env, cur_env) == "bitsandbytes 0.50.2 → 0.48.2"
    assert versions_moved(base_env, base_env) == "" and versions_moved(None, cur_env) == ""
    ops = make_metric("ops_per_token", 1720.0, kind="work")
    same = make_metric("py_calls_per_token", 15862.0, kind="work")
    base = {**_doc("hw", {"t::x": [ops, same]}), "env": base_env}
    cur = {**_doc("hw", {"t::x": [make_metric("ops_per_token", 2202.0, kind="work"), same]}), "env": cur_env}
    got = {v.metric: v for v in compare_runs(base, cur).verdicts}
    assert got["ops_per_token"].status == "regression"
    assert got["ops_per_token"].message.endswith("(since the baseline: bitsandbytes 0.50.2 → 0.48.2)")
    assert got["py_calls_per_token"].status == "pass" and "since the baseline" not in got["py_calls_per_token"].message
