"""``agents.experiments.rl_stats``: rliable's estimators, pinned on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from agents.experiments.rl_stats import (
    Interval,
    bootstrap,
    improvement_interval,
    iqm,
    iqm_interval,
    mean_batch,
    mean_interval,
    performance_profile,
    probability_of_improvement,
    profile_interval,
    stratified_mean,
)

# ---------------------------------------------------------------------------------------------
# Point estimates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strata", "expected"),
    [
        # n = 5: floor(5 / 4) = 1 cut from each end of 0, 1, 2, 3, 100: mean of 1, 2, 3.
        ([[0.0, 1.0, 2.0, 3.0, 100.0]], 2.0),
        # n = 8: 2 cut from each end: mean of 3, 4, 5, 6 (the 80 is trimmed, not averaged).
        ([[80.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0]], 4.5),
        # n = 3: nothing is cut (scipy's trim_mean convention): the mean 13 / 3.
        ([[1.0, 2.0, 10.0]], 13.0 / 3.0),
        # Strata are pooled: 0, 1, 2, 3, 10, 100 (n = 6, one cut each end): mean of 1, 2, 3, 10.
        ([[0.0, 10.0], [1.0, 2.0, 3.0], [100.0]], 4.0),
    ],
)
def test_iqm_hand_values(strata: list[list[float]], expected: float) -> None:
    assert iqm(strata) == pytest.approx(expected, rel=1e-12)


def test_mean_is_the_mean_of_stratum_means() -> None:
    # (5 + 2 + 100) / 3, not the pooled mean 116 / 6: every stratum weighs the same (rliable).
    assert stratified_mean([[0.0, 10.0], [1.0, 2.0, 3.0], [100.0]]) == pytest.approx(107.0 / 3.0)


def test_probability_of_improvement_hand_value_lower_is_better() -> None:
    # Stratum 1: pairs (1,2) win, (1,3) win, (2,2) tie ½, (2,3) win -> 3.5 / 4; stratum 2: a tie.
    x, y = [[1.0, 2.0], [5.0]], [[2.0, 3.0], [5.0]]
    assert probability_of_improvement(x, y, higher_is_better=False) == pytest.approx(
        (0.875 + 0.5) / 2
    )
    # Read the other way round: stratum 1 only the tie counts (0.5 / 4).
    assert probability_of_improvement(x, y, higher_is_better=True) == pytest.approx(
        (0.125 + 0.5) / 2
    )


def test_probability_of_improvement_against_one_reference_run_is_the_win_fraction() -> None:
    # Three agent seeds per instance against a deterministic baseline: 2/3 and 1/3 win.
    x, y = [[1.0, 2.0, 9.0], [4.0, 7.0, 8.0]], [[5.0], [5.0]]
    assert probability_of_improvement(x, y, higher_is_better=False) == pytest.approx(0.5)


def test_performance_profile_counts_runs_strictly_better_than_tau() -> None:
    strata, taus = [[1.0, 2.0], [3.0]], [0.5, 1.0, 1.5, 3.0, 3.5]
    np.testing.assert_allclose(
        performance_profile(strata, taus, higher_is_better=False), [0, 0, 1 / 3, 2 / 3, 1]
    )
    np.testing.assert_allclose(
        performance_profile(strata, taus, higher_is_better=True), [1, 2 / 3, 2 / 3, 0, 0]
    )


# ---------------------------------------------------------------------------------------------
# Stratified bootstrap
# ---------------------------------------------------------------------------------------------


def test_two_runs_give_the_whole_range_for_the_mean() -> None:
    # Resampled means of [0, 1]: 0 (¼), ½ (½), 1 (¼): the 2.5% and 97.5% points are 0 and 1.
    assert mean_interval([[0.0, 1.0]], reps=4000) == Interval(0.5, 0.0, 1.0)


def test_resampling_stays_within_each_stratum() -> None:
    # Every resample keeps one stratum at 0 and the other at 10: the stratified mean is always 5.
    m = mean_interval([[0.0, 0.0], [10.0, 10.0]], reps=500)
    assert (m.point, m.low, m.high) == (5.0, 5.0, 5.0)
    # IQM of two low and two high runs is (max of the low + min of the high) / 2, so in [5, 6];
    # resampling across strata would reach 0.5 or 10.5.
    q = iqm_interval([[0.0, 1.0], [10.0, 11.0]], reps=2000)
    assert q.point == 5.5 and 5.0 <= q.low < q.point < q.high <= 6.0


def test_one_run_per_stratum_gives_a_point_interval() -> None:
    q = iqm_interval([[1.0], [2.0], [30.0]], reps=200)
    assert q.point == q.low == q.high == pytest.approx(11.0)


def test_probability_of_improvement_interval_resamples_x_against_a_fixed_y() -> None:
    # x resamples {1,1}: 1, {1,3}: ½, {3,3}: 0 against y = 2.
    p = improvement_interval([[1.0, 3.0]], [[2.0]], higher_is_better=False, reps=4000)
    assert (p.point, p.low, p.high) == (0.5, 0.0, 1.0)


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    data = [[0.3, 1.7, 2.2, 5.0], [1.0, 1.5, 4.0]]
    a = iqm_interval(data, reps=300, seed=7)
    assert iqm_interval(data, reps=300, seed=7) == a
    assert iqm_interval(data, reps=300, seed=8) != a


def test_profile_band_brackets_the_profile() -> None:
    taus = np.linspace(0.0, 4.0, 9)
    profile, low, high = profile_interval(
        [[1.0, 2.0, 3.0], [0.5, 3.5]], taus, higher_is_better=False, reps=300
    )
    assert np.all(low <= profile + 1e-12) and np.all(profile <= high + 1e-12)
    assert profile[0] == 0.0 and profile[-1] == 1.0


def test_level_must_be_in_the_open_interval_and_reps_positive() -> None:
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap(mean_batch, [[1.0, 2.0]], level=1.0)
    with pytest.raises(ValueError, match="reps must be an integer >= 1"):
        bootstrap(mean_batch, [[1.0, 2.0]], reps=0)
    with pytest.raises(ValueError, match="at least one sample"):
        bootstrap(mean_batch)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strata", "message"),
    [
        ([], "no stratum"),
        ([[1.0], []], "stratum 1 has no run"),
        ([[1.0, math.nan]], "stratum 0 has a non-finite score"),
        ([[[1.0, 2.0]]], "stratum 0 must be 1-D"),
        (np.ones((3, 2)), "runs x tasks matrix"),
    ],
)
def test_bad_scores_are_named(strata: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        iqm(strata)  # type: ignore[arg-type]


def test_probability_of_improvement_needs_the_same_strata() -> None:
    with pytest.raises(ValueError, match="x has 2 strata and y 1"):
        probability_of_improvement([[1.0], [2.0]], [[1.0]], higher_is_better=False)


def test_profile_needs_thresholds() -> None:
    with pytest.raises(ValueError, match="taus must be a non-empty 1-D"):
        performance_profile([[1.0]], [], higher_is_better=False)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
stratum = st.lists(finite, min_size=1, max_size=6)
strata_st = st.lists(stratum, min_size=1, max_size=4)


@settings(deadline=None, max_examples=60)
@given(strata_st)
def test_iqm_is_scipys_quarter_trimmed_mean_of_the_pooled_runs(strata: list[list[float]]) -> None:
    pooled = np.concatenate([np.asarray(s) for s in strata])
    assert iqm(strata) == pytest.approx(stats.trim_mean(pooled, 0.25), rel=1e-9, abs=1e-9)
    assert pooled.min() - 1e-9 <= iqm(strata) <= pooled.max() + 1e-9


@settings(deadline=None, max_examples=60)
@given(strata_st, st.floats(min_value=-5.0, max_value=5.0), finite)
def test_iqm_and_mean_are_affine_equivariant(strata: list[list[float]], a: float, b: float) -> None:
    moved = [[a * v + b for v in s] for s in strata]
    assert iqm(moved) == pytest.approx(a * iqm(strata) + b, rel=1e-6, abs=1e-6)
    assert stratified_mean(moved) == pytest.approx(
        a * stratified_mean(strata) + b, rel=1e-6, abs=1e-6
    )


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 4).flatmap(lambda k: st.tuples(*[st.tuples(stratum, stratum)] * k)))
def test_improvement_is_a_probability_and_antisymmetric(
    pairs: tuple[tuple[list[float], list[float]], ...],
) -> None:
    x, y = [p[0] for p in pairs], [p[1] for p in pairs]
    lower = probability_of_improvement(x, y, higher_is_better=False)
    assert 0.0 <= lower <= 1.0
    assert lower + probability_of_improvement(y, x, higher_is_better=False) == pytest.approx(1.0)
    # Lower-is-better X over Y is higher-is-better Y over X.
    assert lower == pytest.approx(probability_of_improvement(y, x, higher_is_better=True))
    assert probability_of_improvement(x, x, higher_is_better=False) == pytest.approx(0.5)


@settings(deadline=None, max_examples=40)
@given(strata_st, st.lists(finite, min_size=2, max_size=8))
def test_profile_is_monotone_in_tau(strata: list[list[float]], taus: list[float]) -> None:
    t = np.sort(np.asarray(taus))
    lower = performance_profile(strata, t, higher_is_better=False)
    higher = performance_profile(strata, t, higher_is_better=True)
    assert np.all(np.diff(lower) >= 0) and np.all(np.diff(higher) <= 0)
    assert np.all((lower >= 0) & (lower <= 1))


@settings(deadline=None, max_examples=30)
@given(strata_st, st.integers(0, 2**32 - 1))
def test_intervals_are_ordered_and_within_the_data(strata: list[list[float]], seed: int) -> None:
    lo, hi = min(min(s) for s in strata), max(max(s) for s in strata)
    for interval in (
        iqm_interval(strata, reps=200, seed=seed),
        mean_interval(strata, reps=200, seed=seed),
    ):
        assert lo - 1e-9 <= interval.low <= interval.high <= hi + 1e-9
