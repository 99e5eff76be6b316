"""``WorkerVecEnv``: a whole VecEnv in a worker process equals the same VecEnv in this process."""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from agents.config import AgentConfig
from agents.padded_vec_env import PaddedVecEnv
from agents.vec_env import make_vec_env
from agents.worker_vec_env import WorkerVecEnv
from mtl_backends.registry import ConfigError

SET_AGENT = AgentConfig(
    policy="set",
    n_envs=2,
    vec_env="batched",
    seed=5,
    env={
        "preset": "smoke",
        "action_mode": "interp",
        "feature_table": "v2",
        "variation": "wide",
        "budgets": [30, 60],
    },
    env_groups=({"benchmark": {"n_tasks": 2}}, {"benchmark": {"n_tasks": 3}}),
)


def _trajectory(config: AgentConfig, steps: int = 8) -> list[np.ndarray]:
    venv = make_vec_env(config)
    try:
        out = [np.asarray(venv.reset())]
        rng = np.random.default_rng(0)
        width = int(np.prod(venv.action_space.shape or (1,)))
        for _ in range(steps):
            actions = rng.uniform(-1, 1, (venv.num_envs, width))
            obs, rewards, dones, infos = venv.step(actions.astype(np.float32))
            out += [np.asarray(obs), rewards, dones.astype(np.float64)]
            out += [
                np.asarray(i["terminal_observation"]) for i in infos if "terminal_observation" in i
            ]
        state = venv.env_method("get_instance_state", indices=[3])[0]
        out.append(np.asarray(state["sampler"]["cursor"]))
        out.append(np.asarray(state["np_random"]["state"]["state"]))
        return out
    finally:
        venv.close()


def test_groups_in_worker_processes_equal_groups_in_this_process() -> None:
    local = _trajectory(SET_AGENT)
    remote_config = dataclasses.replace(SET_AGENT, group_processes=True)
    venv = make_vec_env(remote_config)
    inner = venv.unwrapped
    assert isinstance(inner, PaddedVecEnv)
    assert all(isinstance(g, WorkerVecEnv) for g in inner.groups)
    assert inner.get_attr("n_tasks") == [2, 2, 3, 3]
    venv.close()
    remote = _trajectory(remote_config)
    assert len(local) == len(remote)
    for a, b in zip(local, remote, strict=True):
        assert np.array_equal(a, b)


def test_group_processes_need_a_batched_set_policy() -> None:
    with pytest.raises(ConfigError, match="group_processes applies to policy: set"):
        AgentConfig(group_processes=True)
    with pytest.raises(ConfigError, match="group_processes applies"):
        dataclasses.replace(SET_AGENT, vec_env="dummy", group_processes=True)


class _MarkerEnv(gym.Env[np.ndarray, np.ndarray]):
    """An env whose step writes a file: proof that the step ran."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.marker.write_text("stepped")
        return np.zeros(1, np.float32), 1.0, False, False, {}


def _marker_venv(marker: str) -> VecEnv:
    # DummyVecEnv, like the batched env, does its work in step_wait, not in step_async.
    return DummyVecEnv([partial(_MarkerEnv, marker)])


def test_workers_start_their_step_when_the_actions_arrive(tmp_path: Path) -> None:
    # PaddedVecEnv sends every group its actions, then collects the results one by one: the groups
    # run in parallel only if each worker steps at step_async. Before this was so, the workers
    # of a 5-group agent ran one at a time (one core busy of two).
    markers = [tmp_path / f"group{i}" for i in range(2)]
    venvs = [WorkerVecEnv(partial(_marker_venv, str(m))) for m in markers]
    try:
        for venv in venvs:
            venv.reset()
        for venv in venvs:
            venv.step_async(np.zeros((1, 1), np.float32))
        deadline = time.monotonic() + 60.0
        while not all(m.exists() for m in markers):  # no step_wait was called yet
            assert time.monotonic() < deadline, "a worker waited for step_wait to step"
            time.sleep(0.01)
        for venv in venvs:
            obs, rewards, dones, _ = venv.step_wait()
            assert np.asarray(obs).shape == (1, 1)
            assert rewards.tolist() == [1.0] and not dones.any()
    finally:
        for venv in venvs:
            venv.close()
