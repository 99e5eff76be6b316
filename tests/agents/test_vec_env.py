"""``agents.vec_env``: sub-env seeds are ``SeedSequence`` children, never SB3's ``seed + i``."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from agents.config import group_env_configs
from agents.padded_vec_env import PaddedVecEnv
from agents.vec_env import (
    BatchedVecEnv,
    SeedSequenceVecEnv,
    make_vec_env,
    make_worker_env,
    padded_layout,
    spawn_seeds,
)
from igb_env import IGBEnv, make_env
from mtl_backends.registry import ConfigError
from tests.agents._configs import TINY_ENV, tiny_agent, tiny_set_agent


class SeedRecorder(gym.Env[np.ndarray, np.ndarray]):
    """Records the seed of every reset; observes one draw of its ``np_random``."""

    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(self) -> None:
        self.seeds: list[int | None] = []

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.seeds.append(seed)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return self._obs(), float(action[0]), False, False, {}

    def _obs(self) -> np.ndarray:
        return np.array([self.np_random.random()], dtype=np.float32)


def _venv(n: int) -> SeedSequenceVecEnv:
    return SeedSequenceVecEnv(DummyVecEnv([SeedRecorder for _ in range(n)]))


def test_spawn_seeds_are_the_seed_sequence_children() -> None:
    children = np.random.SeedSequence(42).spawn(4)
    assert spawn_seeds(42, 4) == [int(c.generate_state(1)[0]) for c in children]
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in spawn_seeds(42, 4))
    assert spawn_seeds(42, 0) == []


def test_neighbouring_run_seeds_share_no_sub_env_seed() -> None:
    runs = [spawn_seeds(seed, 8) for seed in range(5)]
    flat = [s for run in runs for s in run]
    assert len(set(flat)) == len(flat)  # SB3's seed + i would share 7 of 8 between neighbours


@settings(deadline=None, max_examples=40)
@given(st.integers(min_value=0, max_value=2**63), st.integers(1, 16), st.integers(0, 16))
def test_spawn_seeds_are_distinct_and_prefix_stable(seed: int, n: int, k: int) -> None:
    seeds = spawn_seeds(seed, n)
    assert len(seeds) == n and len(set(seeds)) == n
    assert spawn_seeds(seed, min(k, n)) == seeds[: min(k, n)]  # more envs keep the first seeds


def test_wrapper_seeds_each_sub_env_at_the_next_reset() -> None:
    venv = _venv(3)
    assert venv.seed(7) == spawn_seeds(7, 3)
    obs = venv.reset()
    assert venv.get_attr("seeds") == [[s] for s in spawn_seeds(7, 3)]
    # Sub-env i draws from the generator of its own child seed.
    expected = [np.random.default_rng(s).random() for s in spawn_seeds(7, 3)]
    np.testing.assert_allclose(obs[:, 0], np.asarray(expected, dtype=np.float32))
    venv.reset()  # seeds apply once
    assert [seeds[-1] for seeds in venv.get_attr("seeds")] == [None, None, None]
    venv.close()


def test_wrapper_without_a_seed_leaves_seeding_to_sb3() -> None:
    venv = _venv(2)
    seeds = venv.seed(None)
    assert len(seeds) == 2
    venv.close()


def test_wrapper_steps_the_sub_envs() -> None:
    venv = _venv(2)
    venv.seed(0)
    venv.reset()
    obs, rewards, dones, infos = venv.step(np.array([[0.5], [-0.25]], dtype=np.float32))
    assert isinstance(obs, np.ndarray) and obs.shape == (2, 1)
    assert rewards.tolist() == [0.5, -0.25]
    assert dones.tolist() == [False, False] and len(infos) == 2
    venv.close()


def test_make_vec_env_is_seeded_by_the_agent_seed() -> None:
    venv = make_vec_env(tiny_agent(n_envs=3, seed=5))
    try:
        assert isinstance(venv, VecMonitor)
        assert isinstance(venv.venv, SeedSequenceVecEnv)
        assert isinstance(venv.venv.venv, DummyVecEnv)
        venv.reset()
        assert venv.get_attr("np_random_seed") == spawn_seeds(5, 3)
    finally:
        venv.close()


def test_make_worker_env_uses_one_torch_thread() -> None:
    torch.set_num_threads(2)
    env = make_worker_env(dict(TINY_ENV))
    try:
        assert torch.get_num_threads() == 1
        assert isinstance(env.unwrapped, IGBEnv)
    finally:
        env.close()


# -- env groups of different T in one padded VecEnv (policy: set) ----------------------------------
# Two groups of two sub-envs: T = 2 (sub-envs 0, 1) and T = 3 (sub-envs 2, 3); feature table v2
# (F = 9 per-task, G = 3 global features), the interp map (T + 2 action entries), max_tasks 3.
F, G = 9, 3
GROUP_T = [2, 2, 3, 3]


def _padded(kind: str, seed: int = 3) -> tuple[VecEnv, PaddedVecEnv]:
    venv = make_vec_env(tiny_set_agent(vec_env=kind, seed=seed))
    inner = venv.unwrapped
    assert isinstance(inner, PaddedVecEnv)
    return venv, inner


def _group_singles(seed: int) -> tuple[list[IGBEnv], list[np.ndarray], list[dict[str, Any]]]:
    """The IGBEnv of each sub-env: its group's config, reset with its SeedSequence child."""
    configs = group_env_configs(tiny_set_agent())
    envs = [make_env(configs[0 if t == 2 else 1]) for t in GROUP_T]
    resets = [env.reset(seed=s) for env, s in zip(envs, spawn_seeds(seed, 4), strict=True)]
    return envs, [o for o, _ in resets], [i for _, i in resets]


@pytest.mark.parametrize("kind", ["dummy", "batched"])
def test_padded_groups_equal_each_group_s_own_envs_padded(kind: str) -> None:
    venv, inner = _padded(kind)
    try:
        group_type = DummyVecEnv if kind == "dummy" else BatchedVecEnv
        assert [type(g) for g in inner.groups] == [group_type, group_type]
        layout = inner.layout
        assert (layout.max_tasks, layout.task_features, layout.global_features) == (3, F, G)
        assert inner.n_tasks == [2, 3] and venv.num_envs == 4
        assert venv.observation_space.shape == (3 * F + G + 3,)
        assert venv.action_space.shape == (3 + 2,)
        # Exact for copies of IGBEnv; to float rounding for the stacked trainer (fused Adam:
        # ~1e-5 relative on the log-noise features, ~6e-6 absolute on the log-gap changes,
        # which are 10 x differences of log gaps, ~3e-6 absolute on rewards).
        atol, reward_atol = (0.0, 0.0) if kind == "dummy" else (2e-5, 1e-5)
        singles, single_obs, single_infos = _group_singles(3)
        obs = np.asarray(venv.reset())
        for i, (t, o) in enumerate(zip(GROUP_T, single_obs, strict=True)):
            np.testing.assert_allclose(obs[i], layout.pad(o[None], t)[0], rtol=1e-5, atol=atol)
            assert inner.reset_infos[i]["n_tasks"] == t
            assert inner.reset_infos[i]["instance"] == single_infos[i]["instance"]
        # Per-task features of the real tasks, zeros for the padding, then globals and the mask.
        assert obs[:, 3 * F + G :].tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
        assert not obs[:2, 2 * F : 3 * F].any() and obs[2:, 2 * F : 3 * F].any()
        rng = np.random.default_rng(0)
        for step in range(5):  # one smoke episode: 5 decisions
            actions = rng.uniform(-1, 1, (4, 5)).astype(np.float32)
            stepped, rewards, dones, infos = venv.step(actions)
            obs = np.asarray(stepped)
            for i, (t, env) in enumerate(zip(GROUP_T, singles, strict=True)):
                # Group T = 2 gets [a_1, a_2, p, q]: the padded entry a_3 is dropped.
                o, r, term, _, info = env.step(layout.unpad_action(actions[i : i + 1], t)[0])
                assert infos[i]["n_tasks"] == t and bool(dones[i]) == term == (step == 4)
                assert rewards[i] == pytest.approx(r, rel=1e-5, abs=reward_atol)
                np.testing.assert_allclose(infos[i]["weights"], info["weights"], rtol=1e-5)
                assert infos[i]["instance"] == info["instance"]
                if term:
                    terminal = infos[i]["terminal_observation"]
                    assert terminal.shape == (3 * F + G + 3,)
                    np.testing.assert_allclose(
                        terminal, layout.pad(o[None], t)[0], rtol=1e-5, atol=atol
                    )
                    assert infos[i]["episode"]["l"] == 5  # VecMonitor's episode record
                else:
                    np.testing.assert_allclose(
                        obs[i], layout.pad(o[None], t)[0], rtol=1e-5, atol=atol
                    )
        # After the same-step autoreset every sub-env observes a new instance of its group.
        assert obs[:, 3 * F + G :].tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
    finally:
        venv.close()


def test_a_finished_batched_sub_env_reports_its_final_step_info() -> None:
    """On the step that ends an episode, info is that step's (SB3's ``DummyVecEnv`` convention);
    the next episode's first info is not reported until it takes a step."""
    infos = {}
    for kind in ("dummy", "batched"):
        venv, _ = _padded(kind)
        venv.reset()
        for _ in range(5):
            _, _, dones, step_infos = venv.step(np.zeros((4, 5), dtype=np.float32))
        assert dones.all()
        infos[kind] = step_infos
        venv.close()
    for dummy, batched in zip(infos["dummy"], infos["batched"], strict=True):
        assert dummy["train_step"] == 60  # the final step of the 60-step smoke run
        assert batched["instance"] == dummy["instance"]
        assert batched["train_step"] == dummy["train_step"]
        np.testing.assert_allclose(batched["weights"], dummy["weights"], rtol=1e-5)


@pytest.mark.parametrize("kind", ["dummy", "batched"])
def test_get_attr_and_env_method_reach_the_indexed_sub_env(kind: str) -> None:
    source, _ = _padded(kind, seed=3)
    target, _ = _padded(kind, seed=99)
    try:
        source.reset()
        target.reset()
        assert target.get_attr("n_tasks") == GROUP_T
        assert target.get_attr("n_tasks", indices=[3, 0]) == [3, 2]
        names = target.get_attr("task_names", indices=[1, 2])
        assert [tuple(n) for n in names] == [("t1", "t2"), ("t1", "t2", "t3")]
        states = source.env_method("get_instance_state")
        assert len(states) == 4 and len({json.dumps(s, sort_keys=True) for s in states}) == 4
        assert source.env_method("get_instance_state", indices=[2]) == [states[2]]
        # Sub-env i of the target continues where sub-env SWAP[i] of the source stands: its next
        # instance (drawn at the autoreset after the episode) is that sub-env's.
        swap = [1, 0, 2, 2]
        for i, j in enumerate(swap):
            target.env_method("set_instance_state", states[j], indices=[i])
        assert target.env_method("get_instance_state") == [states[j] for j in swap]
        zero = np.zeros((4, 5), dtype=np.float32)
        for _ in range(5):  # one episode; the same-step autoreset starts the next one
            after_source = np.asarray(source.step(zero)[0])
            after_target = np.asarray(target.step(zero)[0])
        atol = 0.0 if kind == "dummy" else 1e-6
        np.testing.assert_allclose(after_target, after_source[swap], rtol=1e-6, atol=atol)
        assert not np.array_equal(after_source[0], after_source[1])
    finally:
        source.close()
        target.close()


def test_same_seed_same_observations_for_padded_groups() -> None:
    observations: dict[tuple[str, int], tuple[np.ndarray, list[int]]] = {}
    for kind, seed in (("dummy", 3), ("dummy", 3), ("batched", 3), ("dummy", 4)):
        venv, inner = _padded(kind, seed)
        obs = np.asarray(venv.reset())
        instances = [info["instance"] for info in inner.reset_infos]
        if (kind, seed) in observations:
            np.testing.assert_array_equal(obs, observations[kind, seed][0])
            assert instances == observations[kind, seed][1]
        observations[kind, seed] = (obs, instances)
        venv.close()
    # Both vectorisations draw the same instances for the same seed; another seed, others.
    assert observations["batched", 3][1] == observations["dummy", 3][1]
    np.testing.assert_allclose(
        observations["batched", 3][0], observations["dummy", 3][0], atol=1e-6
    )
    assert not set(observations["dummy", 4][1]) & set(observations["dummy", 3][1])


def test_groups_must_share_features_and_action_map() -> None:
    configs = group_env_configs(tiny_set_agent())
    with pytest.raises(ConfigError, match="env_groups must share feature_spec"):
        padded_layout([configs[0], {**configs[1], "feature_table": "v1"}], [2, 3])
    with pytest.raises(ConfigError, match="env_groups must share action_mode: interp vs residual"):
        padded_layout([configs[0], {**configs[1], "action_mode": "residual"}], [2, 3])
    layout = padded_layout(configs, [2, 3])
    venv, inner = _padded("dummy")
    try:
        space = venv.observation_space
        assert isinstance(space, gym.spaces.Box)
        with pytest.raises(ValueError, match="one T per group"):
            PaddedVecEnv(inner.groups, [2], layout, space)
        with pytest.raises(ValueError, match="a group of T=3 must observe 30 features"):
            PaddedVecEnv(inner.groups, [3, 3], layout, space)
    finally:
        venv.close()
