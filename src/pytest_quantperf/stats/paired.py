"""Paired items: the same questions or tokens before and now, each item its own control.

Pairing removes the between-item variance, which is why a per-item comparison sees far smaller
changes than two bare accuracies do.  numpy and scipy are imported inside the functions.
"""
from __future__ import annotations

import math
from typing import Sequence

from .samples import _percentile_interval

__all__ = ["mcnemar_exact", "paired_bootstrap_diff_ci", "paired_p_value"]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test on the discordant pair counts.

    ``b``: items right before and wrong now; ``c``: wrong before and right now.  Under "no
    change" each discordant item is a fair coin, so this is the exact two-sided binomial test
    of ``b`` successes in ``b + c`` trials at 1/2 (equal to ``scipy.stats.binomtest``).
    """
    from scipy import stats as _st

    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0 or b == c:
        return 1.0
    # symmetric null: both tails are equally likely, so double the smaller tail
    return float(min(1.0, 2.0 * _st.binom.cdf(min(b, c), n, 0.5)))


def paired_bootstrap_diff_ci(x: Sequence[float], y: Sequence[float], conf: float = 0.95,
                             n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(y - x)`` over paired items, items resampled together.

    ``x`` is the baseline and ``y`` the current run, item by item (0/1 correctness per question,
    negative log-likelihood per token).  Pairing removes the between-item variance, which is
    why a per-item comparison sees far smaller changes than two bare accuracies do.
    """
    import numpy as np

    xs = np.asarray([float(v) for v in x], dtype=float)
    ys = np.asarray([float(v) for v in y], dtype=float)
    if xs.shape != ys.shape:
        raise ValueError(f"paired samples must have equal length, got {xs.size} and {ys.size}")
    if xs.size == 0:
        return (math.nan, math.nan)
    d = ys - xs
    rng = np.random.default_rng(seed)
    # in chunks: per-token data can hold many thousands of items
    rows = max(1, 2_000_000 // d.size)
    means = np.concatenate([d[rng.integers(0, d.size, size=(min(rows, n_boot - i), d.size))].mean(axis=1)
                            for i in range(0, n_boot, rows)])
    return _percentile_interval(means, conf)


def paired_p_value(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value that paired items changed: exact McNemar for 0/1 items, else Wilcoxon."""
    from scipy import stats as _st

    xs = [float(v) for v in x]
    ys = [float(v) for v in y]
    if len(xs) != len(ys):
        raise ValueError(f"paired samples must have equal length, got {len(xs)} and {len(ys)}")
    if not xs:
        return 1.0
    if all(v in (0.0, 1.0) for v in xs + ys):
        b = sum(1 for u, v in zip(xs, ys) if u == 1.0 and v == 0.0)
        c = sum(1 for u, v in zip(xs, ys) if u == 0.0 and v == 1.0)
        return mcnemar_exact(b, c)
    d = [v - u for u, v in zip(xs, ys)]
    if all(v == 0 for v in d):
        return 1.0
    p = float(_st.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p
