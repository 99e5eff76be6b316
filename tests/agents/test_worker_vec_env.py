"""``WorkerVecEnv``: a whole VecEnv in a worker process equals the same VecEnv in this process."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

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
