"""``GapTracker``: base losses, gaps, snapshots at the decision points, and its state."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.gaps import GapTracker, is_decision_step, second_epoch_window


def _feed(tracker: GapTracker, rows: list[list[float]], lr: float = 1.0) -> None:
    for step, row in enumerate(rows):
        tracker.update(torch.tensor(row), step, lr)


def test_base_losses_are_the_window_mean() -> None:
    tracker = GapTracker(2, base_window=(1, 3))
    _feed(tracker, [[9.0, 9.0], [2.0, 4.0], [4.0, 8.0]])
    assert tracker.base_losses is None  # set when the first step after the window arrives
    tracker.update(torch.tensor([1.0, 1.0]), 3, 1.0)
    assert tracker.base_losses is not None
    assert tracker.base_losses.tolist() == [3.0, 6.0]


def test_no_gaps_before_the_base_window_ends() -> None:
    tracker = GapTracker(2, base_window=(1, 3))
    _feed(tracker, [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    assert not tracker.has_base and tracker.gaps is None


def test_gap_uses_lower_bound() -> None:
    tracker = GapTracker(1, base_window=(0, 1), lower_bounds=torch.tensor([-2.0]))
    _feed(tracker, [[2.0], [0.0]])  # base 2 -> margin 4; now margin 2
    assert tracker.gaps is not None
    assert tracker.gaps.tolist() == [0.5]


def test_ema_smooths_gaps() -> None:
    tracker = GapTracker(1, base_window=(0, 1), spec=FeatureSpec(ema=0.5))
    _feed(tracker, [[1.0], [1.0], [3.0]])
    assert tracker.smoothed_gaps is not None
    assert tracker.smoothed_gaps.tolist() == [2.0]  # 0.5 * 1 + 0.5 * 3


def test_features_layout_bounds_and_dtype() -> None:
    spec = FeatureSpec(history=2, stride=1, ema=0.0)
    tracker = GapTracker(2, base_window=(0, 1), total_steps=10, spec=spec)
    _feed(tracker, [[1.0, 1.0], [1e-9, 1e9], [0.5, 2.0], [0.25, 4.0]])
    feats = tracker.features()
    low, high = tracker.feature_bounds
    layout = FeatureTable(spec).layout(("a", "b"))
    assert feats.dtype == np.float32 and feats.shape == low.shape == (len(layout),)
    assert np.all(feats >= low) and np.all(feats <= high)
    names = [n for n, _, _ in layout]
    assert names[:2] == ["a/log_gap", "a/raw_log_gap"] and names[-2:] == ["progress", "lr_ratio"]
    i = names.index("b/log_gap")
    assert feats[i] == pytest.approx(math.log(4.0))
    # change over one snapshot (stride 1): 10 * (log 4 - log 2), clipped to 10.
    assert feats[names.index("b/log_gap_change_1")] == pytest.approx(min(10 * math.log(2.0), 10.0))
    assert feats[names.index("progress")] == pytest.approx(0.4)


def test_lr_ratio_is_clipped() -> None:
    tracker = GapTracker(1, base_window=(0, 1), lr0=0.1)
    tracker.update(torch.tensor([1.0]), 0, lr=0.3)
    assert tracker.lr_ratio == 1.0
    tracker.update(torch.tensor([1.0]), 1, lr=0.05)
    assert tracker.lr_ratio == pytest.approx(0.5)


def test_bad_inputs_are_rejected() -> None:
    tracker = GapTracker(2, base_window=(0, 1))
    with pytest.raises(ValueError, match="expected 2 losses"):
        tracker.update(torch.ones(3), 0, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        tracker.update(torch.tensor([1.0, float("nan")]), 0, 1.0)
    with pytest.raises(ValueError, match="base_window"):
        GapTracker(2, base_window=(3, 3))


def test_state_round_trip() -> None:
    a = GapTracker(2, base_window=(0, 2), spec=FeatureSpec(stride=2))
    _feed(a, [[1.0, 2.0], [2.0, 3.0], [1.0, 1.0], [0.5, 0.5], [0.2, 0.3]])
    b = GapTracker(2, base_window=(0, 2), spec=FeatureSpec(stride=2))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.features(), b.features())
    a.update(torch.tensor([0.1, 0.1]), 5, 1.0)
    b.update(torch.tensor([0.1, 0.1]), 5, 1.0)
    np.testing.assert_array_equal(a.features(), b.features())


def test_decision_steps_by_hand() -> None:
    decisions = [s for s in range(40) if is_decision_step(s, base_end=10, every=7)]
    assert decisions == [10, 17, 24, 31, 38]
    assert [s for s in range(5) if is_decision_step(s, 0, 1)] == [0, 1, 2, 3, 4]
    assert not is_decision_step(9, 10, 1)


@settings(max_examples=100, deadline=None)
@given(base_end=st.integers(0, 50), every=st.integers(1, 30), extra=st.integers(1, 200))
def test_one_decision_per_env_step(base_end: int, every: int, extra: int) -> None:
    """Steps ``[base_end, steps)`` hold ``ceil((steps - base_end) / K)`` decisions: the env's
    episode length."""
    steps = base_end + extra
    decisions = [s for s in range(steps) if is_decision_step(s, base_end, every)]
    assert len(decisions) == math.ceil((steps - base_end) / every)
    assert decisions[0] == base_end
    assert all(b - a == every for a, b in itertools.pairwise(decisions))


@pytest.mark.parametrize(("per_epoch", "window"), [(1, (1, 2)), (10, (10, 20)), (37, (37, 74))])
def test_second_epoch_window(per_epoch: int, window: tuple[int, int]) -> None:
    assert second_epoch_window(per_epoch) == window


@pytest.mark.parametrize(("base_end", "stride", "history"), [(3, 1, 2), (4, 3, 1), (2, 5, 0)])
def test_tracker_snapshots_exactly_at_decision_points(
    base_end: int, stride: int, history: int
) -> None:
    tracker = GapTracker(
        2, (1, base_end), spec=FeatureSpec(history=history, stride=stride, ema=0.0)
    )
    snapshots = 0
    for step in range(30):
        before = [h.clone() for h in tracker.history]
        loss = 1.0 / (step + 1)
        tracker.update(torch.tensor([loss, 2 * loss]), step, 1.0)
        if is_decision_step(step, base_end, stride):
            snapshots += 1
            assert torch.equal(tracker.history[-1], tracker.log_gap())
            # The ring keeps the current snapshot and `history` older ones.
            assert len(tracker.history) == min(snapshots, history + 1)
            assert len(tracker.past_log_gaps()) == len(tracker.history) - 1
        else:
            assert len(tracker.history) == len(before)
            assert all(torch.equal(a, b) for a, b in zip(tracker.history, before, strict=True))
            past = tracker.past_log_gaps()
            assert len(past) == len(tracker.history)
            assert all(torch.equal(a, b) for a, b in zip(past, tracker.history, strict=True))
    assert snapshots == math.ceil((30 - base_end) / stride)


def test_noise_is_tracked_only_with_table_v2() -> None:
    rows = [[1.0, 2.0], [0.5, 1.0], [0.8, 0.4], [0.2, 0.3]]
    v1 = GapTracker(2, base_window=(0, 1), spec=FeatureSpec(ema=0.5))
    v2 = GapTracker(2, base_window=(0, 1), spec=FeatureSpec(ema=0.5, table="v2"))
    _feed(v1, rows[:1])
    _feed(v2, rows[:1])
    assert v1.noise is None and v2.noise is None  # no gaps yet
    for step, row in enumerate(rows[1:], start=1):
        for tracker in (v1, v2):
            tracker.update(torch.tensor(row), step, 1.0)
        assert v1.noise is None
        assert v2.noise is not None and v2.noise.dtype == torch.float64
        # the rest of the state is v1's, bit for bit
        assert v1.smoothed_gaps is not None and v2.smoothed_gaps is not None
        assert torch.equal(v1.smoothed_gaps, v2.smoothed_gaps)
    assert "noise" in v1.state_dict() and v1.state_dict()["noise"] is None


def test_noise_is_the_ema_of_the_log_deviation_from_the_smoothed_gap() -> None:
    """Base 1, EMA 0.5. Step 1: gap 0.5 = EMA, deviation 0, noise 0. Step 2: gap 0.125, EMA
    0.3125, deviation log 2.5, noise log(2.5) / 2. Step 3: gap 2, EMA 1.15625, deviation
    log(2 / 1.15625), noise log(2.5) / 4 + log(2 / 1.15625) / 2."""
    tracker = GapTracker(1, base_window=(0, 1), spec=FeatureSpec(ema=0.5, table="v2"))
    _feed(tracker, [[1.0], [0.5]])
    assert tracker.noise is not None and tracker.noise.tolist() == [0.0]
    tracker.update(torch.tensor([0.125]), 2, 1.0)
    assert tracker.noise.tolist() == pytest.approx([math.log(2.5) / 2], rel=1e-12)
    tracker.update(torch.tensor([2.0]), 3, 1.0)
    expected = math.log(2.5) / 4 + math.log(2.0 / 1.15625) / 2
    assert tracker.noise.tolist() == pytest.approx([expected], rel=1e-12)
    # Without smoothing the gap is its own EMA: no noise at all.
    raw = GapTracker(1, base_window=(0, 1), spec=FeatureSpec(ema=0.0, table="v2"))
    _feed(raw, [[1.0], [0.5], [0.125], [2.0]])
    assert raw.noise is not None and raw.noise.tolist() == [0.0]


def test_v2_state_round_trip_keeps_the_noise_exactly() -> None:
    spec = FeatureSpec(stride=2, ema=0.7, table="v2")
    a = GapTracker(2, base_window=(0, 2), spec=spec)
    _feed(a, [[1.0, 2.0], [2.0, 3.0], [1.0, 1.0], [0.5, 0.7], [0.2, 0.3], [0.9, 0.1]])
    state = a.state_dict()
    assert a.noise is not None and torch.equal(state["noise"], a.noise)
    b = GapTracker(2, base_window=(0, 2), spec=spec)
    b.load_state_dict(state)
    assert b.noise is not None and torch.equal(b.noise, a.noise)
    np.testing.assert_array_equal(a.features(), b.features())
    for step, row in enumerate([[0.1, 0.4], [0.3, 0.2]], start=6):
        a.update(torch.tensor(row), step, 1.0)
        b.update(torch.tensor(row), step, 1.0)
        assert torch.equal(a.noise, b.noise)
        np.testing.assert_array_equal(a.features(), b.features())
    # The saved state is a copy: the tracker's later updates do not change it.
    assert not torch.equal(state["noise"], a.noise)


def test_a_state_saved_before_the_noise_existed_loads() -> None:
    """A v1 tracker's state (or one saved before ``noise`` was added) restores no noise."""
    a = GapTracker(2, base_window=(0, 1), spec=FeatureSpec(ema=0.5, table="v2"))
    _feed(a, [[1.0, 2.0], [0.5, 1.0], [0.4, 1.5]])
    old = a.state_dict()
    del old["noise"]
    b = GapTracker(2, base_window=(0, 1), spec=FeatureSpec(ema=0.5, table="v2"))
    b.load_state_dict(old)
    assert b.noise is None
    b.update(torch.tensor([0.3, 0.6]), 3, 1.0)
    assert b.noise is not None  # restarts from the current deviation
    assert b.gaps is not None and b.smoothed_gaps is not None
    expected = np.abs(np.log(b.gaps.numpy()) - np.log(b.smoothed_gaps.numpy()))
    np.testing.assert_array_equal(b.noise.numpy(), expected)


def test_a_loss_below_its_lower_bound_after_the_base_window_is_refused() -> None:
    # A negative gap means the declared L* is wrong; the tracker would otherwise feed every
    # gap-based decision with it (issue 18).
    tracker = GapTracker(2, base_window=(0, 1), lower_bounds=torch.tensor([0.5, 0.0]))
    _feed(tracker, [[2.0, 2.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match=r"at step 2: task 0 loss 0\.4 < L\* 0\.5") as err:
        tracker.update(torch.tensor([0.4, 1.0]), 2, 1e-3)
    assert "lower_bounds must not exceed any loss" in str(err.value)
    tracker.update(torch.tensor([0.5, 0.0]), 3, 1e-3)  # at the bound: a gap of 0, accepted
    assert tracker.gaps is not None and tracker.gaps.tolist() == [0.0, 0.0]


def test_policy_weighting_refuses_losses_below_the_bound_after_its_base_window() -> None:
    from pathlib import Path

    from mtl_backends.weightings import PolicyWeighting

    root = Path(__file__).resolve().parents[2]
    policy = PolicyWeighting.load(root / "policies" / "synthetic-ppo-residual")
    end = policy.policy.sidecar["base_window"][1]
    for _ in range(end + 1):
        policy.update(torch.tensor([1.0, 10.0, 100.0]), lr=1e-3)
    with pytest.raises(ValueError, match=r"task 1 loss -1 < L\* 0"):
        policy.update(torch.tensor([1.0, -1.0, 100.0]), lr=1e-3)
