"""An env episode replayed through PolicyWeighting in a plain MTLTrainer: same weights, bitwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from igb_env import load_env_config, make_env, rollout_baseline
from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.policy import PolicyNetwork, load_policy, save_policy
from mtl_backends.trainer import MTLTrainer, StepResult
from mtl_backends.weightings import IGBv1, PolicyWeighting

from .test_env import SMALL


@pytest.fixture
def record_steps(monkeypatch):
    """Records every trainer step's weights, per trainer."""
    log: dict[int, list[list[float]]] = {}
    original = MTLTrainer.apply

    def apply(self, weights=None) -> StepResult:
        result = original(self, weights)
        log.setdefault(id(self), []).append(result.weights.tolist())
        return result

    monkeypatch.setattr(MTLTrainer, "apply", apply)
    return log


def export_random(env, path: Path, mode: str) -> Path:
    torch.manual_seed(1)
    net = PolicyNetwork([len(env.observation_names), 32, 32, env.n_tasks], "tanh", "tanh")
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    return save_policy(path, net, env.policy_sidecar("random-init"))


@pytest.mark.parametrize("mode", ["residual", "absolute"])
def test_env_episode_replayed_through_policy_weighting(tmp_path, record_steps, mode):
    cfg = {**SMALL, "action_mode": mode}
    env = make_env(cfg)
    path = export_random(env, tmp_path / "policy", mode)
    policy = load_policy(path)

    obs, _ = env.reset(options={"instance": 77})
    assert env.episode is not None
    env_trainer = env.episode.trainer
    terminated = False
    actions = []
    while not terminated:
        action = policy.act(obs).numpy()
        actions.append(action)
        obs, _, terminated, _, _ = env.step(action)
    assert np.ptp(np.stack(actions), axis=0).max() > 0.1  # the actions really vary

    config = load_env_config(cfg)
    plain = MTLTrainer(
        make_benchmark("synthetic", **dict(config.benchmark.kwargs)),
        PolicyWeighting.load(path),
        make_balancer("sum"),
        config.train,
        seed=77,
    )
    plain.fit()
    env_weights, plain_weights = record_steps[id(env_trainer)], record_steps[id(plain)]
    assert len(env_weights) == len(plain_weights) == config.train.steps
    assert env_weights == plain_weights
    for a, b in zip(env_trainer.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)

    # The same policy as a baseline weighting gives the env episode's rewards.
    replay = rollout_baseline(cfg, {"name": "policy", "path": str(path)}, 77)
    env2 = make_env(cfg)
    obs, _ = env2.reset(options={"instance": 77})
    rewards, terminated = [], False
    while not terminated:
        obs, reward, terminated, _, _ = env2.step(policy.act(obs).numpy())
        rewards.append(reward)
    assert replay.rewards == rewards


def test_residual_zero_action_equals_igbv1_trainer(record_steps):
    env = make_env(SMALL)
    env.reset(options={"instance": 5})
    assert env.episode is not None
    env_trainer = env.episode.trainer
    terminated = False
    while not terminated:
        _, _, terminated, _, _ = env.step(np.zeros(3, np.float32))
    config = load_env_config(SMALL)
    ref = MTLTrainer(
        make_benchmark("synthetic", **dict(config.benchmark.kwargs)),
        IGBv1(),
        make_balancer("sum"),
        config.train,
        seed=5,
    )
    ref.fit()
    assert record_steps[id(env_trainer)] == record_steps[id(ref)]
    for a, b in zip(env_trainer.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_policy_sidecar_matches_env(tmp_path):
    env = make_env(SMALL)
    side = env.policy_sidecar("PPO")
    assert side["n_tasks"] == 3 and side["obs_dim"] == len(env.observation_names)
    assert side["steps_per_action"] == 10 and side["features"]["spec"]["stride"] == 10
    assert side["base_window"] == [5, 10] and side["total_steps"] == 60
    assert side["action_map"] == {"mode": "residual", "version": 1, "tau": 1.0}
    assert side["env_config"] == load_env_config(SMALL).to_dict()
    assert side["task_names"] == ["t1", "t2", "t3"]
