"""The action space and the env's handling of actions: clipping, refusals, the two maps."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from igb_env import IGBEnv, make_env
from igb_env.actions import action_space
from mtl_backends.weightings import igbv1_weights

# The smoke preset (60 steps, base window [5, 10)) with K = 1, so that an env step is one trainer
# step and its info weights are exactly the weights of that step.
ONE_STEP: dict[str, Any] = {"preset": "smoke", "steps_per_action": 1, "train": {"steps": 14}}


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_action_space_box(size: int) -> None:
    box = action_space(size)
    assert isinstance(box, gym.spaces.Box)
    assert box.shape == (size,) and box.dtype == np.float32
    np.testing.assert_array_equal(box.low, np.full(size, -1.0, np.float32))
    np.testing.assert_array_equal(box.high, np.full(size, 1.0, np.float32))
    assert box.contains(np.zeros(size, np.float32))
    assert box.contains(np.ones(size, np.float32))
    assert not box.contains(np.full(size, 1.01, np.float32))
    assert not box.contains(np.zeros(size + 1, np.float32))


def test_env_action_space_has_one_entry_per_task() -> None:
    env = make_env({"preset": "smoke", "benchmark": {"name": "synthetic", "n_tasks": 2}})
    assert env.action_space == action_space(2)
    assert env.action_dim == 2


def test_step_before_reset_is_refused() -> None:
    env = make_env({"preset": "smoke"})
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        env.step(np.zeros(3, np.float32))


def _weighting_action(env: IGBEnv) -> torch.Tensor | None:
    assert env.episode is not None
    weighting = env.episode.trainer.weighting
    action = getattr(weighting, "action", None)
    return action


BAD_ACTIONS: list[tuple[Any, str]] = [
    (np.array([0.0, np.nan, 0.0]), "finite"),
    (np.array([np.inf, 0.0, 0.0]), "finite"),
    ([0.0, 0.0, -np.inf], "finite"),
    (np.zeros(2), r"shape \(3,\)"),
    (np.zeros(4), r"shape \(3,\)"),
    (np.zeros((3, 1)), r"shape \(3,\)"),
    ("abc", "numeric vector of length 3"),
]


def test_bad_actions_raise_and_leave_the_env_unchanged() -> None:
    env = make_env({"preset": "smoke"})
    env.reset(options={"instance": 5})
    first = np.array([0.5, -0.25, 1.0], np.float32)
    obs_after_first, *_ = env.step(first)
    assert env.episode is not None
    trainer = env.episode.trainer
    step_before = trainer.step_count
    obs_before = env.episode.observation().copy()
    for bad, match in BAD_ACTIONS:
        with pytest.raises(ValueError, match=match):
            env.step(bad)
        assert trainer.step_count == step_before
        np.testing.assert_array_equal(env.episode.observation(), obs_before)
        held = _weighting_action(env)
        assert held is not None and torch.equal(held, torch.from_numpy(first).double())
    # The next valid step continues as if the bad actions had never been sent.
    obs, reward, *_ = env.step(np.zeros(3, np.float32))
    fresh = make_env({"preset": "smoke"})
    fresh.reset(options={"instance": 5})
    obs_fresh_first, *_ = fresh.step(first)
    np.testing.assert_array_equal(obs_after_first, obs_fresh_first)
    obs_fresh, reward_fresh, *_ = fresh.step(np.zeros(3, np.float32))
    np.testing.assert_array_equal(obs, obs_fresh)
    assert reward == reward_fresh


@pytest.mark.parametrize("mode", ["absolute", "residual"])
def test_actions_are_clipped_to_the_box(mode: str) -> None:
    results = []
    for action in ([4.0, -2.5, 0.5], [1.0, -1.0, 0.5]):
        env = make_env({**ONE_STEP, "action_mode": mode})
        env.reset(options={"instance": 2})
        obs, reward, _, _, info = env.step(np.array(action))
        results.append((obs, reward, info["weights"]))
        # the env holds the action as given (validated, not clipped); the map clips it
        held = _weighting_action(env)
        assert held is not None and held.tolist() == action
    (o1, r1, w1), (o2, r2, w2) = results
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(w1, w2)
    assert r1 == r2


def test_list_action_equals_array_action() -> None:
    env = make_env(ONE_STEP)
    env.reset(options={"instance": 8})
    out_list = env.step([0.25, -0.5, 0.0])  # type: ignore[arg-type]
    env.reset(options={"instance": 8})
    out_array = env.step(np.array([0.25, -0.5, 0.0], np.float32))
    np.testing.assert_array_equal(out_list[0], out_array[0])
    assert out_list[1] == out_array[1]


def test_residual_zero_action_gives_igbv1_weights_of_the_batch() -> None:
    env = make_env(ONE_STEP)
    _, info = env.reset(options={"instance": 11})
    terminated = False
    steps = 0
    while not terminated:
        gaps = torch.from_numpy(info["gaps"])
        _, _, terminated, _, info_next = env.step(np.zeros(3, np.float32))
        # The decision applies to the batch absorbed before it: IGBv1 of that batch's gaps.
        expected = igbv1_weights(gaps).to(torch.float32).to(torch.float64).numpy()
        np.testing.assert_array_equal(info_next["weights"], expected)
        info = info_next
        steps += 1
    assert steps == 14 - 10


def test_absolute_zero_action_gives_unit_weights() -> None:
    env = make_env({"preset": "smoke", "action_mode": "absolute"})
    env.reset(options={"instance": 4})
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step(np.zeros(3, np.float32))
        np.testing.assert_array_equal(info["weights"], np.ones(3))


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_absolute_weights_formula_and_ratio_bound(tau: float) -> None:
    env = make_env({"preset": "smoke", "action_mode": "absolute", "tau": tau})
    env.reset(options={"instance": 6})
    rng = np.random.default_rng(int(tau * 10))
    actions = [np.array([1.0, -1.0, 0.0]), np.array([-3.0, 5.0, 0.2])]
    actions += [rng.uniform(-1.5, 1.5, 3) for _ in range(3)]
    bound = math.exp(2.0 * tau)
    for action in actions:
        _, _, _, _, info = env.step(action.astype(np.float32))
        a = np.clip(action.astype(np.float32).astype(np.float64), -1.0, 1.0)
        expected = 3.0 * np.exp(tau * a) / np.exp(tau * a).sum()
        np.testing.assert_allclose(info["weights"], expected, rtol=1e-6)
        w = info["weights"]
        assert w.max() / w.min() <= bound * (1.0 + 1e-6)
    # The extreme action [1, -1, 0] reaches the bound exactly.
    env.reset(options={"instance": 6})
    _, _, _, _, info = env.step(np.array([1.0, -1.0, 0.0], np.float32))
    assert info["weights"][0] / info["weights"][1] == pytest.approx(bound, rel=1e-6)


def test_residual_weights_formula() -> None:
    tau = 0.7
    env = make_env({**ONE_STEP, "tau": tau})
    _, info = env.reset(options={"instance": 3})
    action = np.array([0.9, -0.4, 2.0], np.float32)
    _, _, _, _, info_next = env.step(action)
    logits = info["gaps"] + tau * np.clip(action.astype(np.float64), -1.0, 1.0)
    expected = 3.0 * np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(info_next["weights"], expected, rtol=1e-6)
    assert info_next["weights"].sum() == pytest.approx(3.0, rel=1e-6)
