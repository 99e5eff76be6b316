from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.metrics import delta_m, delta_p, mean_rank


def test_delta_m_hand_computed() -> None:
    # lower-better: (1.1-1)/1 = +10 %; higher-better: -(0.45-0.5)/0.5 = +10 %; lower: (2-2)/2 = 0.
    assert delta_m([1.1, 0.45, 2.0], [1.0, 0.5, 2.0], [False, True, False]) == pytest.approx(
        20.0 / 3
    )


def test_delta_m_negative_when_better_than_stl() -> None:
    assert delta_m([0.9, 0.6], [1.0, 0.5], [False, True]) == pytest.approx(-15.0)


def test_delta_p_averages_within_tasks_first() -> None:
    # Task 0 has two metrics: improvements +10 % and -10 % -> 0; task 1 improves by +20 %.
    value = delta_p([1.1, 1.1, 0.8], [1.0, 1.0, 1.0], [True, False, False], [0, 0, 1])
    assert value == pytest.approx(10.0)
    # Δm over the same metrics averages the three metric terms instead.
    assert delta_m([1.1, 1.1, 0.8], [1.0, 1.0, 1.0], [True, False, False]) == pytest.approx(
        -20.0 / 3
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.1, 10), st.floats(0.1, 10), st.booleans()), min_size=1, max_size=6
    )
)
def test_delta_p_is_minus_delta_m_with_one_metric_per_task(
    rows: list[tuple[float, float, bool]],
) -> None:
    m, b, s = zip(*rows, strict=True)
    assert delta_p(m, b, s, list(range(len(m)))) == pytest.approx(-delta_m(m, b, s))


def test_reference_zero_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        delta_m([1.0], [0.0], [False])


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        delta_m([1.0, 2.0], [1.0], [False])


def test_mean_rank_with_ties_and_directions() -> None:
    ranks = mean_rank({"a": [1.0, 0.9], "b": [2.0, 0.9], "c": [1.0, 0.5]}, [False, True])
    # metric 0 (lower better): a, c tie -> 1.5, b -> 3; metric 1 (higher): a, b tie -> 1.5, c -> 3.
    assert ranks == {"a": 1.5, "b": 2.25, "c": 2.25}
