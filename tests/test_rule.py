"""The one verdict rule, on its own: an interval held against the tolerance band."""
from __future__ import annotations

import math

from hypothesis import given, settings, strategies as hs

from pytest_quantperf.verdicts.rule import Band, band_for, decide

finite = hs.floats(min_value=-5, max_value=5, allow_nan=False)
width = hs.floats(min_value=0, max_value=3, allow_nan=False)
tol = hs.floats(min_value=0.001, max_value=0.9, allow_nan=False)


@given(tol, hs.floats(min_value=1e-6, max_value=5), width, width)
@settings(max_examples=500, deadline=None)
def test_a_worse_change_beyond_tolerance_is_never_a_pass(t, excess, below, above):
    band = band_for(t, True, True)
    point = band.worse + excess
    d = decide(point, point - below, point + above, band)
    assert d.status in ("regression", "inconclusive")


@given(tol, width, hs.booleans())
@settings(max_examples=500, deadline=None)
def test_an_unchanged_figure_never_regresses_nor_improves(t, half, lower_is_better):
    band = band_for(t, True, lower_is_better)
    d = decide(0.0, -half, half, band)
    assert d.status in ("pass", "inconclusive") and not d.shown_worse


def test_the_four_statuses():
    band = Band(0.1, 0.1)
    assert decide(0.3, 0.2, 0.4, band).status == "regression"
    assert decide(-0.3, -0.4, -0.2, band).status == "improvement"
    assert decide(0.0, -0.05, 0.05, band).status == "pass"
    assert decide(0.1, 0.0, 0.2, band).status == "inconclusive"
    shown = decide(0.15, 0.05, 0.25, band)
    assert shown.status == "inconclusive" and shown.shown_worse
    assert math.isclose(shown.decides_beyond, 0.2)


def test_a_relative_band_is_exactly_the_values_within_the_tolerance():
    lower = band_for(0.1, True, True)
    assert math.isclose(math.exp(lower.worse), 1.1) and math.isclose(math.exp(-lower.better), 0.9)
    higher = band_for(0.1, True, False)  # tokens/s: worse is down
    assert math.isclose(math.exp(-higher.worse), 0.9) and math.isclose(math.exp(higher.better), 1.1)
