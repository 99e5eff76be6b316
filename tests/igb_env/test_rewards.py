"""The reward registry: every reward on hand-made inputs with hand-computed values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igb_env.rewards import (
    REWARDS,
    Reward,
    RewardInput,
    get_reward,
    lr_factor,
    mean_log_gap_decrease,
    min_gap_decrease,
    val_log_improvement,
    val_log_metric_improvement,
)


def _inputs(
    prev: list[float],
    now: list[float],
    base: list[float] | None = None,
    bounds: list[float] | None = None,
    lr_ratio: float = 1.0,
    val_prev: list[float] | None = None,
    val_now: list[float] | None = None,
    metrics_prev: list[float] | None = None,
    metrics_now: list[float] | None = None,
    signs: list[float] | None = None,
) -> RewardInput:
    n = len(prev)

    def arr(values: list[float] | None) -> np.ndarray | None:
        return None if values is None else np.asarray(values, dtype=np.float64)

    return RewardInput(
        losses_prev=np.asarray(prev, dtype=np.float64),
        losses_now=np.asarray(now, dtype=np.float64),
        base_losses=np.asarray(base if base is not None else [1.0] * n, dtype=np.float64),
        lower_bounds=np.asarray(bounds if bounds is not None else [0.0] * n, dtype=np.float64),
        lr_ratio=lr_ratio,
        val_prev=None if val_prev is None else np.asarray(val_prev, dtype=np.float64),
        val_now=None if val_now is None else np.asarray(val_now, dtype=np.float64),
        val_metrics_prev=arr(metrics_prev),
        val_metrics_now=arr(metrics_now),
        metric_signs=arr(signs),
    )


# Decreases [1, 1, 0.5]; with L* = [0, 1, 0] the base margins are [3, 4, 2], so the
# normalised decreases are [1/3, 1/4, 1/4] and the worst task gives 1/4.
STEP = _inputs(
    prev=[2.0, 4.0, 1.0], now=[1.0, 3.0, 0.5], base=[3.0, 5.0, 2.0], bounds=[0.0, 1.0, 0.0]
)


def test_registry_names_and_validation_needs() -> None:
    assert set(REWARDS) == {
        "min_gap_decrease",
        "mean_log_gap_decrease",
        "val_log_improvement",
        "val_log_metric_improvement",
    }
    assert {name for name, r in REWARDS.items() if r.needs_validation} == {
        "val_log_improvement",
        "val_log_metric_improvement",
    }
    assert {name for name, r in REWARDS.items() if r.needs_metrics} == {
        "val_log_metric_improvement"
    }
    for name, reward in REWARDS.items():
        assert reward.name == name
        assert get_reward(name) is reward


def test_get_reward_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown reward 'min_gap'") as err:
        get_reward("min_gap")
    assert (
        "valid choices: mean_log_gap_decrease, min_gap_decrease, val_log_improvement, "
        "val_log_metric_improvement" in str(err.value)
    )


def test_min_gap_decrease_hand_values() -> None:
    assert min_gap_decrease(STEP, 1.0) == pytest.approx(0.25)
    assert min_gap_decrease(STEP, 2.0) == pytest.approx(0.5)
    # The lower bounds decide which task is the worst: with L* = 0 the margins are [3, 5, 2] and
    # the normalised decreases [1/3, 1/5, 1/4].
    no_bounds = _inputs(prev=[2.0, 4.0, 1.0], now=[1.0, 3.0, 0.5], base=[3.0, 5.0, 2.0])
    assert min_gap_decrease(no_bounds, 1.0) == pytest.approx(0.2)


def test_min_gap_decrease_is_negative_when_a_task_gets_worse() -> None:
    inputs = _inputs(prev=[1.0, 1.0], now=[0.5, 1.5], base=[2.0, 4.0])
    # normalised changes: [0.5 / 2, -0.5 / 4]
    assert min_gap_decrease(inputs, 1.0) == pytest.approx(-0.125)


@pytest.mark.parametrize(
    ("lr_ratio", "cap", "factor"),
    [(1.0, 10.0, 1.0), (0.5, 10.0, 2.0), (0.25, 10.0, 4.0), (0.25, 3.0, 3.0), (0.0, 7.0, 7.0)],
)
def test_min_gap_decrease_lr_scale(lr_ratio: float, cap: float, factor: float) -> None:
    inputs = _inputs(
        prev=[2.0, 4.0, 1.0],
        now=[1.0, 3.0, 0.5],
        base=[3.0, 5.0, 2.0],
        bounds=[0.0, 1.0, 0.0],
        lr_ratio=lr_ratio,
    )
    assert min_gap_decrease(inputs, 2.0, lr_scale=True, lr_scale_cap=cap) == pytest.approx(
        2.0 * factor * 0.25
    )
    # Without lr_scale the LR ratio is ignored.
    assert min_gap_decrease(inputs, 2.0, lr_scale_cap=cap) == pytest.approx(0.5)


def test_lr_factor_hand_values() -> None:
    assert lr_factor(1.0, 10.0) == 1.0
    assert lr_factor(0.5, 10.0) == 2.0
    assert lr_factor(0.2, 10.0) == pytest.approx(5.0)
    assert lr_factor(0.05, 10.0) == 10.0  # 20 capped
    assert lr_factor(0.0, 10.0) == 10.0  # the LR decayed to 0: the cap, not a division by zero
    assert lr_factor(-0.1, 4.0) == 4.0


@settings(max_examples=50, deadline=None)
@given(
    a=st.floats(1e-6, 1.0),
    b=st.floats(1e-6, 1.0),
    cap=st.floats(1.0, 1e3),
)
def test_lr_factor_is_capped_and_non_increasing(a: float, b: float, cap: float) -> None:
    lo, hi = sorted((a, b))
    assert 1.0 <= lr_factor(hi, cap) <= lr_factor(lo, cap) <= cap
    assert lr_factor(lo, cap) == pytest.approx(min(1.0 / lo, cap))


def test_mean_log_gap_decrease_hand_values() -> None:
    # log gaps prev [log 4, log 2], now [log 2, log 1]: both tasks decrease by log 2.
    inputs = _inputs(prev=[4.0, 3.0], now=[2.0, 2.0], bounds=[0.0, 1.0])
    assert mean_log_gap_decrease(inputs, 1.0) == pytest.approx(math.log(2.0))
    assert mean_log_gap_decrease(inputs, 3.0) == pytest.approx(3.0 * math.log(2.0))
    # One task halves, the other doubles: the mean change is 0.
    mixed = _inputs(prev=[4.0, 1.0], now=[2.0, 2.0])
    assert mean_log_gap_decrease(mixed, 10.0) == pytest.approx(0.0, abs=1e-12)


def test_mean_log_gap_decrease_ignores_base_losses_and_lr() -> None:
    a = _inputs(prev=[4.0, 3.0], now=[2.0, 2.0], base=[5.0, 5.0], lr_ratio=1.0)
    b = _inputs(prev=[4.0, 3.0], now=[2.0, 2.0], base=[50.0, 0.5], lr_ratio=0.1)
    assert mean_log_gap_decrease(a, 1.0) == mean_log_gap_decrease(b, 1.0)


def test_val_log_improvement_hand_values() -> None:
    # With L* = [0, 1]: log(8 / 2) and log((3 - 1) / (2 - 1)) -> mean 1.5 log 2.
    inputs = _inputs(
        prev=[1.0, 1.0],
        now=[1.0, 1.0],
        bounds=[0.0, 1.0],
        val_prev=[8.0, 3.0],
        val_now=[2.0, 2.0],
    )
    assert val_log_improvement(inputs, 1.0) == pytest.approx(1.5 * math.log(2.0))
    assert val_log_improvement(inputs, 10.0) == pytest.approx(15.0 * math.log(2.0))


def test_val_log_improvement_does_not_read_training_losses() -> None:
    a = _inputs(prev=[1.0, 1.0], now=[1.0, 1.0], val_prev=[8.0, 3.0], val_now=[2.0, 2.0])
    b = _inputs(prev=[9.0, 0.1], now=[0.2, 7.0], val_prev=[8.0, 3.0], val_now=[2.0, 2.0])
    assert val_log_improvement(a, 1.0) == val_log_improvement(b, 1.0)


@pytest.mark.parametrize(
    ("val_prev", "val_now"), [(None, [1.0, 1.0]), ([1.0, 1.0], None), (None, None)]
)
def test_val_log_improvement_needs_validation_losses(
    val_prev: list[float] | None, val_now: list[float] | None
) -> None:
    inputs = _inputs(prev=[1.0, 1.0], now=[1.0, 1.0], val_prev=val_prev, val_now=val_now)
    with pytest.raises(ValueError, match="needs validation losses"):
        val_log_improvement(inputs, 1.0)
    with pytest.raises(ValueError, match="val_prev and val_now"):
        REWARDS["val_log_improvement"](inputs, 1.0)


@settings(max_examples=40, deadline=None)
@given(
    vals=st.lists(st.lists(st.floats(0.01, 100.0), min_size=3, max_size=3), min_size=2, max_size=8),
    bounds=st.lists(st.floats(0.0, 0.009), min_size=3, max_size=3),
    scale=st.floats(0.1, 20.0),
)
def test_val_log_improvement_telescopes(
    vals: list[list[float]], bounds: list[float], scale: float
) -> None:
    """Summed over an episode the rewards are ``α · mean_t log((V_0 - L*) / (V_end - L*))``."""
    total = 0.0
    for prev, now in itertools.pairwise(vals):
        inputs = _inputs(prev=[1.0] * 3, now=[1.0] * 3, bounds=bounds, val_prev=prev, val_now=now)
        total += REWARDS["val_log_improvement"](inputs, scale)
    v0, vend, lo = np.asarray(vals[0]), np.asarray(vals[-1]), np.asarray(bounds)
    expected = scale * float(np.mean(np.log((v0 - lo) / (vend - lo))))
    assert total == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_val_log_metric_improvement_hand_values() -> None:
    # An accuracy 0.5 -> 0.8 (higher is better) and an MSE 2 -> 1 (lower is better):
    # mean(log(0.8 / 0.5), -log(1 / 2)) = mean(0.470004, 0.693147).
    inputs = _inputs(
        prev=[1.0, 1.0],
        now=[1.0, 1.0],
        metrics_prev=[0.5, 2.0],
        metrics_now=[0.8, 1.0],
        signs=[1.0, -1.0],
    )
    expected = 0.5 * (math.log(0.8 / 0.5) + math.log(2.0))
    assert val_log_metric_improvement(inputs, 1.0) == pytest.approx(expected, rel=1e-12)
    assert REWARDS["val_log_metric_improvement"](inputs, 10.0) == pytest.approx(10 * expected)
    # A classifier that loses accuracy and a regression that gets worse both cost reward.
    worse = _inputs(
        prev=[1.0, 1.0],
        now=[1.0, 1.0],
        metrics_prev=[0.8, 1.0],
        metrics_now=[0.5, 2.0],
        signs=[1.0, -1.0],
    )
    assert val_log_metric_improvement(worse, 1.0) == pytest.approx(-expected, rel=1e-12)


def test_val_log_metric_improvement_does_not_pay_for_losses() -> None:
    """A saturated classifier's loss falling (accuracy flat) earns nothing; the loss reward pays."""
    inputs = _inputs(
        prev=[1.0, 1.0],
        now=[1.0, 1.0],
        val_prev=[0.10, 2.0],
        val_now=[0.02, 2.0],
        metrics_prev=[0.98, 2.0],
        metrics_now=[0.98, 2.0],
        signs=[1.0, -1.0],
    )
    assert val_log_metric_improvement(inputs, 1.0) == 0.0
    assert val_log_improvement(inputs, 1.0) == pytest.approx(0.5 * math.log(5.0))


def test_val_log_metric_improvement_floors_a_zero_accuracy() -> None:
    inputs = _inputs([1.0], [1.0], metrics_prev=[0.0], metrics_now=[0.5], signs=[1.0])
    value = val_log_metric_improvement(inputs, 1.0)
    assert math.isfinite(value) and value == pytest.approx(math.log(0.5 / 1e-6))


@pytest.mark.parametrize(
    ("metrics_prev", "metrics_now", "signs", "match"),
    [
        (None, [1.0], [1.0], "needs validation metrics"),
        ([1.0], None, [1.0], "needs validation metrics"),
        ([1.0], [1.0], None, "metric_signs"),
        ([1.0, 2.0], [1.0], [1.0, 1.0], "metric shapes differ"),
        ([1.0], [1.0], [1.0, -1.0], "metric shapes differ"),
    ],
)
def test_val_log_metric_improvement_needs_its_metrics(
    metrics_prev: list[float] | None,
    metrics_now: list[float] | None,
    signs: list[float] | None,
    match: str,
) -> None:
    inputs = _inputs([1.0], [1.0], metrics_prev=metrics_prev, metrics_now=metrics_now, signs=signs)
    with pytest.raises(ValueError, match=match):
        REWARDS["val_log_metric_improvement"](inputs, 1.0)


def test_val_log_metric_improvement_refuses_negative_metrics() -> None:
    # toy's metrics are raw losses that go below 0: their log is no reward.
    inputs = _inputs([1.0], [1.0], metrics_prev=[0.1], metrics_now=[-1.0], signs=[-1.0])
    with pytest.raises(ValueError, match="non-negative metrics"):
        val_log_metric_improvement(inputs, 1.0)


def test_val_log_metric_improvement_floor_is_an_argument() -> None:
    inputs = _inputs([1.0], [1.0], metrics_prev=[0.0], metrics_now=[0.5], signs=[1.0])
    assert REWARDS["val_log_metric_improvement"](inputs, 1.0, floor=0.01) == pytest.approx(
        math.log(50.0)
    )


def test_a_metric_reward_must_read_the_validation_batch() -> None:
    with pytest.raises(ValueError, match="needs_metrics requires needs_validation"):
        Reward("bad", val_log_metric_improvement, needs_validation=False, needs_metrics=True)


@settings(max_examples=40, deadline=None)
@given(
    vals=st.lists(st.lists(st.floats(0.01, 100.0), min_size=3, max_size=3), min_size=2, max_size=8),
    signs=st.lists(st.sampled_from([1.0, -1.0]), min_size=3, max_size=3),
    scale=st.floats(0.1, 20.0),
)
def test_val_log_metric_improvement_telescopes(
    vals: list[list[float]], signs: list[float], scale: float
) -> None:
    """Summed over an episode: ``α · mean_m s_m log(M_end / M_0)``, log validation Δm's form."""
    total = 0.0
    for prev, now in itertools.pairwise(vals):
        inputs = _inputs([1.0], [1.0], metrics_prev=prev, metrics_now=now, signs=signs)
        total += REWARDS["val_log_metric_improvement"](inputs, scale)
    m0, mend = np.asarray(vals[0]), np.asarray(vals[-1])
    expected = scale * float(np.mean(np.asarray(signs) * np.log(mend / m0)))
    assert total == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_mean_log_gap_decrease_telescopes_over_windows() -> None:
    windows = [[4.0, 1.0], [2.0, 0.5], [3.0, 0.25], [1.0, 0.125]]
    total = sum(
        mean_log_gap_decrease(_inputs(prev=p, now=n), 1.0) for p, n in itertools.pairwise(windows)
    )
    # mean(log(4 / 1), log(1 / 0.125)) = mean(2 log 2, 3 log 2)
    assert total == pytest.approx(2.5 * math.log(2.0))


def _any_inputs(
    prev: list[float], now: list[float], base: list[float], lr_ratio: float
) -> RewardInput:
    n = min(len(prev), len(now), len(base))
    return _inputs(
        prev[:n],
        now[:n],
        base=base[:n],
        lr_ratio=lr_ratio,
        val_prev=prev[:n],
        val_now=now[:n],
        metrics_prev=prev[:n],
        metrics_now=now[:n],
        signs=[(-1.0) ** t for t in range(n)],
    )


losses = st.lists(st.floats(0.01, 100.0), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(REWARDS)),
    prev=losses,
    now=losses,
    base=st.lists(st.floats(0.5, 100.0), min_size=5, max_size=5),
    lr_ratio=st.floats(0.0, 1.0),
    scale=st.floats(-50.0, 50.0),
    factor=st.floats(-10.0, 10.0),
)
def test_rewards_are_linear_in_the_scale(
    name: str,
    prev: list[float],
    now: list[float],
    base: list[float],
    lr_ratio: float,
    scale: float,
    factor: float,
) -> None:
    reward = REWARDS[name]
    inputs = _any_inputs(prev, now, base, lr_ratio)
    kwargs = {"lr_scale": True} if name == "min_gap_decrease" else {}
    unit = reward(inputs, 1.0, **kwargs)
    assert reward(inputs, 0.0, **kwargs) == 0.0
    assert reward(inputs, scale, **kwargs) == pytest.approx(scale * unit, rel=1e-12, abs=1e-12)
    assert reward(inputs, factor * scale, **kwargs) == pytest.approx(
        factor * reward(inputs, scale, **kwargs), rel=1e-12, abs=1e-12
    )


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(REWARDS)), prev=losses, now=losses)
def test_rewards_are_finite_python_floats(name: str, prev: list[float], now: list[float]) -> None:
    inputs = _any_inputs(prev, now, [100.0] * 5, 0.5)
    value = REWARDS[name](inputs, 10.0)
    assert type(value) is float and math.isfinite(value)
    # The raw functions (as registered) return Python floats too.
    raw = REWARDS[name].fn(inputs, 10.0)
    assert type(raw) is float and raw == value


def test_no_change_gives_zero_for_every_reward() -> None:
    same = _inputs(
        prev=[0.3, 2.0, 7.0],
        now=[0.3, 2.0, 7.0],
        base=[1.0, 3.0, 9.0],
        val_prev=[1.0, 2.0, 3.0],
        val_now=[1.0, 2.0, 3.0],
        metrics_prev=[0.5, 2.0, 0.9],
        metrics_now=[0.5, 2.0, 0.9],
        signs=[1.0, -1.0, 1.0],
    )
    for reward in REWARDS.values():
        assert reward(same, 5.0) == 0.0


def test_a_loss_at_its_bound_gives_a_finite_reward() -> None:
    # log(0) is avoided: a loss equal to L* counts as a gap of 1e-30.
    inputs = _inputs(prev=[1.0, 1.0], now=[0.0, 1.0], val_prev=[1.0, 1.0], val_now=[0.0, 1.0])
    expected = 0.5 * (0.0 - math.log(1e-30))
    assert REWARDS["mean_log_gap_decrease"](inputs, 1.0) == pytest.approx(expected)
    assert REWARDS["val_log_improvement"](inputs, 1.0) == pytest.approx(expected)
