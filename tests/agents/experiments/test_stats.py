"""``agents.experiments.stats``: mean ± sample std and paired t-intervals, hand-computed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.experiments.stats import Paired, mean_std, paired

# Student-t quantiles written out (two-sided 95% and 99% intervals; from any t table).
T975_DOF1 = 12.706204736174694
T975_DOF2 = 4.302652729749462
T975_DOF3 = 3.1824463052837078
T995_DOF2 = 9.924843200918287


def test_mean_std_is_the_sample_std() -> None:
    # Deviations ±1.5, ±0.5: sum of squares 5, divided by n - 1 = 3.
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5.0 / 3.0), rel=1e-12)


def test_mean_std_of_one_value_has_nan_std_and_of_none_is_nan() -> None:
    mean, std = mean_std([7.25])
    assert mean == 7.25 and math.isnan(std)
    mean, std = mean_std([])
    assert math.isnan(mean) and math.isnan(std)


def test_paired_three_differences() -> None:
    d = paired([1.0, 2.0, 3.0])
    half = T975_DOF2 * 1.0 / math.sqrt(3.0)  # std 1
    assert (d.mean, d.std, d.wins, d.n) == (2.0, 1.0, 0, 3)
    assert d.low == pytest.approx(2.0 - half, rel=1e-9)
    assert d.high == pytest.approx(2.0 + half, rel=1e-9)
    assert d.low == pytest.approx(-0.4841387, abs=1e-6)


def test_paired_four_differences_counts_strictly_negative_wins() -> None:
    # Mean -0.5; deviations -0.5, -2.5, 0.5, 2.5: sum of squares 13, std sqrt(13 / 3).
    d = paired([-1.0, -3.0, 0.0, 2.0])
    std = math.sqrt(13.0 / 3.0)
    half = T975_DOF3 * std / 2.0
    assert d.mean == -0.5
    assert d.std == pytest.approx(std, rel=1e-12)
    assert (d.low, d.high) == pytest.approx((-0.5 - half, -0.5 + half), rel=1e-9)
    assert d.wins == 2  # a zero difference is a tie, not a win
    assert d.n == 4


def test_paired_level_sets_the_quantile() -> None:
    d = paired([1.0, 2.0, 3.0], level=0.99)
    half = T995_DOF2 / math.sqrt(3.0)
    assert (d.low, d.high) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-9)


def test_paired_two_differences_use_one_degree_of_freedom() -> None:
    d = paired([0.5, 1.0])
    half = T975_DOF1 * (math.sqrt(0.125) / math.sqrt(2.0))  # std sqrt(0.125): half = t * 0.25
    assert half == pytest.approx(T975_DOF1 * 0.25)
    assert (d.low, d.high) == pytest.approx((0.75 - half, 0.75 + half), rel=1e-9)


def test_paired_one_difference_has_no_interval() -> None:
    d = paired([-0.3])
    assert d.mean == -0.3 and d.wins == 1 and d.n == 1
    assert math.isnan(d.std) and math.isnan(d.low) and math.isnan(d.high)


def test_paired_of_nothing() -> None:
    d = paired([])
    assert (d.wins, d.n) == (0, 0)
    assert all(math.isnan(x) for x in (d.mean, d.std, d.low, d.high))


def test_paired_of_equal_differences_is_a_point_interval() -> None:
    d = paired([-2.0, -2.0, -2.0])
    assert d == Paired(-2.0, 0.0, -2.0, -2.0, 3, 3)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=2, max_size=12)
positive = st.floats(min_value=0.1, max_value=10.0)


@settings(deadline=None, max_examples=60)
@given(samples)
def test_interval_contains_the_mean(diffs: list[float]) -> None:
    d = paired(diffs)
    tol = 1e-9 * (1.0 + abs(d.mean))
    assert d.low - tol <= d.mean <= d.high + tol
    assert d.high - d.mean == pytest.approx(d.mean - d.low, abs=1e-6)


@settings(deadline=None, max_examples=60)
@given(samples, positive)
def test_scaling_scales_mean_std_and_interval(diffs: list[float], c: float) -> None:
    a, b = paired(diffs), paired([c * x for x in diffs])
    assert b.mean == pytest.approx(c * a.mean, rel=1e-9, abs=1e-9)
    assert b.std == pytest.approx(c * a.std, rel=1e-6, abs=1e-9)
    assert b.high - b.low == pytest.approx(c * (a.high - a.low), rel=1e-6, abs=1e-9)
    assert b.wins == a.wins


@settings(deadline=None, max_examples=60)
@given(samples, finite)
def test_shifting_moves_the_mean_only(diffs: list[float], shift: float) -> None:
    a, b = paired(diffs), paired([x + shift for x in diffs])
    assert b.mean == pytest.approx(a.mean + shift, abs=1e-9)
    assert b.std == pytest.approx(a.std, abs=1e-6)
    assert b.high - b.low == pytest.approx(a.high - a.low, abs=1e-5)


@settings(deadline=None, max_examples=60)
@given(samples)
def test_higher_level_widens_the_interval(diffs: list[float]) -> None:
    narrow, wide = paired(diffs, level=0.9), paired(diffs, level=0.99)
    assert wide.high - wide.low >= narrow.high - narrow.low


@settings(deadline=None, max_examples=60)
@given(samples)
def test_wins_of_the_negated_differences_are_the_losses(diffs: list[float]) -> None:
    ties = sum(x == 0 for x in diffs)
    assert paired(diffs).wins + paired([-x for x in diffs]).wins + ties == len(diffs)


@settings(deadline=None, max_examples=40)
@given(samples, st.randoms(use_true_random=False))
def test_order_of_the_pairs_does_not_matter(diffs: list[float], rnd) -> None:
    shuffled = list(diffs)
    rnd.shuffle(shuffled)
    a, b = paired(diffs), paired(shuffled)
    assert (a.wins, a.n) == (b.wins, b.n)
    assert (b.mean, b.std, b.low, b.high) == pytest.approx((a.mean, a.std, a.low, a.high), abs=1e-9)
