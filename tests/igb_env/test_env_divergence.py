"""``IGBEnv`` when a run diverges before the agent's first decision (issue 18).

Before, ``reset`` raised ``DivergenceError`` from inside the base window, although the env promises
``info["diverged"]``; an agent's vectorised env then crashed on such an instance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from igb_env import make_env

# SGD at lr 1e6 explodes within the first steps of the 10-step base window.
EXPLODES: dict[str, Any] = {"preset": "smoke", "train": {"optimizer": "sgd", "lr": 1.0e6}}


def test_reset_reports_a_base_window_divergence_and_the_next_step_ends_the_episode() -> None:
    env = make_env(EXPLODES)
    obs, info = env.reset(seed=0)
    assert info["diverged"] is True
    assert info["train_step"] < 10  # inside the base window
    assert isinstance(info["instance"], int)
    assert env.observation_space.contains(obs)
    low, high = env._low, env._high  # the Box bounds
    assert np.array_equal(obs, np.clip(np.zeros_like(obs), low, high))
    action = np.zeros(env.action_dim, np.float32)
    with pytest.raises(ValueError):  # a bad action is still refused first
        env.step(np.full(env.action_dim, np.nan, np.float32))
    obs2, reward, terminated, truncated, info2 = env.step(action)
    assert (terminated, truncated, reward, info2["diverged"]) == (True, False, 0.0, True)
    assert type(reward) is float and env.observation_space.contains(obs2)
    assert info2["instance"] == info["instance"] and info2["train_step"] == info["train_step"]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(action)
    assert env.reset(seed=1)[1]["diverged"] is True  # usable again


def test_a_healthy_instance_after_a_diverged_one_is_unaffected() -> None:
    env = make_env({"preset": "smoke"})
    fresh = make_env({"preset": "smoke"})
    env.reset(options={"instance": 7})
    env._diverged_at_reset = True  # as if the previous instance had diverged in its base window
    obs, info = env.reset(options={"instance": 7})
    ref_obs, _ = fresh.reset(options={"instance": 7})
    assert info["diverged"] is False and np.array_equal(obs, ref_obs)
    action = np.zeros(env.action_dim, np.float32)
    assert env.step(action)[1] == fresh.step(action)[1]
