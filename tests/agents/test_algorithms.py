"""Every algorithm learns on the tiny env, saves/loads/predicts identically and exports."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.build import build_model
from agents.config import AgentConfig, get_algorithm
from agents.export import export_model
from agents.train import load_model, train_agent
from agents.vec_env import make_vec_env
from igb_env import make_env
from mtl_backends.policy import load_policy
from mtl_backends.registry import ConfigError
from tests.agents._configs import TINY_ENV, tiny_agent

HAS_CONTRIB = importlib.util.find_spec("sb3_contrib") is not None
ALGORITHMS = ["ppo", "a2c", "sac", "td3"] + (["tqc"] if HAS_CONTRIB else [])

HYPER: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 20, "batch_size": 20, "n_epochs": 2},
    "a2c": {"n_steps": 5},
    "sac": {"learning_starts": 20, "batch_size": 32, "buffer_size": 1000},
    "td3": {"learning_starts": 20, "batch_size": 32, "buffer_size": 1000},
    "tqc": {"learning_starts": 20, "batch_size": 32, "buffer_size": 1000},
}


def _params(model: Any) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.policy.parameters()])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_learns_saves_loads_predicts_and_exports(algorithm: str, tmp_path: Path) -> None:
    config = tiny_agent(
        algorithm,
        hyperparameters=HYPER[algorithm],
        total_timesteps=80,  # a multiple of every rollout size (PPO 2 x 20, A2C 2 x 5)
        checkpoint_every=None,
        reference_instances=0,
        eval_every=None,
    )
    venv = make_vec_env(config)
    initial = _params(build_model(config, venv, tensorboard_log=None))
    venv.close()
    run = train_agent(config, tmp_path / algorithm, progress_bar=False)
    model = load_model(run)
    assert model.num_timesteps == 80
    assert not torch.equal(_params(model), initial), "no gradient update happened"

    env = make_env(TINY_ENV)
    obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
    again = get_algorithm(algorithm).load(run / "model.zip", device="cpu")
    first, _ = model.predict(obs, deterministic=True)
    second, _ = again.predict(obs, deterministic=True)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (4, env.n_tasks) and np.all(np.abs(first) <= 1)

    policy = load_policy(export_model(model, TINY_ENV, tmp_path / "policy"))
    exported = np.stack([policy.act(row).numpy() for row in obs])
    np.testing.assert_allclose(exported, first, atol=1e-5)


def test_tqc_without_contrib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_contrib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("sb3_contrib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_contrib)
    with pytest.raises(ConfigError, match=r"igb-rl\[contrib\]"):
        AgentConfig(algorithm="tqc")


def test_vectorised_envs_get_distinct_seeds_and_instance_offsets() -> None:
    env = {
        **TINY_ENV,
        "instance_set": {"range": [10_000, 900_000]},
        "instance_order": "round_robin",
    }
    venv = make_vec_env(tiny_agent(n_envs=3, env=env))
    try:
        venv.reset()
        first = venv.get_attr("instance")
        states = venv.env_method("get_instance_state")
    finally:
        venv.close()
    assert len(set(first)) == 3
    assert len({s["sampler"]["cursor"] for s in states}) == 3
    assert len({str(s["np_random"]) for s in states}) == 3


def test_defaults_per_algorithm_and_td3_exploration_noise() -> None:
    assert AgentConfig(algorithm="a2c").hyperparameters == {}
    assert AgentConfig().hyperparameters["n_epochs"] == 10  # PPO keeps the prototype's setting
    with pytest.raises(ConfigError, match="off-policy"):
        AgentConfig(algorithm="ppo", hyperparameters={"action_noise_std": 0.2})
    config = tiny_agent("td3", hyperparameters={"learning_starts": 5}, n_envs=1)
    venv = make_vec_env(config)
    try:
        model: Any = build_model(config, venv, tensorboard_log=None)
    finally:
        venv.close()
    assert model.action_noise is not None and np.allclose(model.action_noise._sigma, 0.1)
