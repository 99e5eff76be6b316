"""Vectorised envs of agent training: sub-envs seeded by ``SeedSequence``, one thread each.

``make_vec_env`` gives ``n_envs`` copies of the env in a ``DummyVecEnv`` or ``SubprocVecEnv``,
seeded from ``numpy.random.SeedSequence(seed).spawn(n_envs)`` (SB3's own ``seed + i`` would make
neighbouring runs share sub-env seeds, SB3 issue #2268), under ``VecMonitor``.
"""

from __future__ import annotations

import functools
import multiprocessing
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecMonitor,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from agents.config import AgentConfig
from igb_env import make_env


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds from ``numpy.random.SeedSequence(seed).spawn(n)``."""
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(n)]


class SeedSequenceVecEnv(VecEnvWrapper):
    """Seeds sub-env ``i`` with the ``i``-th ``SeedSequence`` child instead of SB3's ``seed + i``.

    SB3 calls ``env.seed(seed)`` when a model is built with ``seed=...``; this wrapper intercepts
    that call. With ``seed + i``, runs with seeds 0 and 1 would share a sub-env seed
    (SB3 issue #2268).
    """

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Set the seeds the sub-envs get at their next reset."""
        if seed is None:
            return list(self.venv.seed(None))
        seeds: list[int | None] = list(spawn_seeds(seed, self.num_envs))
        # SB3's VecEnv applies `_seeds` at the next reset(), then clears it (base_vec_env.py).
        self.venv._seeds = seeds
        return seeds

    def reset(self) -> Any:
        """Reset every sub-env."""
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        """Wait for the step started by ``step_async``."""
        return self.venv.step_wait()


def make_worker_env(env_config: dict[str, Any]) -> gym.Env[np.ndarray, np.ndarray]:
    """The env of one worker (a module-level, picklable factory), with one torch thread.

    One thread per worker lets ``n_envs`` workers share the cores instead of oversubscribing them
    (SB3 issue #90).
    """
    torch.set_num_threads(1)
    return make_env(env_config)


def preload_workers() -> None:
    """Have the forkserver import torch, SB3 and the env once, so each worker starts in a blink.

    ``SubprocVecEnv`` and the process pools here start their workers through the one forkserver
    of this process; without a preload every worker re-imports torch (seconds each). No effect once
    the forkserver runs.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "stable_baselines3", "igb_env", "agents.vec_env"])


def make_vec_env(config: AgentConfig) -> VecEnv:
    """``config.n_envs`` envs, vectorised, seeded by ``SeedSequence``, under ``VecMonitor``.

    The sub-env seeds are applied when SB3 seeds the model (``seed=config.seed``) or when
    ``venv.seed(seed)`` is called.
    """
    fns = [functools.partial(make_worker_env, dict(config.env)) for _ in range(config.n_envs)]
    if config.vec_env == "subproc":
        preload_workers()
    venv: VecEnv = SubprocVecEnv(fns) if config.vec_env == "subproc" else DummyVecEnv(fns)  # type: ignore[arg-type]
    venv = SeedSequenceVecEnv(venv)
    venv.seed(config.seed)
    return VecMonitor(venv)


__all__ = [
    "SeedSequenceVecEnv",
    "make_vec_env",
    "make_worker_env",
    "preload_workers",
    "spawn_seeds",
]
