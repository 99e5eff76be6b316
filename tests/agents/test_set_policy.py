"""The set policy (``agents.set_policy``): padded layout, masked Gaussian, equivariance, learning.

The learning test is SB3-style: a tiny env whose best action is known proves that PPO with the set
policy learns a per-task rule that transfers to task counts it never saw.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.padded_vec_env import PaddedVecEnv
from agents.set_policy import MaskedDiagGaussianDistribution, PaddedLayout, SetActorCriticPolicy
from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.policy.network import SetPolicyNetwork

V2 = FeatureSpec(table="v2")


def _layout(max_tasks: int = 4, mode: str = "interp") -> PaddedLayout:
    return PaddedLayout.build(V2, mode, max_tasks)


def _model(layout: PaddedLayout, seed: int = 0) -> SetActorCriticPolicy:
    torch.manual_seed(seed)
    return SetActorCriticPolicy(
        layout.observation_space(V2),
        layout.action_space(),
        lambda _: 3e-4,
        layout=asdict(layout),
        hidden=16,
        log_std_init=-0.5,
    )


def _obs(layout: PaddedLayout, n_tasks: int, n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f, g = layout.task_features, layout.global_features
    return rng.uniform(-2.0, 2.0, size=(n, n_tasks * f + g)).astype(np.float32)


# -- layout -------------------------------------------------------------------------------------
def test_layout_sizes_follow_the_table_and_the_map() -> None:
    table = FeatureTable(V2)
    layout = _layout(5)
    f, g = len(table.per_task), len(table.global_)
    assert (layout.task_features, layout.global_features, layout.global_actions) == (f, g, 2)
    assert layout.obs_dim == 5 * f + g + 5 and layout.action_dim == 5 + 2
    assert _layout(5, "residual").global_actions == 0
    # Scales bring every bound into [-1, 1] (a log feature bounded by 10 gets 0.1).
    low, high = table.bounds(1)
    bounds = np.maximum(np.abs(low[:f]), np.abs(high[:f]))
    assert np.allclose(np.asarray(layout.task_scale) * np.maximum(bounds, 1.0), 1.0)
    space = layout.observation_space(V2)
    assert space.shape == (layout.obs_dim,)
    assert np.all(space.low[-5:] == 0.0) and np.all(space.high[-5:] == 1.0)


def test_pad_places_tasks_globals_and_mask_and_unpad_inverts_the_action() -> None:
    layout = _layout(4)
    f, g = layout.task_features, layout.global_features
    obs = _obs(layout, 2, n=1)
    padded = layout.pad(obs, 2)[0]
    assert np.array_equal(padded[: 2 * f], obs[0, : 2 * f])
    assert np.all(padded[2 * f : 4 * f] == 0.0)
    assert np.array_equal(padded[4 * f : 4 * f + g], obs[0, 2 * f :])
    assert padded[4 * f + g :].tolist() == [1.0, 1.0, 0.0, 0.0]
    tasks, globals_, mask = layout.split(torch.from_numpy(padded)[None])
    assert torch.equal(tasks[0, :2].reshape(-1), torch.from_numpy(obs[0, : 2 * f]))
    assert torch.equal(globals_[0], torch.from_numpy(obs[0, 2 * f :]))
    assert mask.tolist() == [[True, True, False, False]]
    action = np.arange(6, dtype=np.float32)[None]  # [a1 a2 a3 a4 p q]
    assert layout.unpad_action(action, 2).tolist() == [[0.0, 1.0, 4.0, 5.0]]
    assert layout.action_mask(torch.from_numpy(padded)[None]).tolist() == [
        [True, True, False, False, True, True]
    ]


def test_pad_refuses_runs_that_do_not_fit() -> None:
    layout = _layout(3)
    with pytest.raises(ValueError, match="T=4 do not fit a layout of max_tasks 3"):
        layout.pad(_obs(layout, 4), 4)
    with pytest.raises(ValueError, match="observations of T=2 tasks have"):
        layout.pad(_obs(layout, 3), 2)


# -- the masked Gaussian --------------------------------------------------------------------------
def test_masked_log_prob_and_entropy_count_the_real_entries_only() -> None:
    mean = torch.tensor([[0.1, -0.2, 0.3]])
    log_std = torch.tensor([-0.5, -0.5, 0.2])
    dist = MaskedDiagGaussianDistribution(3).proba_distribution(mean, log_std)
    dist.with_mask(torch.tensor([[True, False, True]]))
    action = torch.tensor([[0.0, 5.0, 1.0]])

    def log_density(x: float, mu: float, s: float) -> float:
        return -((x - mu) ** 2) / (2 * math.exp(2 * s)) - s - 0.5 * math.log(2 * math.pi)

    expected = log_density(0.0, 0.1, -0.5) + log_density(1.0, 0.3, 0.2)
    assert dist.log_prob(action).item() == pytest.approx(expected, rel=1e-6)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) - 0.5) + (0.5 + 0.5 * math.log(2 * math.pi) + 0.2)
    assert dist.entropy().item() == pytest.approx(entropy, rel=1e-6)
    # The masked entry's action does not matter.
    assert dist.log_prob(torch.tensor([[0.0, -9.0, 1.0]])).item() == pytest.approx(expected)


# -- the policy -----------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(n_tasks=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_permuting_tasks_permutes_the_action_and_keeps_value_and_log_prob(
    n_tasks: int, seed: int
) -> None:
    layout = _layout(6)
    policy = _model(layout)
    f = layout.task_features
    obs = _obs(layout, n_tasks, n=1, seed=seed)
    perm = np.random.default_rng(seed).permutation(n_tasks)
    tasks = obs[:, : n_tasks * f].reshape(1, n_tasks, f)[:, perm].reshape(1, -1)
    permuted = np.concatenate([tasks, obs[:, n_tasks * f :]], axis=1)
    a, b = (torch.from_numpy(layout.pad(o, n_tasks)) for o in (obs, permuted))
    with torch.no_grad():
        mean_a, mean_b = (policy.get_distribution(x).mode() for x in (a, b))
        action = mean_a.clone()
        action_b = mean_b.clone()
        action_b[:, :n_tasks] = action[:, :n_tasks][:, perm]
        value_a, logp_a, ent_a = policy.evaluate_actions(a, action)
        value_b, logp_b, ent_b = policy.evaluate_actions(b, action_b)
    assert torch.allclose(mean_b[:, :n_tasks], mean_a[:, :n_tasks][:, perm], atol=1e-6)
    assert torch.allclose(mean_b[:, 6:], mean_a[:, 6:], atol=1e-6)
    assert torch.allclose(value_a, value_b, atol=1e-6)
    assert torch.allclose(logp_a, logp_b, atol=1e-5)
    assert ent_a is not None and ent_b is not None
    assert torch.allclose(ent_a, ent_b, atol=1e-6)


def test_padding_entries_never_change_value_mean_or_log_prob() -> None:
    layout = _layout(5)
    policy = _model(layout)
    x = torch.from_numpy(layout.pad(_obs(layout, 2), 2))
    garbage = x.clone()
    f = layout.task_features
    garbage[:, 2 * f : 5 * f] = 7.0  # padding rows, still masked out
    with torch.no_grad():
        mean = policy.get_distribution(x).mode()
        action = torch.randn(mean.shape)
        other = action.clone()
        other[:, 2:5] = 3.0
        v1, lp1, _ = policy.evaluate_actions(x, action)
        v2, lp2, _ = policy.evaluate_actions(garbage, other)
        mean2 = policy.get_distribution(garbage).mode()
    assert torch.equal(mean[:, :2], mean2[:, :2]) and torch.equal(mean[:, 5:], mean2[:, 5:])
    assert torch.allclose(v1, v2, atol=1e-7) and torch.allclose(lp1, lp2, atol=1e-6)


def test_initial_mean_action_is_near_zero_the_named_heuristic() -> None:
    layout = _layout(4)
    policy = _model(layout)
    with torch.no_grad():
        mean = policy.get_distribution(torch.from_numpy(layout.pad(_obs(layout, 3), 3)))
    assert mean.mode().abs().max() < 0.05
    # One log-std shared by the task entries, one per global entry.
    assert policy.log_std.shape == (3,)


def test_actor_is_the_exported_network_and_runs_unpadded_at_any_t() -> None:
    layout = _layout(4)
    policy = _model(layout)
    actor = policy.actor
    assert isinstance(actor, SetPolicyNetwork)
    for n_tasks in (2, 3, 5, 11, 20):
        obs = _obs(layout, n_tasks)
        with torch.no_grad():
            out = actor(torch.from_numpy(obs))
        assert out.shape == (3, n_tasks + 2)
        if n_tasks <= 4:
            with torch.no_grad():
                mean = policy.get_distribution(torch.from_numpy(layout.pad(obs, n_tasks)))
            expected = layout.unpad_action(mean.mode().clamp(-1, 1).numpy(), n_tasks)
            assert np.allclose(out.numpy(), expected, atol=1e-6)


def test_constructor_refuses_bad_settings() -> None:
    layout = _layout(3)
    args = (layout.observation_space(V2), layout.action_space(), lambda _: 3e-4)
    with pytest.raises(ValueError, match="needs the padded layout"):
        SetActorCriticPolicy(*args)
    with pytest.raises(ValueError, match="does not take net_arch"):
        SetActorCriticPolicy(*args, layout=asdict(layout), net_arch=[8])
    with pytest.raises(ValueError, match="action space must be a Box of shape"):
        SetActorCriticPolicy(
            layout.observation_space(V2),
            spaces.Box(-1, 1, (2,)),
            lambda _: 3e-4,
            layout=asdict(layout),
        )


# -- the padded vec env and a task that proves learning --------------------------------------------
class EchoEnv(gym.Env[np.ndarray, np.ndarray]):
    """T tasks, one feature each; the reward is ``-mean_t (a_t - x_t)^2``: echo each feature.

    The global feature is T / 10; the action has the layout's two global entries, which the
    reward ignores. One step per episode.
    """

    def __init__(self, n_tasks: int) -> None:
        self.n_tasks = n_tasks
        self.observation_space = spaces.Box(-1.0, 1.0, (n_tasks + 1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (n_tasks + 2,), dtype=np.float32)
        self._x = np.zeros(n_tasks, dtype=np.float32)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._x, [self.n_tasks / 10]]).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._x = self.np_random.uniform(-0.8, 0.8, self.n_tasks).astype(np.float32)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = -float(np.mean((np.asarray(action[: self.n_tasks]) - self._x) ** 2))
        return self._obs(), reward, True, False, {"weights": np.ones(self.n_tasks)}


ECHO = PaddedLayout(4, 1, 1, 2, (1.0,), (1.0,))


def _echo_env(n_tasks: int) -> EchoEnv:
    return EchoEnv(n_tasks)


def _echo_venv(sizes: tuple[int, ...] = (1, 2, 4)) -> PaddedVecEnv:
    groups = [DummyVecEnv([functools.partial(_echo_env, t)] * 2) for t in sizes]
    space = spaces.Box(-1.0, 1.0, (ECHO.obs_dim,), dtype=np.float32)
    return PaddedVecEnv(groups, list(sizes), ECHO, space)


def test_padded_vec_env_pads_dispatches_and_reports_t() -> None:
    venv = _echo_venv()
    assert venv.num_envs == 6 and venv.observation_space.shape == (4 + 1 + 4,)
    venv.seed(3)
    obs = venv.reset()
    assert obs.shape == (6, 9)
    masks = obs[:, 5:]
    assert masks.sum(axis=1).tolist() == [1, 1, 2, 2, 4, 4]
    assert [info["n_tasks"] for info in venv.reset_infos] == [1, 1, 2, 2, 4, 4]
    actions = np.zeros((6, 6), dtype=np.float32)
    actions[:, :4] = obs[:, :4]  # echo: the best action
    _, rewards, dones, infos = venv.step(actions)
    assert np.allclose(rewards, 0.0, atol=1e-12) and dones.all()
    assert all(info["terminal_observation"].shape == (9,) for info in infos)
    assert venv.get_attr("n_tasks") == [1, 1, 2, 2, 4, 4]
    assert venv.get_attr("n_tasks", indices=[3, 4]) == [2, 4]
    # Same seed, same first observations.
    venv.seed(3)
    assert np.array_equal(venv.reset(), obs)
    venv.close()


def test_set_policy_learns_a_per_task_rule_across_task_counts() -> None:
    venv = _echo_venv()
    model = PPO(
        SetActorCriticPolicy,
        venv,
        policy_kwargs={"layout": asdict(ECHO), "hidden": 32, "log_std_init": -1.0},
        n_steps=32,
        batch_size=64,
        n_epochs=8,
        learning_rate=3e-3,
        seed=0,
        device="cpu",
    )

    policy = model.policy
    assert isinstance(policy, SetActorCriticPolicy)
    actor = policy.actor

    def error(n_tasks: int) -> float:
        env = EchoEnv(n_tasks)
        errs = []
        for seed in range(40):
            obs, _ = env.reset(seed=10_000 + seed)
            with torch.no_grad():
                action = actor(torch.from_numpy(obs)[None])[0].numpy()
            errs.append(float(np.mean((action[:n_tasks] - env._x) ** 2)))
        return float(np.mean(errs))

    before = {t: error(t) for t in (1, 2, 3, 4, 7)}
    model.learn(6000)
    after = {t: error(t) for t in (1, 2, 3, 4, 7)}
    # Echoing uniform(-0.8, 0.8) features: the zero action errs by 0.21 on average.
    for t in (1, 2, 4):
        assert after[t] < 0.25 * before[t], (t, before, after)
    # T = 3 and T = 7 were never trained on: the shared per-task rule transfers.
    assert after[3] < 0.35 * before[3] and after[7] < 0.5 * before[7], (before, after)
