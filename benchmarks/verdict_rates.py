"""What the one verdict rule says, how often, at a given true change: the plugin's own judge on
simulated runs.

Each trial draws whole runs: a run's figure is ``level · exp(N(0, spread))`` (the host's
run-to-run drift, log-normal) and its samples scatter around it by ``--within`` (CV). The
baseline is saved 1, 3 or 5 times from the same code (the saves share no host state), the
current run carries the true change, and :func:`pytest_quantperf.verdicts.compare.compare_metric` judges
it exactly as a test's verdict is taken (the catalogue's prior for ``latency_ms``, tolerance 10%,
alpha 0.01). ``quantperf ab`` is judged by :func:`pytest_quantperf.ab.verdict.judge_rounds` on
``--rounds`` paired rounds whose per-round log-ratio scatters by ``--round-sd``, with the second
look up to 14 rounds as the command takes it.

Prints P(regression) / P(inconclusive) / P(pass) (and how often an inconclusive one is printed as a
warning) per true change, for each spread::

    python benchmarks/verdict_rates.py --trials 2000 --spreads 0.088,0.15
"""
from __future__ import annotations

import argparse
import math
import random
from collections import Counter

from pytest_quantperf import stats
from pytest_quantperf.ab.verdict import judge_rounds, second_look, undecided
from pytest_quantperf.verdicts.compare import DEFAULT_TOLERANCES, compare_metric
from pytest_quantperf.results import make_metric

NAME = "latency_ms"


def _run(level: float, rng: random.Random, spread: float, within: float, n: int) -> list[float]:
    centre = level * math.exp(rng.gauss(0, spread))
    return [centre * (1 + rng.gauss(0, within)) for _ in range(n)]


def gate_trial(change: float, saves: int, spread: float, within: float, n: int, rng: random.Random):
    runs = [_run(100.0, rng, spread, within, n) for _ in range(saves)]
    base = make_metric(NAME, runs[-1])
    same_code = [make_metric(NAME, r).value for r in runs] if saves > 1 else ()
    cur = make_metric(NAME, _run(100.0 * (1 + change), rng, spread, within, n))
    return compare_metric("t.py::x", NAME, base, cur, DEFAULT_TOLERANCES[NAME], same_hardware=True,
                          same_code=same_code)


def _doc(values: list[float]) -> dict:
    return {"tests": {"t.py::x": {"metrics": {NAME: make_metric(NAME, values).to_dict()}}}}


def ab_trial(change: float, round_sd: float, within: float, n: int, rounds: int, max_rounds: int,
             rng: random.Random):
    base, head = [], []
    for _ in range(max_rounds):
        level = 100.0 * math.exp(rng.gauss(0, 0.2))  # load both runs of a round share cancels in the ratio
        base.append(_doc(_run(level, rng, 0.0, within, n)))
        head.append(_doc(_run(level * (1 + change) * math.exp(rng.gauss(0, round_sd)), rng, 0.0, within, n)))
    alpha = 0.01
    first = judge_rounds(base[:rounds], head[:rounds], alpha=alpha)
    if max_rounds > rounds and undecided(first):
        later_alpha = stats.second_look_alpha(rounds, alpha)
        later = judge_rounds(base, head, alpha=later_alpha)
        first = second_look(first, later, rounds, later_alpha, alpha)
    return first[0]


def _row(label: str, vs: list) -> str:
    c = Counter(v.status for v in vs)
    warn = sum(1 for v in vs if getattr(v, "warns", False))
    t = len(vs)
    return (f"{label:<28} {c['regression'] / t:7.3f} {c['inconclusive'] / t:7.3f} {c['pass'] / t:7.3f}"
            f" {c['improvement'] / t:7.3f} {warn / t:7.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--spreads", default="0.088,0.15", help="run-to-run log-sd between processes")
    ap.add_argument("--round-sds", default="0.10,0.26", help="per-round log-ratio sd for quantperf ab")
    ap.add_argument("--changes", default="0,0.15,0.25,0.5,1.0")
    ap.add_argument("--within", type=float, default=0.03, help="CV of the samples inside one run")
    ap.add_argument("--samples", type=int, default=5, help="timed samples per run")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    changes = [float(x) for x in a.changes.split(",")]
    head = f"{'':<28} {'P(reg)':>7} {'P(inc)':>7} {'P(pass)':>7} {'P(impr)':>7} {'P(warn)':>7}"
    print(f"# verdict rates, {a.trials} trials per row, tolerance {DEFAULT_TOLERANCES[NAME].text}, "
          f"{a.samples} samples per run at CV {a.within:g}")
    for spread in (float(x) for x in a.spreads.split(",")):
        print(f"\n## baseline gate, run-to-run spread {spread:g}\n{head}")
        for saves in (1, 3, 5):
            for ch in changes:
                vs = [gate_trial(ch, saves, spread, a.within, a.samples, rng) for _ in range(a.trials)]
                print(_row(f"{saves} save(s), change {ch:+.0%}", vs))
    for sd in (float(x) for x in a.round_sds.split(",")):
        print(f"\n## quantperf ab, 7 rounds then up to 14, per-round sd {sd:g}\n{head}")
        for ch in changes:
            vs = [ab_trial(ch, sd, a.within, a.samples, 7, 14, rng) for _ in range(max(a.trials // 4, 50))]
            print(_row(f"ab, change {ch:+.0%}", vs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
