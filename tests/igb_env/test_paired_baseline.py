"""``BatchedIGBEnv(paired_baseline=True)``: rewards relative to a zero-action twin of each run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agents.config import AgentConfig
from igb_env.vector import BatchedIGBEnv
from mtl_backends.registry import ConfigError

# The interp map (zero action = IGBv1) on the smoke preset: 5 env steps per episode, T = 3.
INTERP: dict[str, Any] = {"preset": "smoke", "action_mode": "interp", "feature_table": "v2"}
INSTANCES = [1000, 1001, 1002]


def _actions(steps: int, n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (steps, n, dim)).astype(np.float32)


def test_the_zero_action_earns_exactly_zero() -> None:
    """A sub-env that plays its twin's action trains the twin's run: reward 0.

    To float rounding only: the stacked kernels may round one slot's rows differently from
    another's (~1e-7 on rewards of ~1e-2).
    """
    env = BatchedIGBEnv(len(INSTANCES), INTERP, adam="foreach", paired_baseline=True)
    env.reset(options={"instances": INSTANCES})
    zero = np.zeros((len(INSTANCES), env.action_dim), dtype=np.float32)
    for _ in range(5):
        _, rewards, terminated, _, info = env.step(zero)
        np.testing.assert_allclose(rewards, 0.0, atol=2e-6)
        assert (np.abs(info["baseline_reward"]) > 1e-4).all()  # the twins earn real rewards
    assert terminated.all()


def test_rewards_are_the_plain_rewards_minus_the_zero_action_rewards() -> None:
    """Paired reward = reward of the same actions in a plain env - reward of the zero action."""
    n = len(INSTANCES)
    paired = BatchedIGBEnv(n, INTERP, adam="foreach", paired_baseline=True)
    plain = BatchedIGBEnv(n, INTERP, adam="foreach")
    ref = BatchedIGBEnv(n, INTERP, adam="foreach")
    obs_p, _ = paired.reset(options={"instances": INSTANCES})
    obs_a, _ = plain.reset(options={"instances": INSTANCES})
    ref.reset(options={"instances": INSTANCES})
    np.testing.assert_array_equal(obs_p, obs_a)  # the sub-envs see their own runs only
    zero = np.zeros((n, paired.action_dim), dtype=np.float32)
    for actions in _actions(5, n, paired.action_dim):
        obs_p, r_p, term_p, _, info = paired.step(actions)
        obs_a, r_a, term_a, _, _ = plain.step(actions)
        _, r_0, _, _, _ = ref.step(zero)
        np.testing.assert_allclose(obs_p, obs_a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(info["baseline_reward"], r_0, rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(r_p, r_a - r_0, rtol=1e-5, atol=4e-6)
        np.testing.assert_array_equal(term_p, term_a)
    assert not np.allclose(r_a, 0.0)


def test_an_ended_episode_restarts_with_its_twin_on_the_next_instance() -> None:
    """After autoreset every sub-env and its twin run one new instance: zero action, reward 0."""
    n = 2
    env = BatchedIGBEnv(n, INTERP, adam="foreach", paired_baseline=True)
    env.reset(seed=4)
    for actions in _actions(5, n, env.action_dim):
        env.step(actions)
    zero = np.zeros((n, env.action_dim), dtype=np.float32)
    _, rewards, _, _, _ = env.step(zero)  # next_step autoreset: reward 0 by the API
    assert (rewards == 0.0).all()
    assert env.engine.instances[:n] == env.engine.instances[n:]
    for _ in range(3):
        _, rewards, _, _, info = env.step(zero)
        np.testing.assert_allclose(rewards, 0.0, atol=2e-6)
        assert (np.abs(info["baseline_reward"]) > 1e-4).all()


def test_state_dict_resumes_the_twins_exactly() -> None:
    n = 2
    env = BatchedIGBEnv(n, INTERP, adam="foreach", paired_baseline=True)
    env.reset(options={"instances": INSTANCES[:n]})
    actions = _actions(4, n, env.action_dim, seed=2)
    env.step(actions[0])
    state = env.state_dict()
    resumed = BatchedIGBEnv(n, INTERP, adam="foreach", paired_baseline=True)
    resumed.load_state_dict(state)
    for a in actions[1:]:
        obs, rewards, *_ = env.step(a)
        obs_r, rewards_r, *_ = resumed.step(a)
        np.testing.assert_array_equal(obs, obs_r)
        np.testing.assert_array_equal(rewards, rewards_r)


def test_the_agent_config_needs_the_batched_env() -> None:
    with pytest.raises(ConfigError, match="paired_baseline needs vec_env: batched"):
        AgentConfig(paired_baseline=True, vec_env="subproc")
    assert AgentConfig(paired_baseline=True, vec_env="batched").paired_baseline
