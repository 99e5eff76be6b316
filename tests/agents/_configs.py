"""Tiny env and agent configurations shared by the agent tests."""

from __future__ import annotations

from typing import Any

from agents.config import AgentConfig
from agents.experiments.quickstart import TINY

# A seconds-scale env, the one `igb quickstart --tiny` uses: 60 steps with a 10-step base window,
# K = 10 (5 decisions per episode).
TINY_ENV: dict[str, Any] = dict(TINY.env)

# The sanity instance of the learning test: task 2's targets are pure noise (scale 0.01 under
# unit label noise), so weighting it down helps both tasks' validation losses.
NOISE_ENV: dict[str, Any] = {
    "benchmark": {
        "name": "synthetic",
        "n_tasks": 2,
        "scales": [1.0, 0.01],
        "noise": [0.0, 1.0],
        "n_train": 200,
        "n_val": 200,
        "n_test": 200,
        "input_dim": 20,
        "output_dim": 5,
        "hidden": [32, 32],
    },
    "train": {"steps": 100, "batch_size": 20, "base_window": [5, 10], "lr": 0.003},
    "steps_per_action": 10,
    "action_mode": "absolute",
    "val_batch_size": 200,
    "instances": [10_000, 1_000_000],
}


def tiny_agent(algorithm: str = "ppo", **changes: Any) -> AgentConfig:
    """A few-hundred-step agent on ``TINY_ENV`` in one process."""
    hyper: dict[str, Any] = (
        {"n_steps": 20, "batch_size": 20, "n_epochs": 2}
        if algorithm == "ppo"
        else {"learning_starts": 20, "batch_size": 32, "buffer_size": 1000}
    )
    base = AgentConfig(
        algorithm=algorithm,
        hyperparameters=hyper,
        total_timesteps=80,
        n_envs=2,
        vec_env="dummy",
        env=TINY_ENV,
        checkpoint_every=40,
        reference_instances=1,
    )
    return AgentConfig(**{**base.__dict__, **changes})


# A set policy over two env groups (T = 2 and T = 3) of the smoke env, observing feature table v2
# through the interp map; held-out instances 5000 and 5001 in each group.
SET_ENV: dict[str, Any] = {
    "preset": "smoke",
    "feature_table": "v2",
    "action_mode": "interp",
    "instances": [10_000, 1_000_000],
    "test_set": [5000, 5001],
}
SET_GROUPS: tuple[dict[str, Any], ...] = (
    {"benchmark": {"n_tasks": 2}},
    {"benchmark": {"n_tasks": 3}},
)


def tiny_set_agent(**changes: Any) -> AgentConfig:
    """PPO with the set policy on ``SET_GROUPS``: 2 sub-envs per group, rollouts of 40 steps."""
    base = AgentConfig(
        algorithm="ppo",
        policy="set",
        env=SET_ENV,
        env_groups=SET_GROUPS,
        policy_kwargs={"hidden": 16, "log_std_init": -1.0},
        hyperparameters={"n_steps": 10, "batch_size": 20, "n_epochs": 2},
        total_timesteps=120,
        n_envs=2,
        vec_env="batched",
        checkpoint_every=40,
        reference_instances=0,
        eval_every=None,
    )
    return AgentConfig(**{**base.__dict__, **changes})
