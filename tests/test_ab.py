"""quantperf ab: the verdict rules on fixed numbers, then real A/B runs on a two-commit repository."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_quantperf import ab
from pytest_quantperf.measure import host
from pytest_quantperf.verdicts.compare import parse_tolerance
from pytest_quantperf.results import Metric

TOL10 = parse_tolerance("10%")

SUITE = '''\
import time


def test_step(quantperf):
    samples = []
    for _ in range(20):
        t = time.perf_counter()
        time.sleep(0.002)
{extra}        samples.append((time.perf_counter() - t) * 1000)
    quantperf.record("step_ms", samples, unit="ms")
'''
# Lean child runs: plugins this suite does not use stay off (the machine is shared).
PYTEST_ARGS = ["-q", "-p", "no:hypothesispytest", "-p", "no:xdist"]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _repo_at_a(root: Path) -> Path:
    """A git repository at ``root`` whose one commit, A, times a 2 ms sleep."""
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "ab@example.com")
    _git(root, "config", "user.name", "A B")
    (root / "test_speed.py").write_text(SUITE.format(extra=""))
    _git(root, "add", "test_speed.py")
    _git(root, "commit", "-q", "-m", "A: busy loop")
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Commit A times a 2 ms sleep; commit B (checked out) adds a 2 ms sleep per sample.

    Both sides sleep rather than spin: a busy loop beside other processes is preempted and reads
    in scheduler ticks (a 2 ms loop read 2.9 ms median with other processes holding 1.5 of 2
    cores, and one round of seven changed by only +4.7%), while a sleeping step wakes on time, so
    what ab sees is the code's change, not the neighbours'. 20 samples per run cost nothing next
    to a pytest start.
    """
    root = _repo_at_a(tmp_path_factory.mktemp("abrepo"))
    (root / "test_speed.py").write_text(SUITE.format(extra="        time.sleep(0.002)\n"))
    _git(root, "commit", "-q", "-am", "B: sleep per sample")
    return root


def _worktrees(root: Path) -> list[str]:
    return [ln for ln in _git(root, "worktree", "list", "--porcelain").splitlines() if ln.startswith("worktree ")]


# --------------------------------------------------------------------------- rules on fixed numbers

def _rounds(medians: list[float], spread: float = 0.02, n: int = 8, name: str = "step_ms",
            better: str = "lower", kind: str = "timing") -> list[Metric]:
    """One Metric per round: n samples spread evenly ±spread around each median."""
    out = []
    for m in medians:
        s = tuple(m * (1 + spread * (2 * i / (n - 1) - 1)) for i in range(n))
        out.append(Metric(name, m, "ms", better, kind, s))
    return out


def test_rounds_for_alpha_matches_the_exact_signed_rank_floor() -> None:
    assert ab.rounds_for_alpha(0.01) == 7  # 2**-7 = 0.0078 < 0.01, 2**-6 = 0.0156 is not
    assert ab.rounds_for_alpha(0.05) == 5
    with pytest.raises(ValueError):
        ab.rounds_for_alpha(0)


def test_stratified_rank_p_is_mann_whitney_for_one_round_and_uses_the_strata() -> None:
    from scipy import stats as st

    b = [5.1, 4.9, 5.3, 5.0, 5.6, 4.7]
    h = [5.5, 5.2, 6.1, 5.8, 5.4, 6.3, 5.05]
    ref = st.mannwhitneyu(h, b, alternative="greater", method="asymptotic", use_continuity=False).pvalue
    assert ab.stratified_rank_p([b], [h], "greater") == pytest.approx(ref, rel=1e-9)
    assert ab.stratified_rank_p([b], [h], "less") == pytest.approx(1 - ref, rel=1e-9)
    # a round-to-round shift (the machine got slower in round 2) does not blur the within-round ordering
    b2, h2 = [x * 1.5 for x in b], [x * 1.5 for x in h]
    strat = ab.stratified_rank_p([b, b2], [h, h2], "greater")
    pooled = st.mannwhitneyu(h + h2, b + b2, alternative="greater").pvalue
    assert strat < 0.01 < pooled
    assert ab.stratified_rank_p([[1.0, 1.0]], [[1.0, 1.0]]) == 1.0  # all tied: no information


def test_consistent_slowdown_with_few_rounds_is_a_regression_from_the_t_interval() -> None:
    base = _rounds([5.0, 5.3, 4.9])
    head = _rounds([6.5, 6.9, 6.4])
    v = ab.judge_metric("t::a", "step_ms", base, head, TOL10)
    assert v.status == "regression" and v.gating
    assert v.p_method == "t across rounds"
    # the change is the geometric mean of the per-round ratios
    expected = math.exp(sum(math.log(h / b) for b, h in [(5.0, 6.5), (5.3, 6.9), (4.9, 6.4)]) / 3) - 1
    assert v.change == pytest.approx(expected)
    assert v.ci[0] > 0.1 and len(v.round_changes) == 3
    # the same change in the good direction is an improvement
    assert ab.judge_metric("t::a", "step_ms", head, base, TOL10).status == "improvement"


def test_a_round_that_disagrees_makes_it_inconclusive() -> None:
    base = _rounds([5.0, 5.0, 5.0])
    head = _rounds([7.0, 7.0, 4.8])  # +40%, +40%, -4%: mean beyond tolerance, rounds disagree
    v = ab.judge_metric("t::a", "step_ms", base, head, TOL10)
    assert v.change > 0.1
    assert v.status == "inconclusive" and "more rounds would settle it" in v.message and not v.gating


def test_within_tolerance_passes_and_a_change_at_the_tolerance_is_not_a_regression() -> None:
    assert ab.judge_metric("t::a", "step_ms", _rounds([5.0, 5.1, 5.0]),
                           _rounds([5.2, 5.25, 5.2]), TOL10).status == "pass"
    # +8% to +12% by round: changed for sure (the old "changed at all" test failed it), but not shown
    # beyond the 10% tolerance: the gate's question, and ab's
    v = ab.judge_metric("t::a", "step_ms", _rounds([5.0] * 7), _rounds([5.4, 5.6, 5.45, 5.62, 5.5, 5.58, 5.52]), TOL10)
    assert v.status == "inconclusive" and not v.gating and v.change > 0.1


def test_seven_rounds_use_the_signed_rank_interval_across_rounds() -> None:
    base = _rounds([5.0] * 7, n=3)
    head = _rounds([6.0 + 0.01 * i for i in range(7)], n=3)
    v = ab.judge_metric("t::a", "step_ms", base, head, TOL10)
    assert v.p_method == "signed-rank" and v.status == "regression"
    # at 7 rounds and alpha 0.01 the exact interval is [smallest round, largest round]
    assert v.ci[0] == pytest.approx(min(v.round_changes)) and v.ci[1] == pytest.approx(max(v.round_changes))
    # at alpha 0.005 seven rounds are too few for the exact test (2**-7 > 0.005): t across rounds decides
    v = ab.judge_metric("t::a", "step_ms", base, head, TOL10, alpha=0.005)
    assert v.p_method == "t across rounds" and v.status == "regression"
    # one round the other way: the interval reaches below the tolerance
    head = _rounds([6.0] * 6 + [4.9], n=3)
    v = ab.judge_metric("t::a", "step_ms", base, head, TOL10)
    assert v.p_method == "signed-rank" and v.status == "inconclusive"


def test_direction_comes_from_the_metric() -> None:
    base = _rounds([40.0, 41.0, 40.5], name="tokens_per_s", better="higher")
    slow = _rounds([30.0, 31.0, 30.2], name="tokens_per_s", better="higher")
    assert ab.judge_metric("t::a", "tokens_per_s", base, slow, TOL10).status == "regression"
    assert ab.judge_metric("t::a", "tokens_per_s", slow, base, TOL10).status == "improvement"


def test_the_second_look_spends_only_what_the_first_left_of_alpha() -> None:
    from itertools import product

    from scipy import stats as st

    from pytest_quantperf import stats

    # the first look's real size is the largest exact signed-rank tail below alpha (checked against scipy)
    for n in (7, 9):
        ps = {st.wilcoxon([s * (i + 1) for i, s in enumerate(signs)], alternative="greater", method="exact").pvalue
              for signs in product((1, -1), repeat=n)}
        assert stats.signed_rank_size(n, 0.01) == pytest.approx(max(p for p in ps if p < 0.01))
    assert stats.signed_rank_size(7, 0.01) == 2 ** -7
    assert ab.second_look_alpha(7, 0.01) == pytest.approx(0.01 - 2 ** -7)  # 0.0022
    assert ab.second_look_alpha(6, 0.01) == 0.0  # the within-round test's p is continuous: nothing is left
    assert ab.rounds_for_alpha(ab.second_look_alpha(7, 0.01)) == 9


def _doc(metrics: dict[str, Metric]) -> dict:
    return {"tests": {"t.py::x": {"metrics": {k: m.to_dict() for k, m in metrics.items()}}}}


def test_a_figure_seven_rounds_leave_undecided_is_judged_again_over_all_rounds() -> None:
    # +20% in six rounds, one round the other way: seven rounds cannot decide
    first_b, first_h = _rounds([5.0] * 7, n=3), _rounds([6.0] * 6 + [4.9], n=3)
    mem = Metric("vram_mb", 100.0, "MiB", "lower", "memory")
    fast = _rounds([5.0] * 14, n=3, name="other_ms")
    base_docs = [_doc({"step_ms": b, "vram_mb": mem, "other_ms": o}) for b, o in zip(first_b + _rounds([5.0] * 7, n=3), fast)]
    more_h = _rounds([6.5 + 0.01 * i for i in range(7)], n=3)  # +30%: the later rounds leave no doubt
    head_docs = [_doc({"step_ms": h, "vram_mb": mem, "other_ms": o}) for h, o in zip(first_h + more_h, fast)]
    first = ab.judge_rounds(base_docs[:7], head_docs[:7])
    got = {v.metric: v for v in first}
    assert got["step_ms"].status == "inconclusive" and got["other_ms"].status == "pass"
    assert [v.metric for v in ab.undecided(first)] == ["step_ms"]  # the memory figure is never undecided here
    a2 = ab.second_look_alpha(7, 0.01)
    later = ab.judge_rounds(base_docs, head_docs, alpha=a2)
    merged = {v.metric: v for v in ab.second_look(first, later, 7, a2, 0.01)}
    step = merged["step_ms"]
    assert step.status == "regression" and step.rounds == 14 and step.ci[0] > 0.1
    assert "second look: 7 rounds left it inconclusive" in step.message and "keep alpha 0.01" in step.message
    assert merged["other_ms"] is got["other_ms"] and merged["vram_mb"] is got["vram_mb"]  # decided once
    # four of the fourteen rounds the other way: the second look cannot tell it apart either
    worse_h = _rounds([6.0] * 4 + [4.9] * 3, n=3)
    later = ab.judge_rounds(base_docs, [_doc({"step_ms": h, "vram_mb": mem, "other_ms": o})
                                        for h, o in zip(first_h + worse_h, fast)], alpha=a2)
    assert {v.metric: v for v in ab.second_look(first, later, 7, a2, 0.01)}["step_ms"].status == "inconclusive"


def test_deterministic_kinds_decide_from_rounds_that_agree() -> None:
    def mem(values: list[float]) -> list[Metric]:
        return [Metric("vram_mb", v, "MiB", "lower", "memory") for v in values]

    tol = parse_tolerance("2%")
    assert ab.judge_metric("t::a", "vram_mb", mem([100, 100, 100]), mem([110, 110, 110]), tol).status == "regression"
    assert ab.judge_metric("t::a", "vram_mb", mem([100, 100, 100]), mem([110, 100, 110]), tol).status == "inconclusive"
    assert ab.judge_metric("t::a", "vram_mb", mem([100, 100, 100]), mem([101, 100, 100]), tol).status == "pass"


def test_judge_rounds_pairs_documents_and_names_new_and_gone() -> None:
    def doc(metrics: dict[str, Metric]) -> dict:
        return {"tests": {"t.py::x": {"metrics": {k: m.to_dict() for k, m in metrics.items()}}}}

    b = _rounds([5.0, 5.1, 5.0])
    h = _rounds([6.5, 6.6, 6.4])
    old = Metric("old_ms", 1.0, "ms", "lower", "timing", (1.0, 1.1, 0.9))
    new = Metric("new_ms", 1.0, "ms", "lower", "timing", (1.0, 1.1, 0.9))
    base_docs = [doc({"step_ms": m, "old_ms": old}) for m in b]
    head_docs = [doc({"step_ms": m, "new_ms": new}) for m in h]
    got = {v.metric: v for v in ab.judge_rounds(base_docs, head_docs)}
    assert got["step_ms"].status == "regression" and got["step_ms"].rounds == 3
    assert got["new_ms"].status == "new" and got["old_ms"].status == "gone"
    table = ab.format_table(list(got.values()))
    assert "REGRESSION" in table and "t.py::x" in table
    json.dumps([v.to_dict() for v in got.values()])  # JSON-able


def test_contended_rounds_are_named_in_timing_verdicts_only() -> None:
    def doc(metrics: dict[str, Metric]) -> dict:
        return {"tests": {"t.py::x": {"metrics": {k: m.to_dict() for k, m in metrics.items()}}}}

    b, h = _rounds([5.0, 5.1, 5.0]), _rounds([6.5, 6.6, 6.4])
    mem = Metric("vram_mb", 100.0, "MiB", "lower", "memory")
    got = {v.metric: v for v in ab.judge_rounds([doc({"step_ms": m, "vram_mb": mem}) for m in b],
                                                [doc({"step_ms": m, "vram_mb": mem}) for m in h],
                                                too_busy=[2], contended=[1, 2])}
    step = got["step_ms"]
    # the pairing keeps every round: load on both runs of a round cancels in its ratio
    assert step.status == "regression" and step.rounds == 3
    assert "host too busy to measure in round 2; host contended in round 1)" in step.message
    assert "host" not in got["vram_mb"].message  # memory does not depend on the neighbours
    quiet = {v.metric: v for v in ab.judge_rounds([doc({"step_ms": m}) for m in b], [doc({"step_ms": m}) for m in h])}
    assert "host" not in quiet["step_ms"].message


def test_host_figures_of_a_run_are_read_when_present_and_absent_is_fine() -> None:
    assert ab.measured_host({"tests": {"t::a": {"metrics": {"step_ms": {"value": 1.0}}}}}) is None
    assert ab.measured_host({"tests": {}}) is None
    run_doc = {"tests": {
        "t::a": {"metrics": {"host_contention": {"value": 0.5, "samples": [0.1, 0.5, 0.8]},
                             "host_rss_mb": {"value": 900.0},
                             "latency_ms": {"value": 10.0, "extra": {"host_cpu_share": 0.9, "note": "x"}}}},
        "t::b": {"metrics": {"host_contention": {"value": 0.05}}}}}
    m = ab.measured_host(run_doc)
    assert m == {"host_contention": 0.3, "host_cpu_share": 0.9, "state": host.TOO_BUSY}
    runs = [{"round": 1, "side": "base", "wall_s": 3.0,
             "host": {"state": "quiet", "cpu_share": 0.9, "others_cores": 0.1, "contention": 0.05},
             "host_measured": m},
            {"round": 1, "side": "head", "wall_s": 3.1, "host": {"state": "contended", "contention": 0.3}},
            {"round": 2, "side": "head", "wall_s": 3.1}]
    assert [ab.run_host_state(r) for r in runs] == [host.TOO_BUSY, host.CONTENDED, None]
    table = ab.format_host_table(runs).splitlines()
    assert table[0].split() == ["round", "side", "wall", "s", "cpu", "share", "others", "contention", "state",
                                "in-run"]
    assert table[2].split() == ["1", "base", "3.0", "0.90", "0.10", "0.05", "quiet", "too_busy", "(0.30)"]
    assert table[4].split() == ["2", "head", "3.1", "-", "-", "-", "unknown", "-"]


def test_default_rounds_are_enough_for_a_verdict_across_rounds() -> None:
    from pytest_quantperf.cli import ab as ab_cli

    assert ab_cli.build_parser().parse_args(["--base", "x"]).rounds is None  # main takes rounds_for_alpha(--alpha)
    base, head = _rounds([5.0] * 7, n=3), _rounds([5.9, 6.0, 5.8, 6.1, 5.9, 6.0, 6.2], n=3)
    v = ab.judge_metric("t::a", "step_ms", base, head, TOL10)
    assert v.status == "regression" and v.p_method == "signed-rank"


def test_the_quantperf_command_delegates_to_ab(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_quantperf.cli import main as cli_main

    assert cli_main(["ab", "--help"]) == 0
    assert "2 x ROUNDS pytest runs" in capsys.readouterr().out


# --------------------------------------------------------------------------- real runs

@pytest.mark.slow
def test_ab_flags_a_sleep_per_sample(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.chdir(repo)
    out = tmp_path / "ab.json"
    # seven rounds: the fewest at which the exact interval across rounds can decide at alpha 0.01 (a
    # regression needs every round beyond the tolerance); three rounds' t interval is too wide
    rc = ab.main(["--base", "HEAD~1", "--rounds", "7", "--max-rounds", "7", "--json", str(out), "--", *PYTEST_ARGS])
    cap = capsys.readouterr()
    assert rc == 1, cap.out + cap.err
    assert "step_ms" in cap.out and "REGRESSION" in cap.out
    doc = json.loads(out.read_text())
    (v,) = [v for v in doc["verdicts"] if v["metric"] == "step_ms"]
    assert v["nodeid"] == "test_speed.py::test_step"
    assert v["status"] == "regression" and v["change"] > 0.1 and v["rounds"] == 7
    assert all(c > 0.1 for c in v["round_changes"])
    # interleaved: base first in odd rounds, head first in even ones
    assert [(r["round"], r["side"]) for r in doc["runs"]] == [
        (k, side) for k in range(1, 8) for side in (("base", "head") if k % 2 else ("head", "base"))]
    assert doc["base"]["commit"] == _git(repo, "rev-parse", "HEAD~1").strip()
    assert len(_worktrees(repo)) == 1  # the base worktree is gone
    # every run says what it had of the machine, in the JSON and in the printed table
    for r in doc["runs"]:
        h = r["host"]
        assert h["state"] in host.STATES and 0 <= h["contention"] <= 1 and h["cpu_s"] > 0, r
        assert h["wall_s"] == pytest.approx(r["wall_s"], abs=1e-3)
    assert "host load per run:" in cap.out and "contention" in cap.out
    assert sum(doc["host"]["counts"].values()) == 14


@pytest.mark.slow
def test_ab_passes_an_a_a_pair(repo: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(repo)
    rc = ab.main(["--base", "HEAD", "--rounds", "2", "--", *PYTEST_ARGS])
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    assert "step_ms" in cap.out and "REGRESSION" not in cap.out
    assert len(_worktrees(repo)) == 1


def test_usage_errors_exit_2_and_say_what_to_do(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.chdir(plain)
    assert ab.main(["--base", "HEAD~1"]) == 2
    assert "not inside a git repository" in capsys.readouterr().err

    monkeypatch.chdir(repo)
    assert ab.main(["--base", "no-such-branch"]) == 2
    assert "names no commit" in capsys.readouterr().err
    assert ab.main(["--base", "HEAD", "--tolerance", "step_ms=fast"]) == 2
    assert "--tolerance" in capsys.readouterr().err
    assert ab.main(["--rounds", "3"]) == 2  # --base is required (argparse prints the usage)
    capsys.readouterr()

    # a second look that cannot work is refused before any run
    assert ab.main(["--base", "HEAD", "--rounds", "3", "--max-rounds", "6"]) == 2
    assert "needs --rounds of at least 7" in capsys.readouterr().err
    assert ab.main(["--base", "HEAD", "--rounds", "7", "--max-rounds", "8"]) == 2
    assert "--max-rounds 9 or more" in capsys.readouterr().err
    assert ab.main(["--base", "HEAD", "--rounds", "7", "--max-rounds", "5"]) == 2
    assert "below --rounds" in capsys.readouterr().err

    # pytest cannot run: the error shows the tail of its output, and the worktree is removed; without
    # --rounds the plan is the 7 rounds a verdict across rounds needs at alpha 0.01
    assert ab.main(["--base", "HEAD", "--", *PYTEST_ARGS, "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "pytest could not run the suite on the base side" in err and "--no-such-option" in err
    assert "7 rounds, 14 pytest runs (up to 14 rounds if a timing figure is left undecided)" in err
    assert len(_worktrees(repo)) == 1


@pytest.mark.slow
def test_rounds_go_on_in_the_same_alternation_while_a_figure_is_undecided(repo: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    msgs: list[str] = []
    seen: list[int] = []

    def extend(base_docs: list, head_docs: list) -> str | None:
        seen.append(len(base_docs))
        return "step_ms +0.0%"

    base_docs, head_docs, info = ab.run_ab("HEAD", PYTEST_ARGS, rounds=1, max_rounds=3, extend=extend,
                                           echo=msgs.append)
    assert seen == [1] and info["first_rounds"] == 1 and info["rounds"] == 3
    assert len(base_docs) == len(head_docs) == 3
    assert [(r["round"], r["side"]) for r in info["runs"]] == [
        (1, "base"), (1, "head"), (2, "head"), (2, "base"), (3, "base"), (3, "head")]
    assert any("1 round left step_ms +0.0% undecided; 2 more rounds, 3 in all" in m for m in msgs), msgs
    # nothing undecided: the first rounds are all
    _, _, info = ab.run_ab("HEAD", PYTEST_ARGS, rounds=1, max_rounds=3, extend=lambda b, h: None, echo=msgs.append)
    assert info["rounds"] == 1


FLIP = '''\
import pathlib
import time


def _busy(ms):
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


def test_step(quantperf):
    # the head alternates between 2.5x slower and 2x faster than the base, run by run
    count = pathlib.Path(__file__).with_name("count.txt")
    n = int(count.read_text()) if count.exists() else 0
    count.write_text(str(n + 1))
    samples = []
    for _ in range(20):
        t = time.perf_counter()
        _busy(5 if n % 2 == 0 else 1)
        samples.append((time.perf_counter() - t) * 1000)
    quantperf.record("step_ms", samples, unit="ms")
'''


@pytest.mark.slow
def test_seven_rounds_that_disagree_get_a_second_look(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "flip").mkdir()
    root = _repo_at_a(tmp_path / "flip")
    (root / "test_speed.py").write_text(FLIP)  # the working tree: uncommitted
    monkeypatch.chdir(root)
    out = tmp_path / "ab.json"
    rc = ab.main(["--base", "HEAD", "--rounds", "7", "--max-rounds", "9", "--json", str(out), "--", *PYTEST_ARGS])
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    assert "7 rounds left step_ms" in cap.err and "2 more rounds, 9 in all" in cap.err
    doc = json.loads(out.read_text())
    assert (doc["first_rounds"], doc["rounds"], doc["max_rounds"]) == (7, 9, 9)
    assert doc["second_look_alpha"] == pytest.approx(0.01 - 2 ** -7)
    assert len(doc["runs"]) == 18 and [r["side"] for r in doc["runs"][-4:]] == ["head", "base", "base", "head"]
    (v,) = [v for v in doc["verdicts"] if v["metric"] == "step_ms"]
    assert v["status"] == "inconclusive" and v["rounds"] == 9 and "second look: 7 rounds left it" in v["message"]
    assert "7 rounds, then 2 more for the undecided figures at p < 0.0022" in cap.out


def test_keep_worktree_leaves_it_for_inspection(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    msgs: list[str] = []
    try:
        # a run that fails early still keeps the worktree when asked: that is when it is wanted
        with pytest.raises(ab.ABError, match="could not run"):
            ab.run_ab("HEAD~1", [*PYTEST_ARGS, "--no-such-option"], rounds=1, keep_worktree=True, echo=msgs.append)
        assert len(_worktrees(repo)) == 2
        wt = Path(_worktrees(repo)[1].split(" ", 1)[1])
        assert (wt / "test_speed.py").read_text() == SUITE.format(extra="")  # commit A checked out
        assert any("kept at" in m for m in msgs)
    finally:
        for line in _worktrees(repo)[1:]:
            path = line.split(" ", 1)[1]
            _git(repo, "worktree", "remove", "--force", path)
            shutil.rmtree(Path(path).parent, ignore_errors=True)
        _git(repo, "worktree", "prune")
    assert not wt.exists()


ENV_SUITE = '''\
import os
import time


def test_step(quantperf):
    samples = []
    for _ in range(20):
        t = time.perf_counter()
        if os.environ.get("QP_SLOW_ENV"):
            time.sleep(0.004)
        time.sleep(0.001)
        samples.append((time.perf_counter() - t) * 1000)
    quantperf.record("step_ms", samples, unit="ms")
'''


@pytest.mark.slow
def test_base_python_measures_two_environments_of_one_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """--base HEAD --base-python: the same code in two environments; the slower one is the base here."""
    import os
    import sys

    root = tmp_path / "envrepo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "ab@example.com")
    _git(root, "config", "user.name", "A B")
    (root / "test_env.py").write_text(ENV_SUITE)
    _git(root, "add", "test_env.py")
    _git(root, "commit", "-q", "-m", "one commit")
    slow_python = tmp_path / "slow-python"  # another environment: here the same interpreter with a slower setting
    slow_python.write_text(f"#!/bin/sh\nQP_SLOW_ENV=1 exec {sys.executable} \"$@\"\n")
    slow_python.chmod(0o755)
    monkeypatch.chdir(root)
    out = tmp_path / "ab.json"
    rc = ab.main(["--base", "HEAD", "--base-python", str(slow_python), "--rounds", "7", "--max-rounds", "7",
                  "--json", str(out), "--", *PYTEST_ARGS])
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    doc = json.loads(out.read_text())
    (v,) = [v for v in doc["verdicts"] if v["metric"] == "step_ms"]
    assert v["status"] == "improvement" and v["change"] < -0.5  # the working environment is faster
    assert doc["python"] == {"base": str(slow_python), "head": sys.executable}
    # a base interpreter that does not exist is a usage error, not a traceback
    assert ab.main(["--base", "HEAD", "--base-python", str(tmp_path / "nope"), "--", *PYTEST_ARGS]) == 2
    assert "--base-python" in capsys.readouterr().err and os.path.exists(root)
