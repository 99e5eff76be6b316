"""Reference rollouts: returns, baselines through the env's engine, policy rollouts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from igb_env import make_env
from igb_env.instances import BenchmarkCache
from igb_env.rollouts import Rollout, rollout_baseline, rollout_policy
from mtl_backends.registry import ConfigError
from mtl_backends.weightings import LOSS_WEIGHTINGS

# smoke with a budget K does not divide: windows of 10, 10, 10, 10 and 7 steps.
CFG: dict[str, Any] = {"preset": "smoke", "train": {"steps": 57}}


def test_discounted_return_hand_values() -> None:
    rollout = Rollout("ew", 0, rewards=[1.0, 2.0, 3.0])
    assert rollout.discounted_return(0.5) == 1.0 + 0.5 * 2.0 + 0.25 * 3.0 == 2.75
    assert rollout.discounted_return(1.0) == rollout.total_reward == 6.0
    assert rollout.discounted_return(0.0) == 1.0
    assert Rollout("ew", 0, rewards=[-2.0, 4.0]).discounted_return(0.9) == pytest.approx(1.6)
    empty = Rollout("ew", 0)
    assert empty.discounted_return(0.99) == 0.0 and empty.total_reward == 0.0
    assert type(empty.total_reward) is float and type(empty.discounted_return(0.5)) is float


def _env_rollout(cfg: dict[str, Any], action: np.ndarray, instance: int) -> Rollout:
    env = make_env(cfg)
    env.reset(options={"instance": instance})
    out = Rollout("env", instance)
    terminated = False
    while not terminated:
        _, reward, terminated, _, info = env.step(action)
        out.rewards.append(reward)
        out.weights.append(info["weights"].tolist())
        out.diverged = info["diverged"]
    return out


@pytest.mark.parametrize("reward", ["val_log_improvement", "min_gap_decrease"])
def test_igbv1_baseline_equals_residual_zero_actions(reward: str) -> None:
    cfg = {**CFG, "reward": reward}
    env = _env_rollout(cfg, np.zeros(3, np.float32), instance=21)
    igb = rollout_baseline(cfg, "igbv1", 21)
    assert len(igb.rewards) == 5
    assert igb.rewards == env.rewards
    assert igb.weights == env.weights
    assert igb.weighting == "igbv1" and igb.instance == 21 and not igb.diverged


def test_si_baseline_equals_absolute_zero_actions() -> None:
    cfg = {**CFG, "action_mode": "absolute"}
    env = _env_rollout(cfg, np.zeros(3, np.float32), instance=5)
    si = rollout_baseline(cfg, "si", 5)
    assert si.rewards == env.rewards
    assert si.weights == env.weights == [[1.0, 1.0, 1.0]] * 5


def test_baseline_from_a_mapping_with_arguments() -> None:
    rollout = rollout_baseline(CFG, {"name": "tuned_static", "weights": [1.0, 2.0, 3.0]}, 1)
    assert rollout.weighting == "tuned_static"
    # the weights are normalised to sum to T: [1, 2, 3] * 3 / 6
    assert rollout.weights == [[0.5, 1.0, 1.5]] * 5
    ew = rollout_baseline(CFG, {"name": "ew"}, 1)
    assert ew.rewards == rollout_baseline(CFG, "ew", 1).rewards
    assert ew.total_reward != rollout.total_reward


def test_unknown_baseline_lists_the_weightings() -> None:
    with pytest.raises(ConfigError, match="unknown loss weighting 'nope'") as err:
        rollout_baseline(CFG, "nope", 0)
    choices = str(err.value).split("valid choices: ")[1].split(", ")
    assert choices == sorted(LOSS_WEIGHTINGS) and "igbv1" in choices


def test_a_shared_benchmark_cache_changes_nothing() -> None:
    env = make_env(CFG)
    cache = BenchmarkCache(env.config.benchmark)
    a = rollout_baseline(CFG, "igbv1", 3, benchmarks=cache)
    b = rollout_baseline(CFG, "igbv1", 3)
    c = env.rollout_baseline("igbv1", 3)
    assert a.rewards == b.rewards == c.rewards
    # Another instance is another problem.
    assert rollout_baseline(CFG, "igbv1", 4).rewards != a.rewards


def test_diverging_baseline_ends_with_the_penalty() -> None:
    cfg = {
        **CFG,
        "train": {
            "steps": 57,
            "optimizer": "sgd",
            "lr_schedule": "step",
            "lr_step_size": 10,
            "lr_gamma": 1e12,
        },
        "divergence_penalty": -3.0,
    }
    rollout = rollout_baseline(cfg, "igbv1", 0)
    assert rollout.diverged and rollout.rewards[-1] == -3.0
    assert len(rollout.rewards) < 5


def test_rollout_policy_returns_the_actions_and_rewards() -> None:
    env = make_env(CFG)
    seen: list[np.ndarray] = []

    def act(obs: np.ndarray) -> np.ndarray:
        seen.append(obs)
        return np.zeros(3, np.float32)

    rewards, actions = rollout_policy(env, act, 21)
    assert len(rewards) == len(actions) == len(seen) == env.episode_length == 5
    assert all(a.shape == (3,) and not a.any() for a in actions)
    assert all(env.observation_space.contains(o) for o in seen)
    assert rewards == rollout_baseline(CFG, "igbv1", 21).rewards
    assert env.instance == 21
