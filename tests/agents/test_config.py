"""``agents.config``: ``AgentConfig`` defaults and validation, the algorithm registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stable_baselines3 import A2C, PPO, SAC, TD3

from agents.config import (
    ALGORITHM_NAMES,
    OFF_POLICY,
    VEC_ENVS,
    AgentConfig,
    get_algorithm,
    group_env_configs,
    load_agent_config,
    resolve_env_config,
)
from igb_env.config import load_env_config
from mtl_backends.registry import ConfigError

PPO_DEFAULTS = {
    "n_steps": 72,
    "batch_size": 64,
    "n_epochs": 10,
    "gamma": 0.99,
    "learning_rate": 3e-4,
    "ent_coef": 0.0,
}


def test_defaults_are_the_prototype_agent() -> None:
    config = AgentConfig()
    assert config.algorithm == "ppo"
    assert config.policy_kwargs == {"net_arch": [64, 64], "log_std_init": -1.0}
    assert config.hyperparameters == PPO_DEFAULTS
    assert (config.n_envs, config.vec_env, config.seed) == (2, "subproc", 0)
    assert (config.total_timesteps, config.time_budget_s) == (100_000, None)
    assert (config.checkpoint_every, config.reference_instances, config.eval_every) == (
        2000,
        2,
        5000,
    )
    assert config.env == {}


def test_default_mutables_are_not_shared() -> None:
    a, b = AgentConfig(), AgentConfig()
    assert a.policy_kwargs is not b.policy_kwargs
    assert a.hyperparameters is not b.hyperparameters


@pytest.mark.parametrize("algorithm", ["sac", "td3", "a2c"])
def test_other_algorithms_drop_the_ppo_rollout_settings(algorithm: str) -> None:
    assert AgentConfig(algorithm=algorithm).hyperparameters == {}
    own = {"learning_rate": 1e-3}
    assert AgentConfig(algorithm=algorithm, hyperparameters=own).hyperparameters == own


def test_get_algorithm() -> None:
    assert [get_algorithm(n) for n in ("ppo", "sac", "td3", "a2c")] == [PPO, SAC, TD3, A2C]
    assert ALGORITHM_NAMES == ("ppo", "sac", "td3", "a2c", "tqc")
    assert set(OFF_POLICY) <= set(ALGORITHM_NAMES)
    with pytest.raises(
        ConfigError, match="unknown algorithm 'dqn'; valid choices: ppo, sac, td3, a2c, tqc"
    ):
        get_algorithm("dqn")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"algorithm": "ddpg"}, "unknown algorithm 'ddpg'; valid choices: ppo, sac, td3, a2c"),
        ({"vec_env": "threads"},
         "unknown vec_env 'threads'; valid choices: dummy, subproc, batched"),
        ({"policy": "lstm"}, "unknown policy 'lstm'; valid choices: mlp, set"),
        ({"env_groups": ({"benchmark": {"n_tasks": 2}},)}, "env_groups need policy: set"),
        ({"policy": "set", "algorithm": "sac"}, "policy 'set' trains with ppo or a2c, not 'sac'"),
        ({"policy": "set", "policy_kwargs": {"net_arch": [8]}},
         "policy 'set' does not take policy_kwargs net_arch; valid keys: hidden, activation_fn"),
        ({"policy": "set", "env_groups": (3,)}, "env_groups[0] must be a mapping of env settings"),
        ({"n_envs": 0}, "n_envs must be >= 1, got 0"),
        ({"total_timesteps": 0}, "total_timesteps must be >= 1, got 0"),
        ({"time_budget_s": 0.0}, "time_budget_s must be positive or null, got 0.0"),
        ({"time_budget_s": -5.0}, "time_budget_s must be positive or null, got -5.0"),
        ({"eval_every": 0}, "eval_every must be >= 1 or null, got 0"),
        ({"checkpoint_every": -1}, "checkpoint_every must be >= 1 or null, got -1"),
        ({"policy_kwargs": {"activation_fn": "gelu"}},
         "unknown policy_kwargs.activation_fn 'gelu'; valid choices: "),
        ({"hyperparameters": {"action_noise_std": 0.1}},
         "action_noise_std applies to off-policy algorithms (sac, td3, tqc)"),
        ({"algorithm": "a2c", "hyperparameters": {"action_noise_std": 0.1}},
         "action_noise_std applies to off-policy algorithms"),
    ],
)  # fmt: skip
def test_invalid_values_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        AgentConfig(**changes)
    assert message in str(info.value)


def test_valid_edge_values() -> None:
    AgentConfig(eval_every=None, checkpoint_every=None, time_budget_s=0.5, n_envs=1)
    AgentConfig(vec_env="dummy", policy_kwargs={"activation_fn": "relu", "net_arch": [8]})
    for algorithm in ("sac", "td3"):
        config = AgentConfig(algorithm=algorithm, hyperparameters={"action_noise_std": 0.2})
        assert config.hyperparameters == {"action_noise_std": 0.2}
    assert set(VEC_ENVS) == {"dummy", "subproc", "batched"}
    set_policy = AgentConfig(policy="set", env_groups=({"benchmark": {"n_tasks": 2}},))
    # The MLP default policy_kwargs become the set policy's defaults; explicit ones stay.
    assert set_policy.policy_kwargs == {"hidden": 64, "log_std_init": -1.0}
    assert AgentConfig(policy="set", policy_kwargs={"hidden": 8}).policy_kwargs == {"hidden": 8}


def test_env_groups_merge_over_env_key_by_key() -> None:
    config = AgentConfig(
        policy="set",
        env={"preset": "smoke", "train": {"lr": 0.01}},
        env_groups=({"benchmark": {"n_tasks": 2}}, {"benchmark": {"n_tasks": 5}, "tau": 2.0}),
    )
    first, second = group_env_configs(config)
    assert first["benchmark"]["n_tasks"] == 2 and second["benchmark"]["n_tasks"] == 5
    # The smoke preset's other benchmark arguments and the env's train settings survive.
    for group in (first, second):
        assert group["benchmark"]["input_dim"] == 20 and group["train"]["lr"] == 0.01
    assert (first["tau"], second["tau"]) == (1.0, 2.0)
    assert group_env_configs(AgentConfig(env={"preset": "smoke"}))[0]["benchmark"]["n_train"] == 200
    bad = AgentConfig(policy="set", env_groups=({"steps_per_action": 0},))
    with pytest.raises(ConfigError, match=r"env_groups\[0\]: steps_per_action must be >= 1"):
        group_env_configs(bad)


def test_load_agent_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "algorithm: sac\nn_envs: 1\nvec_env: dummy\nseed: 3\n"
        "hyperparameters: {learning_starts: 10}\nenv: {preset: smoke}\n"
    )
    config = load_agent_config(path)
    assert (config.algorithm, config.n_envs, config.vec_env, config.seed) == ("sac", 1, "dummy", 3)
    assert config.hyperparameters == {"learning_starts": 10}
    assert config.env == {"preset": "smoke"}
    path.write_text("algorithm: ppo\nn_timesteps: 10\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml: unknown key\(s\) 'n_timesteps'"):
        load_agent_config(path)
    path.write_text("n_envs: two\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml\.n_envs: expected an integer"):
        load_agent_config(path)
    with pytest.raises(ConfigError, match="unknown vec_env"):
        path.write_text("vec_env: threads\n")
        load_agent_config(path)


def test_resolve_env_config_fills_every_default() -> None:
    assert resolve_env_config({}) == load_env_config(None).to_dict()
    smoke = resolve_env_config({"preset": "smoke", "tau": 2.0})
    assert smoke["steps_per_action"] == 10 and smoke["tau"] == 2.0
    assert smoke["train"]["steps"] == 60
    assert "preset" not in smoke
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        resolve_env_config({"preset": "huge"})
