"""``agents.vec_env``: sub-env seeds are ``SeedSequence`` children, never SB3's ``seed + i``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from agents.vec_env import SeedSequenceVecEnv, make_vec_env, make_worker_env, spawn_seeds
from igb_env import IGBEnv
from tests.agents._configs import TINY_ENV, tiny_agent


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
