"""How often ``quantperf ab``'s rule raises a false alarm and how often it catches a change, with and
without the second look, on per-round noise of a given size.

Seven rounds decide only when every round moved one way (p = 1/128).  On the H200 runner the
per-round latency change of an unchanged head spread from -21% to +64% (log-ratio sd 0.26; one
trial, benchmarks/RESULTS-gpu.md), so one round in seven going the other way is the rule, and a +36%
slowdown was left inconclusive.  Each trial draws per-round log-ratios ``d_i ~ N(shift, sd)`` (the
load both runs of a round share cancels in the ratio, so only the rest is drawn), makes each
run's samples from them, and judges them with the plugin's own :func:`judge_rounds` and
:func:`second_look`: at ``--rounds`` rounds, then, where the figure is left undecided, at
``--max-rounds`` with what the first look left of alpha.  Prints, per noise and shift, the rate of
regressions without and with the second look, and how often the second look ran::

    python benchmarks/ab_looks.py --trials 400
"""
from __future__ import annotations

import argparse
import math
import random

from pytest_quantperf import ab
from pytest_quantperf.results import Metric


def _doc(v: float, rng: random.Random) -> dict:
    s = tuple(v * (1 + rng.gauss(0, 0.01)) for _ in range(5))
    return {"tests": {"t.py::x": {"metrics": {"step_ms": Metric("step_ms", sorted(s)[2], "ms", "lower", "timing",
                                                                  s).to_dict()}}}}


def trial(shift: float, sd: float, rounds: int, max_rounds: int, alpha: float,
          rng: random.Random) -> tuple[str, str, bool]:
    """(status at the first look, status after the second, whether it ran)."""
    base, head = [], []
    for _ in range(max_rounds):
        b = 100 * math.exp(rng.gauss(0, 0.2))
        base.append(_doc(b, rng))
        head.append(_doc(b * math.exp(rng.gauss(shift, sd)), rng))
    first = ab.judge_rounds(base[:rounds], head[:rounds], alpha=alpha)
    if not ab.undecided(first):
        return first[0].status, first[0].status, False
    a2 = ab.second_look_alpha(rounds, alpha)
    later = ab.judge_rounds(base, head, alpha=a2)
    return first[0].status, ab.second_look(first, later, rounds, a2, alpha)[0].status, True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--max-rounds", type=int, default=14)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--sds", default="0.10,0.15,0.26")
    ap.add_argument("--shifts", default="0,0.15,0.25,0.35")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    print(f"{a.trials} trials each; {a.rounds} rounds, a second look up to {a.max_rounds} at "
          f"p < {ab.second_look_alpha(a.rounds, a.alpha):.4f}; tolerance 10%")
    print(f"{'round sd':>8} {'change':>7} {'regression, 1 look':>19} {'with 2nd look':>14} {'2nd look ran':>13}")
    for sd in (float(x) for x in a.sds.split(",")):
        for shift in (float(x) for x in a.shifts.split(",")):
            rows = [trial(math.log1p(shift), sd, a.rounds, a.max_rounds, a.alpha, rng)
                    for _ in range(a.trials)]
            one = sum(r[0] == "regression" for r in rows) / a.trials
            two = sum(r[1] == "regression" for r in rows) / a.trials
            ran = sum(r[2] for r in rows) / a.trials
            print(f"{sd:8.2f} {shift * 100:+6.0f}% {one:19.3f} {two:14.3f} {ran:13.2f}", flush=True)


if __name__ == "__main__":
    main()
