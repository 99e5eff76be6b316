"""Action maps: the formulas, the held action, validation (no gymnasium needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.gaps import GapTracker
from mtl_backends.policy.action_maps import (
    ACTION_MAPS,
    HeldAction,
    action_to_weights,
    get_action_map,
)
from mtl_backends.weightings import igbv1_weights
from tests.mtl_backends.policy._policies import tracker_with_gaps


def test_action_maps():
    tracker = tracker_with_gaps([0.9, 0.5, 0.7])
    gaps = tracker.gaps
    assert gaps is not None
    assert set(ACTION_MAPS) == {"absolute", "residual"}
    assert torch.equal(
        action_to_weights(np.zeros(3), "residual", 1.0, tracker), igbv1_weights(gaps).float()
    )
    w = action_to_weights(np.array([1.0, -1.0, 0.0]), "absolute", 1.0, tracker)
    assert w.dtype == torch.float32 and float(w.sum()) == pytest.approx(3.0)
    assert float(w[0] / w[1]) == pytest.approx(np.exp(2.0), rel=1e-6)
    clipped = action_to_weights(np.array([7.0, -3.0, 0.0]), "absolute", 1.0, tracker)
    assert torch.equal(w, clipped)
    for bad in (np.array([np.nan, 0, 0]), np.zeros(2), np.zeros((3, 1))):
        with pytest.raises(ValueError, match="action"):
            action_to_weights(bad, "residual", 1.0, tracker)
    with pytest.raises(ValueError, match="after the base window"):
        action_to_weights(np.zeros(3), "residual", 1.0, GapTracker(3, (0, 1)))
    with pytest.raises(ValueError, match="unknown action mode"):
        action_to_weights(np.zeros(3), "nope", 1.0, tracker)
    with pytest.raises(ValueError, match="version"):
        get_action_map("residual", 2)


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(sorted(ACTION_MAPS)),
    tau=st.floats(0.1, 3.0),
    action=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    losses=st.lists(st.floats(0.01, 100.0), min_size=3, max_size=3),
)
def test_held_action_equals_the_map_at_every_step(mode, tau, action, losses):
    """``HeldAction`` (validated once per hold) equals mapping the action afresh, bit for bit."""
    tracker = GapTracker(3, (0, 1))
    held = HeldAction(mode, tau)
    assert torch.equal(held.weights(tracker), torch.ones(3))  # before the base: unit weights
    tracker.update(torch.ones(3, dtype=torch.float64), 0, 1e-3)
    tracker.update(torch.tensor(losses, dtype=torch.float64), 1, 1e-3)
    assert torch.equal(held.weights(tracker), action_to_weights(np.zeros(3), mode, tau, tracker))
    held.hold(np.array(action), 3)
    w = held.weights(tracker)
    assert torch.equal(w, action_to_weights(np.array(action), mode, tau, tracker))
    assert float(w.sum()) == pytest.approx(3.0, rel=1e-5)
    assert held.action is not None
    assert torch.equal(held.action, torch.tensor(action, dtype=torch.float64))  # not clipped
    held.hold(None, 3)
    assert held.action is None


def test_held_action_rejects_bad_actions():
    held = HeldAction("residual", 1.0)
    held.hold(np.zeros(3), 3)
    for bad in (np.array([np.nan, 0.0, 0.0]), np.array([np.inf, 0.0, 0.0]), np.zeros(2)):
        with pytest.raises(ValueError, match="action"):
            held.hold(bad, 3)
    assert held.action is not None
    assert torch.equal(held.action, torch.zeros(3, dtype=torch.float64))  # the old one is kept
    with pytest.raises(ValueError, match="unknown action mode"):
        HeldAction("nope", 1.0)
