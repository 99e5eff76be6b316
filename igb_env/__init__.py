"""igb_env: an MTL training run as a Gymnasium environment.

``IGBEnv`` is registered as ``igb_env/IGB-v0`` on import::

    import gymnasium as gym
    import igb_env

    env = gym.make("igb_env/IGB-v0", preset="tiny")
    env = igb_env.make_env({"preset": "tiny", "steps_per_action": 10})
    envs = gym.make_vec("igb_env/IGB-v0", num_envs=16, vectorization_mode="vector_entry_point",
                        config={"preset": "tiny"})  # N runs trained together (igb_env.vector)

This package imports gymnasium but never stable_baselines3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from igb_env.actions import action_space
from igb_env.config import PRESETS, EnvConfig, load_env_config
from igb_env.env import ENV_ID, IGBEnv
from igb_env.observations import observation_space
from igb_env.rewards import REWARDS, RewardInput
from igb_env.rollouts import Rollout, rollout_baseline, rollout_policy


def make_env(config: Mapping[str, Any] | None = None) -> IGBEnv:
    """Build an ``IGBEnv`` from a plain config mapping (picklable; one argument).

    SB3's ``make_vec_env`` and ``gymnasium.make_vec`` take it as the env factory, e.g.
    ``functools.partial(make_env, {"preset": "tiny"})``. ``make_env({})`` is the embedded default
    (the synthetic benchmark, the prototype's 1000-step episodes; ``{"preset": "tiny"}`` for a
    seconds-scale one).
    """
    return IGBEnv(dict(config or {}))


if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="igb_env.env:IGBEnv",
        vector_entry_point="igb_env.vector:BatchedIGBEnv",
        nondeterministic=False,
    )

__all__ = [
    "ENV_ID",
    "PRESETS",
    "REWARDS",
    "EnvConfig",
    "IGBEnv",
    "RewardInput",
    "Rollout",
    "action_space",
    "load_env_config",
    "make_env",
    "observation_space",
    "rollout_baseline",
    "rollout_policy",
]
