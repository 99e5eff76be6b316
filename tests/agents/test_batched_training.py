"""Agent training on the batched env (``vec_env: batched``): SB3's ``VecEnv`` contract, PPO,
checkpoints and resume, and the sub-envs seen through ``BatchedVecEnv`` equal separate envs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.config import AgentConfig
from agents.train import resume_agent, train_agent
from agents.vec_env import BatchedVecEnv, make_vec_env
from igb_env import make_env
from mtl_backends.registry import ConfigError
from tests.agents._configs import TINY_ENV, tiny_agent


def test_the_adapter_keeps_sb3_conventions() -> None:
    """Same-step autoreset: done sub-envs return the next episode's observation, the terminal one
    in ``info["terminal_observation"]``; rewards float32; per-sub-env info dicts."""
    venv = BatchedVecEnv(TINY_ENV, 2, adam="foreach")
    venv.seed(11)
    obs = venv.reset()
    assert isinstance(obs, np.ndarray) and venv.observation_space.shape is not None
    assert obs.shape == (2, venv.observation_space.shape[0]) and obs.dtype == np.float32
    assert venv.reset_infos[0]["instance"] != venv.reset_infos[1]["instance"]
    episode = make_env(TINY_ENV).episode_length  # 5 decisions per smoke episode
    for t in range(episode):
        venv.step_async(np.zeros((2, 3), dtype=np.float32))
        stepped, rewards, dones, infos = venv.step_wait()
        assert isinstance(stepped, np.ndarray)
        obs = stepped
        assert rewards.dtype == np.float32 and len(infos) == 2
        assert {"instance", "weights", "gaps", "diverged", "val_losses"} <= set(infos[0])
        if t < episode - 1:
            assert not dones.any() and "terminal_observation" not in infos[0]
    assert dones.all()
    for i in range(2):
        terminal = infos[i]["terminal_observation"]
        assert terminal.shape == obs[i].shape and not np.allclose(terminal, obs[i])
        assert infos[i]["TimeLimit.truncated"] is False
    assert venv.get_attr("task_names") == [("t1", "t2", "t3")] * 2
    states = venv.env_method("get_instance_state")
    assert len(states) == 2 and states[0]["sampler"]["order"] == "random"
    venv.env_method("set_instance_state", states[1], indices=[1])
    with pytest.raises(AttributeError, match="share"):
        venv.set_attr("n_tasks", 4)
    venv.close()


def test_seeded_sub_envs_draw_the_instances_of_separate_seeded_envs() -> None:
    config = AgentConfig(env=TINY_ENV, n_envs=3, vec_env="batched", seed=4)
    dummy = AgentConfig(env=TINY_ENV, n_envs=3, vec_env="dummy", seed=4)
    batched, separate = make_vec_env(config), make_vec_env(dummy)
    batched.reset()
    separate.reset()
    got = [info["instance"] for info in batched.unwrapped.reset_infos]
    want = [info["instance"] for info in separate.unwrapped.reset_infos]
    assert got == want


def test_ppo_learns_checkpoints_and_resumes_on_the_batched_env(tmp_path: Path) -> None:
    config = tiny_agent(
        "ppo",
        vec_env="batched",
        n_envs=4,
        total_timesteps=80,
        checkpoint_every=40,
        reference_instances=0,
        hyperparameters={"n_steps": 10, "batch_size": 20, "n_epochs": 2},
    )
    run = train_agent(config, tmp_path / "run", progress_bar=False)
    summary = json.loads((run / "training.json").read_text())
    assert summary["timesteps"] == 80 and summary["episodes"] >= 4
    resume_agent(run, progress_bar=False, total_timesteps=120)
    again = json.loads((run / "training.json").read_text())
    assert again["timesteps"] == 120 and again["resumed_from"] == 80


def test_the_batched_env_trains_under_a_balancer_with_per_task_gradients() -> None:
    """A balancer that needs the Jacobian (``db_mtl``) runs in the batched env: its sub-envs'
    weights and rewards are those of separate envs (each slot has its own DB-MTL state)."""
    env = {**TINY_ENV, "balancer": "db_mtl"}
    batched = make_vec_env(AgentConfig(env=env, n_envs=2, vec_env="batched", seed=4))
    separate = make_vec_env(AgentConfig(env=env, n_envs=2, vec_env="dummy", seed=4))
    batched.reset()
    separate.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 2, 3)).astype(np.float32)
    for a in actions:
        _, r_b, _, info_b = batched.step(a)
        _, r_s, _, info_s = separate.step(a)
        np.testing.assert_allclose(r_b, r_s, rtol=1e-4, atol=2e-6)
        for ib, is_ in zip(info_b, info_s, strict=True):
            np.testing.assert_allclose(ib["weights"], is_["weights"], rtol=1e-5)


def test_training_settings_the_batched_env_cannot_train_are_named() -> None:
    env = {**TINY_ENV, "train": {"optimizer": "sgd"}}
    config = AgentConfig(env=env, n_envs=2, vec_env="batched")
    with pytest.raises(ConfigError, match=r"optimizer 'adam' only.*vec_env: subproc"):
        make_vec_env(config)
