"""Vectorised envs of agent training: sub-envs seeded by ``SeedSequence``.

``make_vec_env`` gives ``n_envs`` sub-envs, seeded from ``numpy.random.SeedSequence(seed).spawn(
n_envs)`` (SB3's own ``seed + i`` would make neighbouring runs share sub-env seeds, SB3 issue
#2268), under ``VecMonitor``:

* ``dummy``: copies of ``IGBEnv`` in this process (``DummyVecEnv``);
* ``subproc``: one copy per worker process (``SubprocVecEnv``, one torch thread each);
* ``batched``: one ``igb_env.vector.BatchedIGBEnv`` training all sub-envs' MTL runs together in
  this process, behind ``BatchedVecEnv``, SB3's ``VecEnv`` interface (same-step autoreset, the
  terminal observation in ``info["terminal_observation"]``).
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Mapping
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
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from agents.config import AgentConfig
from igb_env import make_env
from igb_env.vector import BatchedIGBEnv


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


class BatchedVecEnv(VecEnv):
    """SB3's ``VecEnv`` over a ``BatchedIGBEnv`` (all sub-envs trained in one stacked trainer).

    Sub-env ``i`` is seeded, walks its instances and reports its infos as the ``i``-th ``IGBEnv``
    of a ``DummyVecEnv`` with the same seeds would (its MTL run equals that env's to float
    rounding). ``env_method`` offers the sub-envs' ``get_instance_state`` and
    ``set_instance_state``; ``get_attr`` their shared attributes (``task_names``, ``n_tasks``,
    ``config``, ...).

    Args:
        env_config: The env configuration (``igb_env.config.EnvConfig`` fields).
        n_envs: Number of sub-envs.
        adam: The stacked trainer's Adam implementation.
    """

    def __init__(self, env_config: Mapping[str, Any], n_envs: int, adam: str = "fused") -> None:
        self.env = BatchedIGBEnv(
            n_envs,
            dict(env_config),
            autoreset_mode="same_step",
            adam=adam,  # type: ignore[arg-type]
        )
        self.render_mode = None
        super().__init__(n_envs, self.env.single_observation_space, self.env.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        """Start every sub-env (with the seeds of ``seed()`` when set since the last reset)."""
        seeds = None if all(s is None for s in self._seeds) else [int(s or 0) for s in self._seeds]
        obs, infos = self.env.reset(seed=seeds)
        self.reset_infos = self._split(infos)
        self._reset_seeds()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions of the next ``step_wait``."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every sub-env; a finished episode restarts in the same step (SB3's convention)."""
        assert self._actions is not None, "step_async() first"
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        split = self._split(infos)
        for i in np.flatnonzero(dones):
            split[i]["terminal_observation"] = infos["final_obs"][i]
            split[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, split

    def _split(self, infos: Mapping[str, Any]) -> list[dict[str, Any]]:
        keys = [k for k in infos if not k.startswith("_") and k not in ("final_obs", "final_info")]
        return [{k: infos[k][i] for k in keys} for i in range(self.num_envs)]

    def close(self) -> None:
        """Release the stacked trainer."""
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute the sub-envs share (one value per index)."""
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Not supported: the sub-envs share one configuration."""
        raise AttributeError(f"cannot set {attr_name!r}: the batched sub-envs share their settings")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """Call a per-sub-env method (``get_instance_state``, ``set_instance_state``)."""
        method = getattr(self.env, method_name)
        return [method(i, *method_args, **kwargs) for i in self._get_indices(indices)]

    def env_is_wrapped(
        self,
        wrapper_class: type[gym.Wrapper],
        indices: VecEnvIndices = None,
    ) -> list[bool]:
        """No sub-env is wrapped."""
        return [False for _ in self._get_indices(indices)]


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
    venv: VecEnv
    if config.vec_env == "batched":
        venv = BatchedVecEnv(dict(config.env), config.n_envs)
    else:
        fns = [functools.partial(make_worker_env, dict(config.env)) for _ in range(config.n_envs)]
        if config.vec_env == "subproc":
            preload_workers()
        venv = SubprocVecEnv(fns) if config.vec_env == "subproc" else DummyVecEnv(fns)  # type: ignore[arg-type]
    venv = SeedSequenceVecEnv(venv)
    venv.seed(config.seed)
    return VecMonitor(venv)


__all__ = [
    "BatchedVecEnv",
    "SeedSequenceVecEnv",
    "make_vec_env",
    "make_worker_env",
    "preload_workers",
    "spawn_seeds",
]
