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
    InterpMap,
    StackedGaps,
    action_to_weights,
    get_action_map,
    make_action_map,
)
from mtl_backends.weightings import StepContext, igbv1_weights, make_weighting
from tests.mtl_backends.policy._policies import tracker_with_gaps


def test_action_maps():
    tracker = tracker_with_gaps([0.9, 0.5, 0.7])
    gaps = tracker.gaps
    assert gaps is not None
    assert set(ACTION_MAPS) == {"absolute", "residual", "interp"}
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
    entries=st.lists(st.floats(-3.0, 3.0), min_size=5, max_size=5),
    losses=st.lists(st.floats(0.01, 100.0), min_size=3, max_size=3),
)
def test_held_action_equals_the_map_at_every_step(mode, tau, entries, losses):
    """``HeldAction`` (validated once per hold) equals mapping the action afresh, bit for bit."""
    tracker = GapTracker(3, (0, 1))
    held = HeldAction(mode, tau)
    dim = held.map.action_dim(3)
    action = entries[:dim]
    assert torch.equal(held.weights(tracker), torch.ones(3))  # before the base: unit weights
    tracker.update(torch.ones(3, dtype=torch.float64), 0, 1e-3)
    tracker.update(torch.tensor(losses, dtype=torch.float64), 1, 1e-3)
    assert torch.equal(held.weights(tracker), action_to_weights(np.zeros(dim), mode, tau, tracker))
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


# -- interp -------------------------------------------------------------------------------------
def _state(base: list[float], losses: list[float], bounds: list[float] | None = None) -> GapTracker:
    """A tracker after base losses ``base`` (step 0) and the current batch ``losses`` (step 1)."""
    lower = None if bounds is None else torch.tensor(bounds, dtype=torch.float64)
    tracker = GapTracker(len(base), (0, 1), lower_bounds=lower)
    tracker.update(torch.tensor(base, dtype=torch.float64), 0, 1e-3)
    tracker.update(torch.tensor(losses, dtype=torch.float64), 1, 1e-3)
    return tracker


def _igbv1(tracker: GapTracker) -> torch.Tensor:
    """The IGBv1 weighting's weights on ``tracker``'s current batch."""
    weighting = make_weighting("igbv1")
    weighting.reset(tracker.n_tasks, None)
    assert tracker.losses is not None
    return weighting(StepContext(tracker.losses.float(), tracker, tracker.step, 0, 10, 1.0))


@st.composite
def _run_states(draw: st.DrawFn, max_tasks: int = 8, min_margin: float = 0.05) -> GapTracker:
    """Base margins in ``[min_margin, 10]``, current margins in ``[0, 20]`` (a loss may sit at
    its bound)."""
    n = draw(st.integers(1, max_tasks))
    bounds = draw(st.lists(st.floats(0.0, 0.5), min_size=n, max_size=n))
    base = [b + draw(st.floats(min_margin, 10.0)) for b in bounds]
    losses = [b + draw(st.floats(0.0, 20.0)) for b in bounds]
    return _state(base, losses, bounds)


def test_interp_is_registered() -> None:
    assert ACTION_MAPS["interp"] is InterpMap
    assert get_action_map("interp", 1) is InterpMap and get_action_map("interp") is InterpMap
    amap = make_action_map("interp", 2.0)
    assert isinstance(amap, InterpMap) and amap.tau == 2.0
    assert (amap.mode, amap.version) == ("interp", 1)
    assert [amap.action_dim(t) for t in (1, 3, 10)] == [3, 5, 12]
    assert "p = clip(a_p, 0, 1), q = 1 + clip(a_q, -1, 1)" in amap.formula
    with pytest.raises(ValueError, match="version 2 is not supported"):
        get_action_map("interp", 2)
    with pytest.raises(ValueError, match="valid choices: absolute, interp, residual"):
        get_action_map("interpolated")
    with pytest.raises(ValueError, match="tau must be positive"):
        make_action_map("interp", 0.0)


@settings(max_examples=80, deadline=None)
@given(tracker=_run_states(), tau=st.floats(0.1, 5.0))
def test_interp_zero_action_is_igbv1_bit_for_bit(tracker: GapTracker, tau: float) -> None:
    t = tracker.n_tasks
    assert tracker.gaps is not None
    expected = _igbv1(tracker)
    assert expected.dtype == torch.float32
    assert torch.equal(igbv1_weights(tracker.gaps).float(), expected)
    assert torch.equal(action_to_weights(np.zeros(t + 2), "interp", tau, tracker), expected)
    assert torch.equal(action_to_weights(np.zeros(t), "residual", tau, tracker), expected)
    # Nothing held (prepared None) is the zero action too.
    amap = InterpMap(tau)
    assert torch.equal(amap.weights(None, tracker), expected)
    held = HeldAction("interp", tau)
    assert torch.equal(held.weights(tracker), expected)
    held.hold(np.zeros(t + 2), t)
    assert held.prepared is not None
    assert held.prepared[-2:].tolist() == [0.0, 1.0]  # p = 0, q = 1
    assert torch.equal(held.weights(tracker), expected)


def _softmax_weights(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return len(logits) * e / e.sum()


@settings(max_examples=80, deadline=None)
@given(data=st.data(), tracker=_run_states(min_margin=1.0), tau=st.floats(0.1, 3.0))
def test_interp_weights_follow_the_formula(
    data: st.DataObject, tracker: GapTracker, tau: float
) -> None:
    """``w = T softmax(p log(L - L* + 1e-8) + q g + τ clip(a))``, ``p = clip(a_p, 0, 1)``,
    ``q = 1 + clip(a_q, -1, 1)``: positive weights that sum to T. (Gaps up to 20 keep every
    logit within ~70 of the largest, so no float32 weight underflows to 0.)"""
    t = tracker.n_tasks
    action = np.array(data.draw(st.lists(st.floats(-2.0, 2.0), min_size=t + 2, max_size=t + 2)))
    w = action_to_weights(action, "interp", tau, tracker)
    assert tracker.gaps is not None and tracker.losses is not None
    clipped = np.clip(action, -1.0, 1.0)
    p, q = max(clipped[-2], 0.0), 1.0 + clipped[-1]
    margin = tracker.losses.numpy() - tracker.lower_bounds.numpy()
    logits = p * np.log(margin + 1e-8) + q * tracker.gaps.numpy() + tau * clipped[:t]
    np.testing.assert_allclose(w.numpy(), _softmax_weights(logits), rtol=1e-5, atol=1e-6)
    assert w.dtype == torch.float32 and bool((w > 0).all())
    assert float(w.double().sum()) == pytest.approx(t, rel=1e-5)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), tracker=_run_states(), tau=st.floats(0.1, 3.0))
def test_interp_equals_its_formula_in_torch_ops_bit_for_bit(
    data: st.DataObject, tracker: GapTracker, tau: float
) -> None:
    """The map's numpy arithmetic gives torch's float64 ops' result exactly (same IEEE operations
    in the same order), so runs recorded before it moved off torch's dispatch are reproduced."""
    t = tracker.n_tasks
    action = np.array(data.draw(st.lists(st.floats(-2.0, 2.0), min_size=t + 2, max_size=t + 2)))
    amap = InterpMap(tau)
    prepared = amap.prepare(torch.from_numpy(action))
    assert tracker.gaps is not None and tracker.losses is not None
    margin = tracker.losses - tracker.lower_bounds
    log_loss = torch.log(margin.clamp_min(0.0) + 1e-8)
    residual, p, q = prepared[:-2], prepared[-2:-1], prepared[-1:]
    logits = p * log_loss + q * tracker.gaps + residual
    expected = (t * torch.softmax(logits, dim=-1)).to(torch.float32)
    assert torch.equal(amap.weights(prepared, tracker), expected)


def test_interp_q_zero_is_si_plus_the_residual() -> None:
    """``a_q = -1`` (``q = 0``) and ``a_p ≤ 0`` (``p = 0``): ``T softmax(τ a)``, the absolute
    map's weights of the per-task entries, whatever the losses."""
    tracker = _state([2.0, 1.0, 4.0], [0.3, 1.7, 9.0], [0.0, 0.1, 0.2])
    a = np.array([0.4, -0.8, 1.7])
    for a_p in (0.0, -0.6, -3.0):
        interp = action_to_weights(np.array([*a, a_p, -1.0]), "interp", 1.5, tracker)
        assert torch.equal(interp, action_to_weights(a, "absolute", 1.5, tracker))
    # With a = 0 that is SI: unit weights.
    si = action_to_weights(np.array([0.0, 0.0, 0.0, 0.0, -1.0]), "interp", 1.0, tracker)
    torch.testing.assert_close(si, torch.ones(3), rtol=0, atol=1e-7)


def test_interp_p_one_q_zero_weights_by_the_margin() -> None:
    """``a_p = 1, a_q = -1``: ``w ∝ L - L* + 1e-8``. ``L* = [0, 0.5, 0]``, ``L = [1, 1.5, 2]``:
    margins ``[1, 1, 2]``, weights ``3 · [1, 1, 2] / 4``."""
    tracker = _state([2.0, 2.5, 4.0], [1.0, 1.5, 2.0], [0.0, 0.5, 0.0])
    w = action_to_weights(np.array([0.0, 0.0, 0.0, 1.0, -1.0]), "interp", 1.0, tracker)
    torch.testing.assert_close(w, torch.tensor([0.75, 0.75, 1.5]), rtol=1e-6, atol=0)
    # Entries beyond [-1, 1] are clipped: a_p = 7 is p = 1, a_q = -4 is q = 0.
    assert torch.equal(
        action_to_weights(np.array([0.0, 0.0, 0.0, 7.0, -4.0]), "interp", 1.0, tracker), w
    )
    # A task at its bound (margin 0) keeps a positive weight: 1e-8 inside the log.
    at_bound = _state([2.0, 2.0], [0.0, 1.0])
    w = action_to_weights(np.array([0.0, 0.0, 1.0, -1.0]), "interp", 1.0, at_bound)
    torch.testing.assert_close(w.double(), torch.tensor([2e-8, 2.0], dtype=torch.float64))
    assert float(w[0]) > 0


def test_interp_q_two_doubles_the_gaps() -> None:
    """``a_q = 1`` is ``q = 2``: IGBv1 on twice the gaps (``T softmax(2 g)``)."""
    tracker = _state([1.0, 2.0, 4.0], [0.5, 3.0, 1.0])
    assert tracker.gaps is not None
    w = action_to_weights(np.array([0.0, 0.0, 0.0, -0.5, 1.0]), "interp", 1.0, tracker)
    assert torch.equal(w, igbv1_weights(2.0 * tracker.gaps).float())
    g = np.array([0.5, 1.5, 0.25])
    np.testing.assert_allclose(w.numpy(), _softmax_weights(2 * g), rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), tracker=_run_states(max_tasks=6), tau=st.floats(0.1, 3.0))
def test_interp_is_permutation_equivariant(
    data: st.DataObject, tracker: GapTracker, tau: float
) -> None:
    t = tracker.n_tasks
    perm = data.draw(st.permutations(range(t)))
    action = np.array(data.draw(st.lists(st.floats(-1.5, 1.5), min_size=t + 2, max_size=t + 2)))
    assert tracker.base_losses is not None and tracker.losses is not None
    base, losses = tracker.base_losses.tolist(), tracker.losses.tolist()
    bounds = tracker.lower_bounds.tolist()
    permuted = _state([base[i] for i in perm], [losses[i] for i in perm], [bounds[i] for i in perm])
    permuted_action = np.array([*(action[i] for i in perm), action[-2], action[-1]])
    w = action_to_weights(action, "interp", tau, tracker)
    w_perm = action_to_weights(permuted_action, "interp", tau, permuted)
    torch.testing.assert_close(w_perm, w[list(perm)], rtol=1e-6, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), tracker=_run_states(max_tasks=4), copies=st.integers(2, 3))
def test_interp_weights_of_duplicated_tasks_are_the_original_weights(
    data: st.DataObject, tracker: GapTracker, copies: int
) -> None:
    """The same formula for any T: each copy of a task gets the task's weight in the T-task run
    (the per-task entries copied with it, the two global entries shared)."""
    t = tracker.n_tasks
    action = np.array(data.draw(st.lists(st.floats(-1.5, 1.5), min_size=t + 2, max_size=t + 2)))
    assert tracker.base_losses is not None and tracker.losses is not None
    big = _state(
        tracker.base_losses.tolist() * copies,
        tracker.losses.tolist() * copies,
        tracker.lower_bounds.tolist() * copies,
    )
    big_action = np.array([*list(action[:t]) * copies, action[-2], action[-1]])
    w = action_to_weights(action, "interp", 1.0, tracker)
    w_big = action_to_weights(big_action, "interp", 1.0, big)
    torch.testing.assert_close(w_big, w.repeat(copies), rtol=1e-5, atol=1e-6)


def test_interp_stacked_rows_equal_single_calls_bit_for_bit() -> None:
    runs = [
        _state([2.0, 1.0, 4.0], [0.3, 1.7, 9.0]),
        _state([1.0, 1.0, 1.0], [1.0, 0.2, 0.5]),
        _state([5.0, 0.5, 3.0], [4.0, 0.6, 0.1]),
        _state([0.9, 0.8, 0.7], [0.0, 0.4, 2.0]),
    ]
    amap = InterpMap(1.3)
    actions = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.5, -0.2, 1.0, 0.3, -0.4],
            [-3.0, 2.0, 0.1, 5.0, -5.0],
            [0.9, 0.9, -0.9, 0.7, 0.8],
        ],
        dtype=torch.float64,
    )
    prepared = amap.prepare(actions)
    for i, row in enumerate(actions):
        assert torch.equal(prepared[i], amap.prepare(row))
    gaps, losses = [], []
    for r in runs:
        assert r.gaps is not None and r.losses is not None
        gaps.append(r.gaps)
        losses.append(r.losses)
    stacked = StackedGaps(torch.stack(gaps), torch.stack(losses), runs[0].lower_bounds, 3)
    w = amap.weights(prepared, stacked)
    assert w.shape == (4, 3) and w.dtype == torch.float32
    for i, run in enumerate(runs):
        assert torch.equal(w[i], amap.weights(prepared[i], run))
    # Nothing held (None) row by row is IGBv1's weights of each run.
    unheld = amap.weights(None, stacked)
    for i in range(len(runs)):
        assert torch.equal(unheld[i], igbv1_weights(gaps[i]).float())
    assert torch.equal(unheld[0], w[0])  # the zero action of run 0


def test_interp_refuses_bad_actions_and_missing_gaps() -> None:
    tracker = _state([1.0, 1.0, 1.0], [0.5, 0.6, 0.7])
    for bad in (np.zeros(3), np.zeros(4), np.zeros(6), np.array([0.0, 0.0, 0.0, np.nan, 0.0])):
        with pytest.raises(ValueError, match="action"):
            action_to_weights(bad, "interp", 1.0, tracker)
    with pytest.raises(ValueError, match=r"action must have shape \(5,\), got \(3,\)"):
        HeldAction("interp", 1.0).hold(np.zeros(3), 3)
    early = GapTracker(3, (0, 2))
    early.update(torch.ones(3, dtype=torch.float64), 0, 1e-3)
    with pytest.raises(ValueError, match="'interp' needs the current gaps"):
        InterpMap().weights(InterpMap().prepare(torch.zeros(5, dtype=torch.float64)), early)
    assert torch.equal(HeldAction("interp", 1.0).weights(early), torch.ones(3))  # base window
